"""Where a catalog row's metadata goes: the image itself or an XMP sidecar, and its name.

One place for the decision, used by :class:`altbeam.pipelines.writeback.files.Annotator`
(which file to write) and by the pipeline's sidecar-name check (which images would
share one sidecar). Rules: docs/writeback.md, "Sidecars" and "RAW files".
"""
from __future__ import annotations

from altbeam.pipelines.writeback.items import Skip
from altbeam.pipelines.writeback.options import WritebackOptions
from altbeam.pipelines.writeback.rules import NOT_WRITABLE_IN_PLACE, is_raw

NAMINGS = ("ext", "stem")


def sidecar_path(image: str, naming: str) -> str:
    """The sidecar of ``image``: ``dir/photo.jpg.xmp`` ("ext") or ``dir/photo.xmp`` ("stem").

    Built from the base name only, so it always lies in the image's own folder.
    """
    folder, name = image.rsplit("/", 1) if "/" in image else ("", image)
    if name in ("", ".", ".."):
        raise Skip(f"bad_name: {image}: no file name to derive a sidecar name from")
    if naming == "stem" and "." in name.lstrip("."):
        name = name[:name.rfind(".")]
    return f"{folder}/{name}.xmp" if folder else f"{name}.xmp"


def goes_to_sidecar(row: dict, options: WritebackOptions) -> bool:
    """Whether the row's text goes to a sidecar (raises Skip: format_not_writable).

    A RAW file always does: altbeam never writes into a RAW file.
    """
    if options.sidecar or is_raw(row):
        return True
    if (row.get("format") or "").upper() in NOT_WRITABLE_IN_PLACE:
        if not options.sidecar_fallback:
            raise Skip(f"format_not_writable: {row['uri']}: exiftool cannot write "
                       f"{row.get('format')} files; use --sidecar or --sidecar-fallback")
        return True
    return False


def naming_for(row: dict, options: WritebackOptions) -> str:
    """``--sidecar-naming`` when given; else "stem" (IMG_0001.xmp) for a RAW file, the
    name Lightroom, Bridge and Capture One read, and "ext" (photo.jpg.xmp) otherwise."""
    return options.sidecar_naming or ("stem" if is_raw(row) else "ext")


def sidecar_names(row: dict, options: WritebackOptions) -> list[str]:
    """The sidecar names to look for, the one to create first.

    A RAW file's sidecar may already exist under the other convention (darktable's
    IMG_0001.CR2.xmp, or Lightroom's IMG_0001.xmp): that one is updated rather than a
    second created beside it. An image's sidecar is looked for under the chosen name
    only: ``photo.xmp`` beside ``photo.jpg`` is as likely the sidecar of ``photo.CR2``.
    """
    first = naming_for(row, options)
    names = [sidecar_path(row["uri"], first)]
    if is_raw(row) and not row.get(STEM_SHARED):
        names.append(sidecar_path(row["uri"], NAMINGS[1 - NAMINGS.index(first)]))
    return names


# Set by the pipeline on a RAW row whose stem other catalogued images share: it uses its
# own ``photo.CR2.xmp`` only, never an existing ``photo.xmp`` that may be another's.
STEM_SHARED = "_stem_shared"


def shared_sidecar_key(row: dict, options: WritebackOptions) -> str:
    """What images that may use one sidecar have in common (else the uri itself).

    Images with one stem write ``stem.xmp`` when it is their sidecar's name, and a
    RAW file may update an existing ``stem.xmp`` whichever name is chosen.
    """
    try:
        if is_raw(row) or (goes_to_sidecar(row, options)
                           and naming_for(row, options) == "stem"):
            return sidecar_path(row["uri"], "stem")
    except Skip:
        pass
    return row["uri"]


def split_shared_sidecars(rows: list[dict], options: WritebackOptions
                          ) -> tuple[list[dict], list[dict]]:
    """Rows with one :func:`shared_sidecar_key` -> (rows to write, rows to skip).

    One row: written. Several, each with its own ``photo.ext.xmp`` (RAW files under
    ``--sidecar-naming ext``): written, each marked :data:`STEM_SHARED`. Several, one
    of them writing ``stem.xmp``: all skipped, rather than one writing over the other's.
    """
    if len(rows) == 1:
        return rows, []
    if all(naming_for(r, options) == "ext" for r in rows):
        return [{**r, STEM_SHARED: True} for r in rows], []
    return [], rows
