"""Recovering cleanly: after a write that failed its checks, and after a writeback that
was killed mid-run.

:func:`restore_original` puts a photo (or its sidecar) back as it was, bytes, mode,
owner and times, when a write failed its verification.

A killed writeback can leave two things behind: exiftool's ``<file>_exiftool_tmp``
(which makes exiftool refuse every later write of that photo), and photos it finished
whose log never reached the catalog (so their sha256 no longer matches the catalog
row). :func:`remove_dead_exiftool_tmp` clears the first when no live writer owns it;
:func:`unlogged_own_write` recognises the second as ``already_written`` instead of
``changed_since_catalogued``. Both are used by
:class:`altbeam.pipelines.writeback.files.Annotator`. Rules and guarantees: docs/writeback.md.
"""
from __future__ import annotations

import datetime as dt
import os
import stat
import uuid

from altbeam.pipelines.writeback.items import Item, Skip
from altbeam.pipelines.writeback.rules import (
    GENERATOR,
    PROVENANCE_GROUP,
    already_written,
    as_text,
    check_texts,
    keywords_to_add,
    pixel_frames,
    supported_fields,
)

EXIFTOOL_TMP_SUFFIX = "_exiftool_tmp"   # exiftool writes <file>_exiftool_tmp, then renames


def restore_original(item: Item) -> None:
    """Put the original bytes back (remote objects were never uploaded)."""
    if item.new_sidecar_tmp and os.path.exists(item.new_sidecar_tmp):
        os.unlink(item.new_sidecar_tmp)
    if item.remote is not None:
        return
    if item.use_sidecar:
        if item.sidecar_before is not None:
            _atomic_write(item.sidecar_local, item.sidecar_before, item.target_times)
        return
    with open(item.path, "rb") as f:
        if f.read() == item.original:
            return
    _atomic_write(item.path, item.original, item.target_times)


def _atomic_write(path: str, data: bytes, times: tuple[int, int] | None = None) -> None:
    """Replace ``path`` with ``data`` via a temp file beside it (keeps mode and owner; and
    ``times``, (atime_ns, mtime_ns), when given: the file as it was)."""
    st = os.stat(path) if os.path.exists(path) else None
    tmp = f"{path}.altbeam-restore-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if st is not None:
        os.chmod(tmp, st.st_mode & 0o7777)
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except PermissionError:
            pass
    if times is not None:
        os.utime(tmp, ns=times)
    os.replace(tmp, path)


def remove_dead_exiftool_tmp(path: str, run_started: float) -> str | None:
    """Remove ``<path>_exiftool_tmp`` if a dead earlier run left it; return its path if so.

    exiftool refuses to write a file while its temp file exists ("Temporary file
    already exists"), so a writeback killed mid-write would block the photo forever.
    The rule: the temp file is a dead run's leftover only if it is a regular file and
    neither its data nor its inode changed (mtime, ctime) since this run began. A live
    writer, ours or another process's, keeps touching the file until it renames it a
    moment later, so a temp file that has been still since before this run started,
    and is still there once this run reaches the photo, belongs to nobody alive. (A
    writer that a debugger or SIGSTOP froze since before our start, or a file server
    whose clock lags ours by more than that, could fool the rule.) Anything else stays,
    and the photo is skipped as ``concurrent_write``: never delete a live write.
    """
    tmp = path + EXIFTOOL_TMP_SUFFIX
    try:
        st = os.lstat(tmp)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode) or max(st.st_mtime, st.st_ctime) >= run_started:
        raise Skip(f"concurrent_write: {path}: {tmp} exists and "
                   + ("is not a regular file" if not stat.S_ISREG(st.st_mode) else
                      "changed after this run started (another process may be writing "
                      "the photo)") + "; left alone, run again later")
    again = os.lstat(tmp)    # the same still file, not one that replaced it meanwhile
    if (again.st_ino, again.st_mtime_ns, again.st_ctime_ns) != (
            st.st_ino, st.st_mtime_ns, st.st_ctime_ns):
        raise Skip(f"concurrent_write: {path}: {tmp} changed while checking; left alone")
    os.unlink(tmp)
    return tmp


_TIME_SLACK = dt.timedelta(minutes=1)   # clocks of the caption and writeback machines


def unlogged_own_write(item: Item, wanted: tuple[str, ...]) -> bool:
    """The changed file is this row's caption written by an altbeam run whose log was lost.

    A writeback killed mid-run leaves complete files (exiftool renames into place) but
    no log, so the sha256 chain (``_produced_sha256``) cannot know them. Accepted as
    ``already_written`` only when all of these hold:

    * the write went into the image (a sidecar write never changes the image's bytes);
    * the provenance says altbeam wrote exactly this caption from this model version,
      every field asked for holds it, and so do the keyword lists (--keywords): nothing
      would be written anyway;
    * it was written after the row was catalogued, by a run not in the writeback log
      (a logged run's write would be in the chain, so a file that still differs was
      changed after that write);
    * the file is a whole image of the catalogued format and size (after orientation).

    The pixels cannot be compared: the catalog keeps the sha256 of the original bytes
    only, and no hash of the decoded pixels. A pixel edit that kept the XMP, format and
    size would therefore pass. That is acceptable because the only consequence is the
    reason: such a file is skipped either way, never written.
    """
    row, tags = item.row, item.tags
    if item.use_sidecar or not isinstance(tags, dict):
        return False
    p = PROVENANCE_GROUP
    if (as_text(tags.get(f"{p}:Generator", "")) != GENERATOR
            or as_text(tags.get(f"{p}:RunId", "")) in (row.get("_logged_write_runs") or ())):
        return False
    check = check_texts(tags)
    fields = supported_fields(str(tags.get("File:FileTypeExtension", "")), wanted, False)
    if not fields or not already_written(check, tags, fields, row["caption"],
                                         row.get("model_version")):
        return False
    if keywords_to_add(row.get("keywords"), tags, fields)[0]:
        return False
    written_at = _exif_time(tags.get(f"{p}:WrittenAt"))
    processed_at = row.get("processed_at")
    if written_at is None or (processed_at is not None
                              and written_at < _utc(processed_at) - _TIME_SLACK):
        return False
    try:
        from PIL import Image

        with Image.open(item.path) as im:
            size, fmt = im.size, im.format
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):   # EXIF orientation: rotated
                size = size[::-1]
        pixel_frames(item.path)                                # decodes whole
    except Exception:  # noqa: BLE001 - not a whole image: not ours
        return False
    return fmt == row.get("format") and size == (row.get("width"), row.get("height"))


def _exif_time(value) -> dt.datetime | None:
    """exiftool's "YYYY:MM:DD HH:MM:SSZ" (as WrittenAt is written) -> aware UTC datetime."""
    try:
        return dt.datetime.strptime(str(value).replace("+00:00", "Z"),
                                    "%Y:%m:%d %H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
