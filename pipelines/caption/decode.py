"""Decode one image file into the model's input square plus the metadata the catalog keeps.

`decode_image(data, size, uri)` is a pure function (bytes in, `DecodedImage` out) so it
can be tested alone; every failure raises `ImageDecodeError`, whose message names the
file and the reason. A camera RAW (formats.raw_family) takes raw_preview's path (its
largest embedded preview, else LibRaw); any other file, in order:

1. open with Pillow (header only) and refuse images over the pixel limit
   (decompression bombs) before any pixel is decoded;
2. read the metadata: original size after EXIF orientation, EXIF DateTimeOriginal,
   Make/Model, ImageDescription, and XMP ``dc:description`` /
   ``Iptc4xmpCore:AltTextAccessibility`` parsed from the raw XMP packet (no exiftool);
3. the first frame (animations) becomes the model's input square through
   ``altbeam.model.data.pixels.square_pixels``, the one preparation evaluation uses
   too: JPEG draft scaling, EXIF orientation, any mode to RGB (alpha composited on
   white, 16-bit scaled down, CMYK/palette/greyscale converted), a plain resize to
   ``size`` x ``size``.

The file itself is only read, never modified.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import hashlib
import io
import re
import time
import warnings
import xml.etree.ElementTree as ET

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from PIL import Image, UnidentifiedImageError

from altbeam.model.data.pixels import ORIENTATION_TAG, square_pixels
from altbeam.pipelines.caption.formats import (  # noqa: F401 - HEIF_SUPPORTED re-exported
    HEADER_BYTES,
    HEIF_SUPPORTED,
    RAW_FAMILIES,
    ImageDecodeError,
    raw_family,
    sniff_format,
)
from altbeam.pipelines.caption.raw_preview import RawPicture, RawReader
from altbeam.pipelines.runtime.progress import NAMESPACE, Tally

RAW_NAMES = frozenset(RAW_FAMILIES.values())
# Pillow's own default bomb limit; the pipeline's --max-pixels flag overrides it.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485

_EXIF_IFD = 0x8769
_TAG_DESCRIPTION, _TAG_MAKE, _TAG_MODEL = 270, 271, 272
_TAG_DATETIME_ORIGINAL, _TAG_DATETIME_DIGITIZED = 36867, 36868
_XMP_TIFF_TAG = 700
_NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "Iptc4xmpCore": "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/",
}

@dataclasses.dataclass
class ImageMetadata:
    """What the catalog records about an image besides its caption."""

    width: int                      # after EXIF orientation
    height: int
    format: str | None
    capture_time: dt.datetime | None = None   # naive: camera local time
    camera_make: str | None = None
    camera_model: str | None = None
    existing_alt_text: str | None = None
    existing_description: str | None = None


@dataclasses.dataclass
class DecodedImage:
    pixels: np.ndarray              # uint8 [size, size, 3], RGB
    metadata: ImageMetadata
    pixels_from: str = "file"       # the catalog's pixels_from (see `pixels_source`)


def decode_image(data: bytes, size: int, uri: str,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, *,
                 use_draft: bool = True, raw_reader: RawReader | None = None) -> DecodedImage:
    """Turn a file's bytes into an RGB ``size`` x ``size`` uint8 array plus metadata.

    Raises ImageDecodeError (never anything else) naming ``uri`` and the reason.
    ``use_draft=False`` turns off JPEG draft decoding (for benchmarks). A camera RAW
    (formats.raw_family) is read by ``raw_reader`` (a temporary one when None).
    """
    if not data:
        raise ImageDecodeError(uri, "empty_file", "file is empty (0 bytes)")
    try:
        family = raw_family(uri, data[:HEADER_BYTES])
        if family:
            return _decode_raw(data, size, uri, family, max_pixels, raw_reader)
        with warnings.catch_warnings():
            # Our own pixel check below replaces Pillow's global bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Image.open is at the first frame (a PSD: its flattened composite, which
            # seek(0) would refuse as outside its 1-based layer sequence).
            im = Image.open(io.BytesIO(data))
            return _decode_opened(im, size, uri, max_pixels, use_draft)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        kind = sniff_format(data)
        if kind:  # the right magic bytes, but a header Pillow rejects
            raise ImageDecodeError(uri, "corrupt_header", f"starts like a {kind} file but "
                                   "its header is corrupt (Pillow cannot read it)") from None
        raise ImageDecodeError(uri, "not_an_image",
                               "not a recognised image format (Pillow cannot identify it)") from None
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(uri, "too_many_pixels", f"decompression bomb refused: {e}") from None
    except MemoryError:
        raise ImageDecodeError(uri, "out_of_memory", "ran out of memory decoding the image") from None
    except Exception as e:  # noqa: BLE001
        # Pillow reports truncated/corrupt data with OSError, SyntaxError, ValueError,
        # struct.error ... depending on the plugin; keep its wording, name the kind.
        text = str(e) or type(e).__name__
        kind = ("truncated" if "truncated" in text.lower() else
                "needs_ghostscript" if "ghostscript" in text.lower() else "corrupt_data")
        raise ImageDecodeError(uri, kind, f"cannot decode image data ({type(e).__name__}): "
                               f"{text}") from None


def _decode_opened(im: Image.Image, size: int, uri: str,
                   max_pixels: int | None, use_draft: bool = True) -> DecodedImage:
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(uri, "bad_dimensions", f"declares {width}x{height} pixels")
    if max_pixels and width * height > max_pixels:
        raise ImageDecodeError(
            uri, "too_many_pixels",
            f"declares {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (--max-pixels); refused as a possible decompression bomb")
    exif = im.getexif()
    orientation = exif.get(ORIENTATION_TAG, 1)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    metadata = ImageMetadata(width=width, height=height, format=im.format)
    _read_metadata(im, exif, metadata)
    source = pixels_source(im)

    pixels = square_pixels(im, size, use_draft)
    if pixels.shape != (size, size, 3):  # defensive: the model contract needs exactly this
        raise ImageDecodeError(uri, "bad_shape", f"decoded to shape {pixels.shape}")
    return DecodedImage(pixels=pixels, metadata=metadata, pixels_from=source)


def pixels_source(im: Image.Image) -> str:
    """The catalog's ``pixels_from`` for a picture Pillow opened: "composite" (a PSD's
    flattened image), "frame 0" (the first of several frames or pages), else "file"."""
    if im.format == "PSD":
        return "composite"
    return "frame 0" if getattr(im, "is_animated", False) else "file"


def _decode_raw(data: bytes, size: int, uri: str, family: str, max_pixels: int | None,
                reader: RawReader | None) -> DecodedImage:
    """A camera RAW through raw_preview: its largest preview (or LibRaw), upright."""
    own = reader is None
    reader = reader or RawReader()
    try:
        raw: RawPicture = reader.read(data, uri, family, size, max_pixels)
    finally:
        if own:
            reader.close()
    tags = raw.tags
    file_type = str(tags.get("FileType") or "")
    md = ImageMetadata(width=raw.width, height=raw.height,
                       format=f"RAW/{file_type if file_type in RAW_NAMES else family}")
    md.capture_time = parse_exif_datetime(tags.get("DateTimeOriginal") or tags.get("CreateDate"))
    md.camera_make = _clean_text(tags.get("Make"))
    md.camera_model = _clean_text(tags.get("Model"))
    md.existing_description = (_clean_text(tags.get("Description"))
                               or _clean_text(tags.get("ImageDescription")))
    md.existing_alt_text = _clean_text(tags.get("AltTextAccessibility"))
    return DecodedImage(square_pixels(raw.image, size), md, raw.pixels_from)


# --- metadata --------------------------------------------------------------------------

def _read_metadata(im: Image.Image, exif: Image.Exif, md: ImageMetadata) -> None:
    """Fill capture time, camera and existing descriptions; bad metadata is ignored."""
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:  # noqa: BLE001 - a broken EXIF IFD must not lose the image
        sub = {}
    md.capture_time = parse_exif_datetime(
        sub.get(_TAG_DATETIME_ORIGINAL) or sub.get(_TAG_DATETIME_DIGITIZED))
    md.camera_make = _clean_text(exif.get(_TAG_MAKE))
    md.camera_model = _clean_text(exif.get(_TAG_MODEL))
    description = _clean_text(exif.get(_TAG_DESCRIPTION))
    xmp = _xmp_packet(im)
    if xmp:
        xmp_description, alt_text = parse_xmp_descriptions(xmp)
        description = xmp_description or description
        md.existing_alt_text = alt_text
    md.existing_description = description


def parse_exif_datetime(value) -> dt.datetime | None:
    """EXIF "YYYY:MM:DD HH:MM:SS" (camera local time, naive) or None."""
    text = _clean_text(value)
    if not text:
        return None
    m = re.match(r"(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})", text)
    if not m:
        return None
    try:
        return dt.datetime(*map(int, m.groups()))
    except ValueError:  # "0000:00:00 00:00:00" and friends
        return None


def _clean_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = str(value).replace("\x00", "").strip()
    return text or None


def _xmp_packet(im: Image.Image) -> bytes | None:
    info = im.info
    packet = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if packet is None and hasattr(im, "tag_v2"):
        packet = im.tag_v2.get(_XMP_TIFF_TAG)
    if isinstance(packet, str):
        packet = packet.encode("utf-8")
    return packet or None


def parse_xmp_descriptions(packet: bytes) -> tuple[str | None, str | None]:
    """(dc:description, Iptc4xmpCore:AltTextAccessibility) from an XMP packet.

    Takes the x-default entry of each language alternative (else the first).
    Unparseable XMP yields (None, None).
    """
    # Strip the packet wrapper (<?xpacket ...?>) and any padding after the root element.
    start = packet.find(b"<x:xmpmeta")
    if start < 0:
        start = packet.find(b"<rdf:RDF")
    end_tag = b"</x:xmpmeta>" if packet.find(b"</x:xmpmeta>") >= 0 else b"</rdf:RDF>"
    end = packet.rfind(end_tag)
    if start < 0 or end < 0:
        return None, None
    try:
        root = ET.fromstring(packet[start:end + len(end_tag)])
    except ET.ParseError:
        return None, None

    def alt(tag: str) -> str | None:
        for node in root.iter(tag):
            items = node.findall("rdf:Alt/rdf:li", _NS) or node.findall("rdf:Seq/rdf:li", _NS)
            lang = "{http://www.w3.org/XML/1998/namespace}lang"
            chosen = next((li for li in items if li.get(lang) == "x-default"), None)
            chosen = chosen if chosen is not None else (items[0] if items else None)
            text = _clean_text(chosen.text if chosen is not None else node.text)
            if text:
                return text
        # Attribute form: <rdf:Description dc:description="..."/> is not valid for
        # lang-alt properties but some tools write it.
        for node in root.iter(f"{{{_NS['rdf']}}}Description"):
            text = _clean_text(node.get(tag))
            if text:
                return text
        return None

    return (alt(f"{{{_NS['dc']}}}description"),
            alt(f"{{{_NS['Iptc4xmpCore']}}}AltTextAccessibility"))


def read_error_type(exc: BaseException) -> str:
    """A short, specific error_type for a failed read/stat/list (local or object storage)."""
    names = {type(exc).__name__}
    names.update(type(e).__name__ for e in (exc.__cause__, exc.__context__) if e is not None)
    if isinstance(exc, FileNotFoundError) or names & {"NotFound"}:
        return "not_found"
    if isinstance(exc, PermissionError) or names & {"Forbidden", "Unauthorized"}:
        return "permission_denied"
    if isinstance(exc, IsADirectoryError):
        return "is_a_directory"
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "symlink_loop"
    if names & {"RetryError", "ServiceUnavailable", "InternalServerError", "GatewayTimeout",
                "BadGateway", "TooManyRequests"}:
        return "storage_unavailable"
    return type(exc).__name__


# --- the Beam step ---------------------------------------------------------------------

@dataclasses.dataclass
class ImageInfo:
    """Everything about one decoded image except its pixels (the RunInference key)."""

    uri: str
    sha256: str
    size_bytes: int
    mtime_us: int | None
    metadata: ImageMetadata
    pixels_from: str = "file"       # see DecodedImage


@dataclasses.dataclass(frozen=True)
class StageError:
    """A failed input on its way to the errors table."""

    uri: str
    stage: str          # list | read | decode | inference
    error_type: str
    message: str


class ReadAndDecode(beam.DoFn):
    """FileRecord -> (ImageInfo, uint8[S,S,3]); "errors": StageError; "unchanged": uri.

    Reads the whole file through Beam's FileSystems, hashes it, and, when the catalog
    already holds this content (``known_sha256``), stops there: the image is unchanged.
    """

    def __init__(self, image_size: int, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 max_file_size: int | None = None, progress_dir: str | None = None):
        self._size = image_size
        self._max_pixels = max_pixels
        self._max_file_size = max_file_size
        self._progress_dir = progress_dir

    def setup(self):
        self._tally = Tally(self._progress_dir)
        self._decode_ms = Metrics.distribution(NAMESPACE, "decode_ms")
        self._raw_reader = RawReader()      # starts exiftool on the first RAW only

    def process(self, record):
        uri = record.uri
        try:
            data = self._read(uri)
        except Exception as e:  # noqa: BLE001 - one unreadable file must not stop the run
            # Deleted since listing, no permission, object-storage failure after retries.
            yield self._error(StageError(uri, "read", read_error_type(e),
                                         f"{uri}: cannot read file: {type(e).__name__}: {e}"))
            return
        if self._max_file_size and len(data) > self._max_file_size:
            yield self._error(StageError(
                uri, "read", "too_large", f"{uri}: file grew to over "
                f"{self._max_file_size:,} bytes (--max-file-size) while being read"))
            return
        sha = hashlib.sha256(data).hexdigest()
        if record.known_sha256 and (sha == record.known_sha256
                                    or sha in getattr(record, "known_versions", ())):
            self._tally.add("unchanged")
            self._tally.add("done")
            yield beam.pvalue.TaggedOutput("unchanged", uri)
            return
        start = time.perf_counter()
        try:
            decoded = decode_image(data, self._size, uri, self._max_pixels,
                                   raw_reader=self._raw_reader)
        except ImageDecodeError as e:
            yield self._error(StageError(uri, "decode", e.error_type, str(e)))
            return
        self._decode_ms.update(int((time.perf_counter() - start) * 1000))
        info = ImageInfo(uri=uri, sha256=sha, size_bytes=len(data),
                         mtime_us=record.mtime_us, metadata=decoded.metadata,
                         pixels_from=decoded.pixels_from)
        yield info, decoded.pixels

    def finish_bundle(self):
        self._tally.flush()

    def teardown(self):
        if getattr(self, "_raw_reader", None):
            self._raw_reader.close()

    def _read(self, uri: str) -> bytes:
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            if self._max_file_size:
                return f.read(self._max_file_size + 1)
            return f.read()

    def _error(self, err: StageError):
        self._tally.add("failed")
        self._tally.add("done")
        return beam.pvalue.TaggedOutput("errors", err)
