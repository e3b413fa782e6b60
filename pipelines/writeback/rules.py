"""What the writeback writes, and how it decides: fields, provenance, person's words, checks.

Pure functions over exiftool's ``-j -G1 -a`` tag dicts and file bytes; no I/O besides
Pillow decoding bytes/paths. :mod:`altbeam.pipelines.writeback.files` does the I/O.
"""
from __future__ import annotations

import dataclasses
import io
import re

from PIL import Image, ImageSequence

# field name (CLI / log) -> exiftool tag written; the key exiftool -G1 reads it back as.
FIELDS = {
    "alt_text": ("XMP-iptcCore:AltTextAccessibility", "XMP-iptcCore:AltTextAccessibility"),
    "xmp_description": ("XMP-dc:Description", "XMP-dc:Description"),
    "exif_description": ("EXIF:ImageDescription", "IFD0:ImageDescription"),
    "iptc_caption": ("IPTC:Caption-Abstract", "IPTC:Caption-Abstract"),
}
DEFAULT_FIELDS = ("alt_text",)
XMP_FIELDS = frozenset({"alt_text", "xmp_description"})
IPTC_CAPTION_MAX_BYTES = 2000

# Which fields each file type (exiftool FileTypeExtension) holds in the file itself.
# PNG: exiftool only writes non-standard IPTC there; WebP/HEIC/AVIF have no IPTC
# block and GIF holds XMP only, so those fields are left out (noted in the reason).
_ALL = frozenset(FIELDS)
_NO_IPTC = frozenset({"alt_text", "xmp_description", "exif_description"})
FIELDS_BY_TYPE = {
    "JPG": _ALL, "JPEG": _ALL, "TIF": _ALL, "TIFF": _ALL,
    "PNG": _NO_IPTC, "WEBP": _NO_IPTC, "HEIC": _NO_IPTC, "HEIF": _NO_IPTC,
    "AVIF": _NO_IPTC, "GIF": XMP_FIELDS,
}
# Pillow format names (catalog "format") that exiftool cannot write in place.
NOT_WRITABLE_IN_PLACE = frozenset({"BMP", "DIB", "PCX", "PPM", "TGA", "ICO", "SGI"})

# Camera RAW files are never written: their metadata goes to an XMP sidecar. A catalog
# row is a RAW by its format ("RAW/CR2") or, for rows of any format, by the file's
# extension; exiftool's FileType of the file read is checked again before writing.
RAW_FORMAT_PREFIX = "RAW/"
RAW_TYPES = frozenset({
    "3FR", "ARI", "ARQ", "ARW", "BAY", "CR2", "CR3", "CRW", "CIFF", "CS1", "DCR", "DNG", "ERF",
    "FFF", "GPR", "IIQ", "K25", "KDC", "MEF", "MOS", "MRW", "NEF", "NRW", "ORF", "ORI",
    "PEF", "RAF", "RAW", "RW2", "RWL", "SR2", "SRF", "SRW", "X3F",
})

PROVENANCE_GROUP = "XMP-altbeam"
GENERATOR = "altbeam"

# Texts some cameras put in ImageDescription by themselves: not a person's words.
CAMERA_BOILERPLATE = frozenset({
    "olympus digital camera", "sony dsc", "digital camera", "kodak digital still camera",
    "minolta digital camera", "samsung digital camera", "default", "image", "untitled",
})

# Tags that legitimately change when exiftool rewrites a file.
_VOLATILE_GROUPS = ("System:", "File:", "ExifTool:", "Composite:", PROVENANCE_GROUP + ":")
_VOLATILE_TAGS = frozenset({"SourceFile", "XMP-x:XMPToolkit", "Photoshop:IPTCDigest"})
_OFFSET_TAG = re.compile(r":(\w*Offsets?|\w*ByteCounts?|PreviewImageStart|ThumbnailLength)$")
_IPTC_HOUSEKEEPING = frozenset({"IPTC:CodedCharacterSet", "IPTC:EnvelopeRecordVersion",
                                "IPTC:ApplicationRecordVersion"})
_TEXT_KEY = re.compile(r"^(XMP-iptcCore:AltTextAccessibility|XMP-dc:Description|"
                       r"IFD0:ImageDescription|IPTC:Caption-Abstract)(-[\w-]+)?$")


def truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits ``max_bytes``."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", "ignore")


def field_value(field: str, caption: str) -> str:
    """The exact text a field receives (IPTC Caption-Abstract is capped at 2000 bytes)."""
    return truncate_utf8(caption, IPTC_CAPTION_MAX_BYTES) if field == "iptc_caption" else caption


def as_text(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def is_raw(row: dict) -> bool:
    """The catalog row is a camera RAW file (its format, or else its extension, says so)."""
    if (row.get("format") or "").upper().startswith(RAW_FORMAT_PREFIX):
        return True
    name = row["uri"].rsplit("/", 1)[-1]
    return "." in name and name.rsplit(".", 1)[1].upper() in RAW_TYPES


def supported_fields(file_type: str, wanted: tuple[str, ...], sidecar: bool) -> list[str]:
    """Fields of ``wanted`` this target can hold (an XMP sidecar holds XMP only)."""
    allowed = XMP_FIELDS if sidecar else FIELDS_BY_TYPE.get(file_type.upper(), XMP_FIELDS)
    return [f for f in wanted if f in allowed]


@dataclasses.dataclass
class TextCheck:
    """The descriptive texts found in a file (and its sidecar)."""

    ours: str | None                  # XMP-altbeam:Caption, the text we last wrote
    persons: list[tuple[str, str]]    # (tag, text) written by someone else
    values: dict[str, str]            # tag key -> text, all descriptive tags found


def check_texts(*tag_dicts: dict) -> TextCheck:
    """Sort the alt text / description tags into ours and a person's."""
    ours = None
    values: dict[str, str] = {}
    for tags in tag_dicts:
        if tags.get(f"{PROVENANCE_GROUP}:Caption") is not None:
            ours = as_text(tags[f"{PROVENANCE_GROUP}:Caption"])
        for key, value in tags.items():
            if _TEXT_KEY.match(key):
                values.setdefault(key, as_text(value))
    ours_forms = set() if ours is None else {ours, truncate_utf8(ours, IPTC_CAPTION_MAX_BYTES)}
    persons = [(k, v) for k, v in values.items()
               if v.strip() and v.strip().lower() not in CAMERA_BOILERPLATE
               and v not in ours_forms]
    return TextCheck(ours=ours, persons=persons, values=values)


def persons_in_fields(check: TextCheck, fields: list[str]) -> list[tuple[str, str]]:
    """A person's texts in the fields about to be written (any language of them).

    Only these block a write: a person's caption in a field altbeam leaves alone (say
    IPTC Caption-Abstract beside the alt text) stays as it is, and is not in the way.
    """
    keys = {FIELDS[f][1] for f in fields}
    return [(k, v) for k, v in check.persons if _TEXT_KEY.match(k).group(1) in keys]


def already_written(check: TextCheck, tags: dict, fields: list[str], caption: str,
                    model_version: str | None) -> bool:
    """The target already carries exactly this caption, from this model, in every field."""
    if check.ours != caption:
        return False
    if as_text(tags.get(f"{PROVENANCE_GROUP}:ModelVersion", "")) != (model_version or ""):
        return False
    return all(check.values.get(FIELDS[f][1]) == field_value(f, caption) for f in fields)


def lost_tags(before: dict, after: dict, written_fields: list[str]) -> list[str]:
    """Pre-existing tags that are missing or changed after a write (volatile ones ignored)."""
    written = {FIELDS[f][1] for f in written_fields}
    if "iptc_caption" in written_fields:
        written |= _IPTC_HOUSEKEEPING | {"File:CurrentIPTCDigest"}
    lost = []
    for key, value in before.items():
        if (key in _VOLATILE_TAGS or key in written or key.startswith(_VOLATILE_GROUPS)
                or _OFFSET_TAG.search(key)):
            continue
        if key not in after:
            lost.append(f"{key} (missing)")
        elif after[key] != value:
            lost.append(f"{key} (changed)")
    return lost


def wrong_fields(after: dict, fields: list[str], caption: str) -> list[str]:
    """Fields whose read-back value is not what was written (plus the provenance caption)."""
    bad = [FIELDS[f][1] for f in fields
           if as_text(after.get(FIELDS[f][1], "")) != field_value(f, caption)]
    if as_text(after.get(f"{PROVENANCE_GROUP}:Caption", "")) != caption:
        bad.append(f"{PROVENANCE_GROUP}:Caption")
    return bad


def pixel_frames(source) -> list[tuple[str, tuple[int, int], bytes]]:
    """Decoded pixels of every frame: (mode, size, raw bytes). ``source``: bytes or a path."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
        return [(f.mode, f.size, f.tobytes()) for f in ImageSequence.Iterator(im)]


def same_pixels(before: bytes, after_path: str) -> bool:
    return pixel_frames(before) == pixel_frames(after_path)


def quote(text: str, limit: int = 60) -> str:
    """A short, single-line rendering of a text for a reason message."""
    flat = text.replace("\n", "\\n")
    return repr(flat if len(flat) <= limit else flat[:limit] + "…")
