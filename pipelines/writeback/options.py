"""What a writeback writes where: :class:`WritebackOptions`, its command-line flags, and
the one builder from parsed flags, shared by `altbeam writeback` and `altbeam caption
--write-metadata` so both spell and read them the same way."""
from __future__ import annotations

import argparse
import dataclasses

from altbeam.pipelines.writeback.rules import (
    DEFAULT_FIELDS,
    FIELDS,
    INCLUDABLE_STATUSES,
    KEYWORD_FIELDS,
    caption_fields,
    parse_include_status,
)


@dataclasses.dataclass(frozen=True)
class WritebackOptions:
    fields: tuple[str, ...] = DEFAULT_FIELDS
    overwrite_existing: bool = False
    min_score: float | None = None
    # Caption statuses written besides "ok" (--include-status; rules.not_to_write).
    include_status: tuple[str, ...] = ()
    dry_run: bool = False
    sidecar: bool = False               # write XMP sidecars instead of the images
    sidecar_fallback: bool = False      # sidecars for formats exiftool cannot write
    # "ext": photo.jpg.xmp, "stem": photo.xmp; None: stem for RAW files, else ext
    # (sidecars.naming_for).
    sidecar_naming: str | None = None
    # False: an image written in place keeps its modification time (sidecars always
    # get the time of the write; docs/writeback.md, "Modification time").
    update_mtime: bool = False
    run_id: str = ""
    # When this run began (epoch seconds; 0: when the Annotator starts). An exiftool
    # temp file untouched since before then is a dead run's leftover (see
    # remove_dead_exiftool_tmp).
    started_at: float = 0.0

    def __post_init__(self):
        unknown = set(self.fields) - set(FIELDS)
        if unknown or not self.fields:
            raise ValueError(f"unknown fields {sorted(unknown)}; known: {sorted(FIELDS)}")
        if not caption_fields(self.fields):   # keywords travel with a caption only
            raise ValueError(f"fields {list(self.fields)} name no caption field")
        bad = set(self.include_status) - set(INCLUDABLE_STATUSES)
        if bad:
            raise ValueError(f"include_status {sorted(bad)}: only "
                             f"{', '.join(INCLUDABLE_STATUSES)} can be included")
        if self.sidecar_naming not in (None, "ext", "stem"):
            raise ValueError("sidecar_naming must be 'ext', 'stem' or None")


# The extra fields, by flag (--xmp-description ...), in the order they are written.
_EXTRA_FIELDS = ("xmp_description", "exif_description", "iptc_caption")
# Every option add_writeback_flags adds except --dry-run (argparse dest names).
WRITEBACK_FLAGS = (*_EXTRA_FIELDS, "keywords", "overwrite_existing", "min_score",
                   "include_status", "sidecar", "sidecar_fallback", "sidecar_naming",
                   "update_mtime")


def _include_status_flag(text: str) -> tuple[str, ...]:
    """argparse type of --include-status: a bad status is a usage error naming it."""
    try:
        return parse_include_status(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def add_writeback_flags(group, dry_run: bool) -> None:
    """The options that decide what is written where (``group``: a parser or a group)."""
    group.add_argument("--xmp-description", action="store_true",
                       help="also write XMP-dc:Description")
    group.add_argument("--exif-description", action="store_true",
                       help="also write EXIF:ImageDescription")
    group.add_argument("--iptc-caption", action="store_true",
                       help="also write IPTC:Caption-Abstract (UTF-8, at most 2000 bytes)")
    group.add_argument("--keywords", action="store_true",
                       help="also add the row's catalog keywords (the concepts the model is "
                            "confident of) to XMP-dc:Subject and IPTC:Keywords; keywords "
                            "already there stay, none is added twice")
    group.add_argument("--overwrite-existing", action="store_true",
                       help="replace alt text/descriptions that altbeam did not write")
    group.add_argument("--min-score", type=float, default=None,
                       help="write only captions scoring at least this (the catalog's score: "
                            "mean log-probability per word, e.g. -1.2)")
    group.add_argument("--include-status", type=_include_status_flag, default=None,
                       metavar="STATUS[,STATUS...]",
                       help="also write captions the caption gate marked with these "
                            "statuses (unsure, contradicted); default: only ok captions "
                            "(and rows catalogued before the gate)")
    if dry_run:
        group.add_argument("--dry-run", action="store_true",
                           help="report what would be written; change no file")
    group.add_argument("--sidecar", action="store_true",
                       help="write XMP sidecars instead of touching the images")
    group.add_argument("--sidecar-fallback", action="store_true",
                       help="use a sidecar for formats exiftool cannot write (e.g. BMP)")
    group.add_argument("--sidecar-naming", choices=("ext", "stem"), default=None,
                       help="ext: photo.jpg.xmp (darktable, digiKam; the default for "
                            "images); stem: photo.xmp (Lightroom, Bridge, Capture One; the "
                            "default for RAW files)")
    group.add_argument("--update-mtime", action="store_true",
                       help="give written images the time of the write as modification "
                            "time (default: keep it)")


def given_writeback_flags(args: argparse.Namespace) -> list[str]:
    """The writeback flags set on the command line, as typed (``--min-score`` ...)."""
    return ["--" + f.replace("_", "-") for f in WRITEBACK_FLAGS
            if getattr(args, f) not in (None, False)]


def writeback_options(args: argparse.Namespace, run_id: str,
                      started_at: float) -> WritebackOptions:
    """WritebackOptions from flags parsed with `add_writeback_flags` (no --dry-run: off)."""
    return WritebackOptions(
        fields=("alt_text", *(f for f in _EXTRA_FIELDS if getattr(args, f)),
                *(KEYWORD_FIELDS if args.keywords else ())),
        overwrite_existing=args.overwrite_existing, min_score=args.min_score,
        include_status=args.include_status or (),
        dry_run=getattr(args, "dry_run", False), sidecar=args.sidecar,
        sidecar_fallback=args.sidecar_fallback, sidecar_naming=args.sidecar_naming,
        update_mtime=args.update_mtime, run_id=run_id, started_at=started_at)
