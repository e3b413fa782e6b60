"""A camera RAW file's pixels: its largest embedded preview, else LibRaw.

Every RAW carries at least one JPEG (or TIFF) preview the camera rendered; modern
cameras embed one at full size. `RawReader.read` writes the RAW's bytes to a private
temporary file (the original is only ever read, so its bytes stay identical) and, in
one round trip of the project's long-lived exiftool session
(``altbeam.pipelines.writeback.exiftool_session``):

1. reads the RAW's own tags (``-j -n``): FileType, Orientation, capture time, camera,
   descriptions;
2. extracts every ``PreviewImage``, ``JpgFromRaw`` and ``OtherImage`` (``-a -b -W``)
   to files.

The largest preview (by pixel count) that Pillow decodes wins, with the RAW's
Orientation applied (the preview usually has none of its own; when the RAW has no
Orientation tag the preview's is used). A preview whose shorter side is smaller than
the model's input is not *usable*: then LibRaw (``rawpy``, half size, camera white
balance, its own orientation) decodes the sensor data instead, and the small preview
is only the last resort. ``pixels_from`` names what was used: the exiftool tag name,
or "libraw". Without exiftool, LibRaw alone is tried.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import warnings

from PIL import Image

from altbeam.pipelines.caption.formats import ImageDecodeError, extension
from altbeam.pipelines.writeback.exiftool_session import (
    ExifToolError,
    ExifToolSession,
    file_arg,
)

PREVIEW_TAGS = ("JpgFromRaw", "PreviewImage", "OtherImage")
INFO_TAGS = ("FileType", "Orientation", "DateTimeOriginal", "CreateDate", "Make", "Model",
             "ImageDescription", "XMP-dc:Description", "XMP-iptcCore:AltTextAccessibility")
# EXIF Orientation -> the Pillow transpose that displays the image upright.
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


@dataclasses.dataclass
class RawPicture:
    """The pixels chosen for a RAW file and what exiftool read from it."""

    image: Image.Image          # loaded, upright, without an EXIF orientation of its own
    width: int                  # full size of the source, upright
    height: int
    pixels_from: str            # PreviewImage | JpgFromRaw | OtherImage | libraw
    tags: dict                  # exiftool's -j -n values for INFO_TAGS (may be empty)


def oriented(im: Image.Image, orientation) -> Image.Image:
    """``im`` turned upright for an EXIF ``orientation``, with no orientation left in it."""
    method = _TRANSPOSE.get(orientation if isinstance(orientation, int) else 1)
    out = im.transpose(method) if method is not None else im.copy()
    out.info.pop("exif", None)
    return out


class RawReader:
    """Reads RAW files through one exiftool session, started on the first RAW.

    Not thread-safe (like the session): one per DoFn instance. ``close()`` ends it."""

    def __init__(self, session: ExifToolSession | None = None):
        self._session = session
        self._exiftool_missing: str | None = None

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> RawReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, data: bytes, uri: str, family: str, min_side: int,
             max_pixels: int | None) -> RawPicture:
        """The RAW's pixels (see the module doc); ImageDecodeError when none decode."""
        workdir = tempfile.mkdtemp(prefix="altbeam-raw-")
        try:
            path = os.path.join(workdir, "raw" + (extension(uri) or "." + family.lower()))
            with open(path, "wb") as f:
                f.write(data)
            tags, previews = self._exiftool(path, os.path.join(workdir, "previews"))
            chosen = _largest_preview(previews, tags.get("Orientation"), max_pixels, min_side)
            if chosen is not None and min(chosen.width, chosen.height) >= min_side:
                return dataclasses.replace(chosen, tags=tags)
            try:
                return dataclasses.replace(_libraw(path, max_pixels), tags=tags)
            except Exception as e:  # noqa: BLE001 - LibRaw's errors are many kinds
                if chosen is not None:
                    return dataclasses.replace(chosen, tags=tags)
                why = self._exiftool_missing or "no embedded preview decodes"
                raise ImageDecodeError(
                    uri, "raw_unreadable", f"RAW/{family}: {why}, and LibRaw cannot decode "
                    f"it either ({type(e).__name__}: {e})") from None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _exiftool(self, path: str, preview_dir: str) -> tuple[dict, list[tuple[str, str]]]:
        """(tags, [(tag name, extracted file)]); ({}, []) when exiftool is unusable."""
        if self._exiftool_missing:
            return {}, []
        try:
            self._session = self._session or ExifToolSession()
            self._session.start()     # raises when exiftool is not installed
            info, _ = self._session.run([
                ["-j", "-n", *(f"-{t}" for t in INFO_TAGS), file_arg(path)],
                ["-a", "-b", "-W", os.path.join(preview_dir, "%t%-c.%s"),
                 *(f"-{t}" for t in PREVIEW_TAGS), file_arg(path)]])
        except ExifToolError as e:
            self._exiftool_missing = f"exiftool unavailable ({e})"
            return {}, []
        tags = _json_tags(info.stdout) if info.status == 0 else {}
        files = sorted(os.listdir(preview_dir)) if os.path.isdir(preview_dir) else []
        previews = [(name.split(".", 1)[0].split("-", 1)[0], os.path.join(preview_dir, name))
                    for name in files]
        return tags, previews


def _json_tags(stdout: str) -> dict:
    try:
        found = json.loads(stdout)[0]
    except (ValueError, IndexError, TypeError):
        return {}
    return found if isinstance(found, dict) else {}


def _largest_preview(previews: list[tuple[str, str]], raw_orientation,
                     max_pixels: int | None, min_side: int) -> RawPicture | None:
    """The largest preview (pixel count) that decodes, upright; None when none does."""
    sized = []
    for tag, path in previews:
        try:
            with Image.open(path) as im:
                sized.append((im.width * im.height, tag, path))
        except Exception:  # noqa: BLE001 - not a decodable picture: not a candidate
            continue
    for pixels, tag, path in sorted(sized, reverse=True):
        if max_pixels and pixels > max_pixels:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    width, height = im.size
                    orientation = raw_orientation or im.getexif().get(274, 1)
                    if im.format == "JPEG":   # decode at 1/2..1/8 scale when still big enough
                        im.draft("RGB", (min_side, min_side))
                    im.load()
                    upright = oriented(im, orientation)
        except Exception:  # noqa: BLE001 - a broken preview: try the next largest
            continue
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        return RawPicture(upright, width, height, tag, {})
    return None


def _libraw(path: str, max_pixels: int | None) -> RawPicture:
    """LibRaw's half-size rendering (camera white balance, 8 bits, its own orientation)."""
    import rawpy

    with rawpy.imread(path) as raw:
        sizes = raw.sizes
        if max_pixels and sizes.width * sizes.height > max_pixels:
            raise ValueError(f"{sizes.width}x{sizes.height} pixels is over the limit of "
                             f"{max_pixels:,} (--max-pixels)")
        rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
        width, height = sizes.width, sizes.height
        if sizes.flip in (5, 6):    # LibRaw's flips that turn the image by 90 degrees
            width, height = height, width
    return RawPicture(Image.fromarray(rgb, "RGB"), width, height, "libraw", {})
