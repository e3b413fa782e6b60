"""What a file is: a picture Pillow opens, a camera RAW, or not an image.

One rule for the listing (sources.py: which files become candidates) and the decoder
(decode.py: which path a candidate takes):

* a camera RAW (`raw_family`): its magic bytes (CR2, CR3, CRW, RAF, ORF, RW2, X3F,
  MRW) or, for the TIFF-based families that share TIFF's magic (DNG, NEF, ARW, PEF,
  ...), its extension. `RAW_FAMILIES` is exiftool's list of still-image RAW types;
  RAW movies (CRM, R3D) and packages (EIP, RWZ) are left out;
* a picture (`sniff_picture`): the first bytes are accepted by one of Pillow's
  registered openers (pillow-heif's HEIC/HEIF too, registered here), in Pillow's own
  order, so a PNG named ``.dat`` is still a PNG;
* `is_candidate` (the listing's decision): a file named like a picture or a RAW is
  always a candidate (the decoder then reads it, and a broken one is an errors row);
  any other file is a candidate only when its content is a picture or a RAW (by
  accept() and a header Pillow parses, or by the strict openers in SELF_CHECKING). XMP
  sidecars (``.xmp``) are never candidates. Everything else is "not an image": a
  counted skip in the run summary, never an errors row.

Pillow openers that are not pictures are not trusted by content or extension:
MPEG (video: Pillow reads only its header), BUFR/GRIB/HDF5 (data stubs) and IPTC
(bare metadata).
"""
from __future__ import annotations

import os
import warnings

from PIL import Image

try:  # HEIC/HEIF (pillow-heif is a dependency; the guard keeps a partial install working)
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - depends on the environment
    HEIF_SUPPORTED = False

Image.init()

# exiftool's still-image RAW types (`exiftool -listf`, descriptions "... RAW ..."):
# extension -> the family the catalog records as RAW/<family>.
RAW_FAMILIES = {
    ".3fr": "3FR", ".arq": "ARQ", ".arw": "ARW", ".ciff": "CRW", ".cr2": "CR2",
    ".cr3": "CR3", ".crw": "CRW", ".dcr": "DCR", ".dng": "DNG", ".erf": "ERF",
    ".fff": "FFF", ".gpr": "GPR", ".iiq": "IIQ", ".k25": "K25", ".kdc": "KDC",
    ".mef": "MEF", ".mos": "MOS", ".mrw": "MRW", ".nef": "NEF", ".nrw": "NRW",
    ".orf": "ORF", ".ori": "ORF", ".pef": "PEF", ".raf": "RAF", ".raw": "RAW",
    ".rw2": "RW2", ".rwl": "RWL", ".sr2": "SR2", ".srf": "SRF", ".srw": "SRW",
    ".x3f": "X3F",
}
NOT_PICTURES = frozenset({"MPEG", "BUFR", "GRIB", "HDF5", "IPTC"})
PICTURE_EXTENSIONS = frozenset(
    ext for ext, fmt in Image.registered_extensions().items()
    if fmt in Image.OPEN and fmt not in NOT_PICTURES)
# Openers without an accept() check whose own header parsing is strict enough to try
# on any file ("Image type:" text, SPIDER's consistent float header, PCD's PCD_IPI);
# TGA's 18-byte header is too loose, so a TGA needs its extension.
SELF_CHECKING = ("IM", "SPIDER", "PCD")
SIDECAR_EXTENSIONS = frozenset({".xmp"})
HEADER_BYTES = 64     # enough for every magic below and Pillow's 16-byte accept() prefix


class ImageDecodeError(Exception):
    """A file that cannot become a model input; ``error_type`` is a short code."""

    def __init__(self, uri: str, error_type: str, reason: str):
        super().__init__(f"{uri}: {reason}")
        self.uri = uri
        self.error_type = error_type
        self.reason = reason


def extension(uri: str) -> str:
    """The file name's extension, lower-cased with its dot ("" when none)."""
    return os.path.splitext(uri.rsplit("/", 1)[-1])[1].lower()


def _raw_magic(header: bytes) -> str | None:
    if header[:4] == b"II*\x00" and header[8:10] == b"CR":
        return "CR2"
    if header[4:12] == b"ftypcrx ":
        return "CR3"
    if header[:2] == b"II" and header[6:14] == b"HEAPCCDR":
        return "CRW"
    if header.startswith(b"FUJIFILMCCD-RAW"):
        return "RAF"
    if header[:4] in (b"IIRO", b"IIRS", b"MMOR"):
        return "ORF"
    if header[:4] == b"IIU\x00":
        return "RW2"
    if header[:4] == b"FOVb":
        return "X3F"
    if header[:4] == b"\x00MRM":
        return "MRW"
    return None


def raw_family(uri: str, header: bytes) -> str | None:
    """The RAW family ("CR2", "DNG" ...) of a file, by magic bytes, else by extension."""
    return _raw_magic(header) or RAW_FAMILIES.get(extension(uri))


def sniff_picture(header: bytes) -> list[str]:
    """The Pillow formats whose openers accept ``header`` (first bytes), in Pillow's order."""
    prefix = header[:16]      # what Image.open gives the accept() functions
    found = []
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        if fmt in NOT_PICTURES or accept is None:
            continue
        try:
            if accept(prefix):
                found.append(fmt)
        except Exception:  # noqa: BLE001 - a plugin's check failing means "not mine"
            continue
    return found


# The magic bytes of the common formats, for naming a corrupt header in errors.
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
          (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


def sniff_format(data: bytes) -> str | None:
    """The image format that ``data``'s first bytes announce, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)


def skip_reason(uri: str, open_file) -> str | None:
    """None when the file is a candidate image, else why it is skipped.

    ``open_file()`` opens the file for binary reading; it is only called for a file not
    named like a picture or RAW, and only its first bytes are read (its header, and
    what Pillow's opener for the format those bytes announce needs to parse it).
    Reasons: "xmp_sidecar", "not_an_image". A file that cannot be opened here is a
    candidate, so the read step reports why as an errors row."""
    ext = extension(uri)
    if ext in SIDECAR_EXTENSIONS:
        return "xmp_sidecar"
    if ext in PICTURE_EXTENSIONS or ext in RAW_FAMILIES:
        return None
    try:
        with open_file() as f:
            header = f.read(HEADER_BYTES)
            if _raw_magic(header):
                return None
            if _opens_as(f, sniff_picture(header) + list(SELF_CHECKING)):
                return None
    except OSError:
        return None
    return "not_an_image"


def _opens_as(f, formats: list[str]) -> bool:
    """One of Pillow's openers for ``formats`` parses the header of ``f`` (weak magics
    such as PPM's "P1" or BMP's "BM" also start many text files; parsing tells them
    apart)."""
    try:
        f.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(f, formats=formats):
                return True
    except Image.DecompressionBombError:
        return True      # a picture; the decoder refuses it as an errors row
    except Exception:  # noqa: BLE001 - any failure to parse means "not this format"
        return False
