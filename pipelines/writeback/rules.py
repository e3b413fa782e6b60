"""What the writeback writes, and how it decides: fields, provenance, person's words, checks.

Pure functions over exiftool's ``-j -G1 -a`` tag dicts and file bytes; no I/O besides
Pillow decoding bytes/paths. :mod:`altbeam.pipelines.writeback.files` does the I/O.
"""
from __future__ import annotations

import dataclasses
import io
import re

from PIL import Image, ImageSequence

from altbeam.model.serving.caption_status import (
    BLANK,
    CONTRADICTED,
    NO_CAPTION,
    OK,
    STATUSES,
    TOO_SMALL,
    UNSURE,
    UNTRUSTED,
)

# field name (CLI / log) -> exiftool tag written; the key exiftool -G1 reads it back as.
# The caption goes to these text fields:
CAPTION_FIELDS = {
    "alt_text": ("XMP-iptcCore:AltTextAccessibility", "XMP-iptcCore:AltTextAccessibility"),
    "xmp_description": ("XMP-dc:Description", "XMP-dc:Description"),
    "exif_description": ("EXIF:ImageDescription", "IFD0:ImageDescription"),
    "iptc_caption": ("IPTC:Caption-Abstract", "IPTC:Caption-Abstract"),
}
# --keywords: the row's catalog keywords are added to these bag/list tags (exiftool
# "+=": appended after the keywords already there, which stay as they are).
KEYWORD_FIELDS = {
    "xmp_keywords": ("XMP-dc:Subject", "XMP-dc:Subject"),
    "iptc_keywords": ("IPTC:Keywords", "IPTC:Keywords"),
}
FIELDS = {**CAPTION_FIELDS, **KEYWORD_FIELDS}
DEFAULT_FIELDS = ("alt_text",)
# The fields kept in XMP, all an XMP sidecar holds (the two caption ones are language
# alternatives: written as x-default).
XMP_FIELDS = frozenset({"alt_text", "xmp_description", "xmp_keywords"})
IPTC_CAPTION_MAX_BYTES = 2000
IPTC_KEYWORD_MAX_BYTES = 64      # IIM 2:25 Keywords: at most 64 octets each

# Which fields each file type (exiftool FileTypeExtension) holds in the file itself.
# PNG: exiftool only writes non-standard IPTC there; WebP/HEIC/AVIF have no IPTC
# block and GIF holds XMP only, so those fields are left out (noted in the reason).
_ALL = frozenset(FIELDS)
_NO_IPTC = _ALL - {"iptc_caption", "iptc_keywords"}
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
RECORDED_KEYWORDS = f"{PROVENANCE_GROUP}:Keywords"   # the keywords altbeam added (a bag)
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


# The caption gate (catalog caption_status): only "ok" captions are written unless
# --include-status adds these; too_small and blank rows have no caption at all. A NULL
# status is a row catalogued before the gate existed: written as it always was.
INCLUDABLE_STATUSES = UNTRUSTED
_NOT_WRITTEN_BECAUSE = {
    UNSURE: "caption marked unsure by the caption gate (the model is not sure of it)",
    CONTRADICTED: "caption marked contradicted by the caption gate (the CNN's concept "
                  "scores contradict an object it names)",
    TOO_SMALL: "the image is too small to describe, so it has no caption",
    BLANK: "the image is nearly uniform, so it has no caption",
}


def parse_include_status(text: str) -> tuple[str, ...]:
    """``--include-status unsure,contradicted`` -> the statuses written besides ok.

    ValueError names the bad status: one that is not a caption status, or too_small /
    blank, which have no caption to write."""
    names = [name.strip() for name in text.split(",")]
    choose = f"choose from {', '.join(INCLUDABLE_STATUSES)} (ok is always written)"
    for name in names:
        if name in NO_CAPTION:
            raise ValueError(f"{name!r} rows are never written: {_NOT_WRITTEN_BECAUSE[name]}; "
                             f"{choose}")
        if not name:
            raise ValueError(f"an empty caption status in {text!r}; {choose}")
        if name not in STATUSES:
            raise ValueError(f"unknown caption status {name!r}; {choose}")
    return tuple(dict.fromkeys(name for name in names if name != OK))


def not_to_write(row: dict, min_score: float | None,
                 include_status: tuple[str, ...]) -> str | None:
    """Why the catalog row is not written at all (a Skip reason), or None: it may be.

    The row's own verdicts, before any file is looked at: its caption status, its
    caption, its score (--include-status, --min-score)."""
    uri, status = row["uri"], row.get("caption_status")
    if status is not None and status != OK and status not in include_status:
        if status in _NOT_WRITTEN_BECAUSE:
            hint = (f"; --include-status {status} writes it"
                    if status in INCLUDABLE_STATUSES else "")
            return f"status_{status}: {uri}: {_NOT_WRITTEN_BECAUSE[status]}{hint}"
        return (f"status_unknown: {uri}: caption status {status!r} is not one this "
                f"writeback knows ({', '.join(STATUSES)}); not written")
    caption = row.get("caption")
    if not caption or not caption.strip():
        return f"no_caption: {uri}: the catalog row has no caption"
    score = row.get("score")
    if min_score is not None and (score is None or score < min_score):
        return f"below_min_score: {uri}: score {score} is below --min-score {min_score}"
    return None


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


def caption_fields(fields) -> list[str]:
    """The fields of ``fields`` that receive the caption (not the keyword lists)."""
    return [f for f in fields if f in CAPTION_FIELDS]


def already_written(check: TextCheck, tags: dict, fields: list[str], caption: str,
                    model_version: str | None) -> bool:
    """The target already carries exactly this caption, from this model, in every
    caption field (keywords: :func:`keywords_to_add`)."""
    if check.ours != caption:
        return False
    if as_text(tags.get(f"{PROVENANCE_GROUP}:ModelVersion", "")) != (model_version or ""):
        return False
    return all(check.values.get(FIELDS[f][1]) == field_value(f, caption)
               for f in caption_fields(fields))


def as_list(value) -> list[str]:
    """A bag/list tag as ``exiftool -j`` gives it (one item: a scalar; none: absent)."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def keywords_to_add(keywords, tags: dict, fields) -> tuple[dict[str, list[str]], list[str]]:
    """({keyword field: the row's keywords it lacks, catalog order}, notes).

    ``tags``: what the target holds before the write. A keyword already there in any
    case ("Dog" for "dog") is not added again; nothing there is removed or moved. A
    keyword longer than IPTC's 64 bytes (UTF-8) goes to XMP only, and a note says so:
    cut, it would be another word."""
    wanted = [k for k in dict.fromkeys(keywords or ()) if k and k.strip()]
    plan: dict[str, list[str]] = {}
    notes: list[str] = []
    for field in fields:
        if field not in KEYWORD_FIELDS:
            continue
        have = {k.casefold() for k in as_list(tags.get(KEYWORD_FIELDS[field][1]))}
        added = []
        for keyword in wanted:
            if keyword.casefold() in have:
                continue
            if field == "iptc_keywords" and len(keyword.encode()) > IPTC_KEYWORD_MAX_BYTES:
                notes.append(f"keyword {quote(keyword)} not added to IPTC:Keywords (over "
                             f"{IPTC_KEYWORD_MAX_BYTES} bytes)")
                continue
            have.add(keyword.casefold())
            added.append(keyword)
        if added:
            plan[field] = added
    return plan, notes


def iptc_needs_utf8(fields, keywords: dict[str, list[str]]) -> bool:
    """Whether the write declares IPTC UTF-8 (-charset iptc=UTF8, CodedCharacterSet):
    for a caption, or for a keyword that is not ASCII (ASCII reads alike in any set)."""
    return "iptc_caption" in fields or not all(
        k.isascii() for k in keywords.get("iptc_keywords", ()))


def keywords_to_record(before: dict, keywords: dict[str, list[str]]) -> list[str]:
    """What this write adds to ``XMP-altbeam:Keywords``, the record of the keywords
    altbeam put in a keyword list (so a reader can tell them from a person's): each
    keyword added to any list, once, unless the record holds it already (any case)."""
    have = {k.casefold() for k in as_list(before.get(RECORDED_KEYWORDS))}
    recorded = []
    for keyword in (k for added in keywords.values() for k in added):
        if keyword.casefold() not in have:
            have.add(keyword.casefold())
            recorded.append(keyword)
    return recorded


def wrong_keywords(before: dict, after: dict, keywords: dict[str, list[str]]) -> list[str]:
    """Keyword tags whose read-back list is not exactly the list before plus those added
    (the record of altbeam's keywords included)."""
    bad = [FIELDS[f][1] for f, added in keywords.items()
           if as_list(after.get(FIELDS[f][1])) != as_list(before.get(FIELDS[f][1])) + added]
    record = as_list(before.get(RECORDED_KEYWORDS)) + keywords_to_record(before, keywords)
    if as_list(after.get(RECORDED_KEYWORDS)) != record:
        bad.append(RECORDED_KEYWORDS)
    return bad


def lost_tags(before: dict, after: dict, written_fields: list[str]) -> list[str]:
    """Pre-existing tags that are missing or changed after a write (volatile ones ignored)."""
    written = {FIELDS[f][1] for f in written_fields}   # keyword lists: wrong_keywords
    if {"iptc_caption", "iptc_keywords"} & set(written_fields):
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
    bad = [FIELDS[f][1] for f in caption_fields(fields)
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
