"""The writeback of one batch of catalog rows: check, write, verify, restore, log.

:class:`Annotator` turns catalog rows into WRITEBACK_SCHEMA decision rows. Per batch
it makes three exiftool calls on one long-lived session (read all, write all, read
all again); each file has its own command inside a call, so one bad file fails alone.
Putting a photo back after a failed write, and recovering after a killed writeback
(dead exiftool temp files, writes whose log was lost), live in
:mod:`altbeam.pipelines.writeback.recovery`; image or sidecar, and the sidecar's name,
in :mod:`altbeam.pipelines.writeback.sidecars`; the per-photo state and the log row in
:mod:`altbeam.pipelines.writeback.items`. Rules and guarantees: docs/writeback.md.
"""
from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
import uuid

from altbeam.pipelines.runtime.uris import local_path
from altbeam.pipelines.writeback.exiftool_session import ExifResult, ExifToolSession, file_arg
from altbeam.pipelines.writeback.gcs import ConcurrentChange, GcsObjects
from altbeam.pipelines.writeback.items import Item, Skip, decision_row, sha256_hex
from altbeam.pipelines.writeback.options import WritebackOptions
from altbeam.pipelines.writeback.recovery import (
    remove_dead_exiftool_tmp,
    restore_original,
    unlogged_own_write,
)
from altbeam.pipelines.writeback.rules import (
    FIELDS,
    GENERATOR,
    PROVENANCE_GROUP,
    RAW_TYPES,
    RECORDED_KEYWORDS,
    XMP_FIELDS,
    already_written,
    caption_fields,
    check_texts,
    field_value,
    iptc_needs_utf8,
    keywords_to_record,
    lost_tags,
    not_to_write,
    persons_in_fields,
    quote,
    same_pixels,
    supported_fields,
    wrong_fields,
    wrong_keywords,
)
from altbeam.pipelines.writeback.sidecars import goes_to_sidecar, sidecar_names, sidecar_path

__all__ = ["Annotator", "sidecar_path"]


def _writable(path: str) -> bool:
    """Writable, honouring read-only permission bits even for root (who bypasses them)."""
    st = os.stat(path)
    return bool(st.st_mode & 0o222) and os.access(path, os.W_OK)


class Annotator:
    """Catalog rows -> decision rows, using one exiftool session (and GCS when needed)."""

    def __init__(self, options: WritebackOptions, session: ExifToolSession, gcs=None):
        self.options = options
        self.session = session
        self._gcs = gcs
        self._tmpdir = tempfile.mkdtemp(prefix="altbeam-writeback-")
        self._started_at = options.started_at or time.time()

    def close(self):
        import shutil

        shutil.rmtree(self._tmpdir, ignore_errors=True)

    @property
    def gcs(self) -> GcsObjects:
        if self._gcs is None:
            self._gcs = GcsObjects()
        return self._gcs

    # -- the batch ----------------------------------------------------------------
    def annotate(self, rows: list[dict]) -> list[dict]:
        decisions: list[dict | None] = [None] * len(rows)
        items: dict[int, Item] = {}
        for i, row in enumerate(rows):
            try:
                items[i] = self._prepare(row)
            except Skip as s:
                decisions[i] = self._decision(row, s.action, s.reason)
        self._read_tags(items)
        to_write: dict[int, Item] = {}
        for i, item in items.items():
            try:
                self._decide(item)
                to_write[i] = item
            except Skip as s:
                decisions[i] = self._decision(item.row, s.action, s.reason, item)
        results = self.session.run([self._write_command(it) for it in to_write.values()])
        after = self._read_after(to_write, results)
        for (i, item), result in zip(to_write.items(), results):
            decisions[i] = self._finish(item, result, after.get(i))
        for item in items.values():
            GcsObjects.cleanup(item.remote, item.remote_sidecar)
        self.session.discard_value_files()
        return decisions  # type: ignore[return-value]

    # -- before writing -----------------------------------------------------------
    def _prepare(self, row: dict) -> Item:
        opts, uri = self.options, row["uri"]
        reason = not_to_write(row, opts.min_score, opts.include_status)
        if reason:
            raise Skip(reason)
        use_sidecar = goes_to_sidecar(row, opts)
        side_uris = sidecar_names(row, opts)
        if uri.startswith("gs://"):   # the one object store written (through its own client)
            item = self._prepare_gcs(row, side_uris, use_sidecar)
        else:
            item = self._prepare_local(row, side_uris, use_sidecar)
        sha = sha256_hex(item.original)
        if sha != row["sha256"] and sha not in (row.get("_produced_sha256") or ()):
            # Decided once the tags are read: it may be a write whose log was lost.
            item.changed = (f"changed_since_catalogued: {uri}: sha256 is {sha[:12]}…, the "
                            f"catalog row has {row['sha256'][:12]}… (nor is it a version "
                            "altbeam wrote); caption it again first")
        return item

    def _prepare_local(self, row: dict, side_uris: list[str], use_sidecar: bool) -> Item:
        uri = row["uri"]
        path = os.path.abspath(local_path(uri))
        if not os.path.lexists(path):
            raise Skip(f"missing: {uri}: file not found")
        if os.path.islink(path):
            raise Skip(f"symlink: {uri}: is a symlink; writing would replace the link, "
                       "so it is left alone (annotate its target instead)")
        # The first sidecar name that exists (a RAW's, under either convention), else
        # the first, which is created.
        side_uri = next((u for u in side_uris if os.path.lexists(local_path(u))),
                        side_uris[0])
        side = os.path.abspath(local_path(side_uri))
        if os.path.dirname(side) != os.path.dirname(path):   # cannot happen; belt and braces
            raise Skip(f"bad_name: {uri}: sidecar {side} would leave the image's folder")
        if os.path.islink(side):
            raise Skip(f"symlink: {side}: the sidecar is a symlink; not written through")
        folder = os.path.dirname(path)
        target = side if use_sidecar else path
        if os.path.exists(target) and not _writable(target):
            raise Skip(f"read_only_file: {target}: file is read-only "
                       f"(mode {os.stat(target).st_mode & 0o777:o}); not modified")
        if not _writable(folder):
            raise Skip(f"read_only_folder: {folder}: folder is read-only; {target} cannot "
                       "be replaced safely (exiftool writes a temp file beside it)")
        with open(path, "rb") as f:
            original = f.read()
        before = None
        if os.path.exists(side):
            with open(side, "rb") as f:
                before = f.read()
        times = None
        if os.path.exists(target):
            st = os.stat(target)
            times = (st.st_atime_ns, st.st_mtime_ns)
        return Item(row, path, original, side, side, use_sidecar, sidecar_before=before,
                    target_times=times)

    def _prepare_gcs(self, row: dict, side_uris: list[str], use_sidecar: bool) -> Item:
        uri = row["uri"]
        stem = os.path.join(self._tmpdir, uuid.uuid4().hex)
        ext = os.path.splitext(uri)[1][:10]
        try:
            remote = self.gcs.download(uri, stem + ext)
            remote_side = None      # the first name that exists (a RAW's: either), else it
            for candidate in side_uris:
                found = self.gcs.download(candidate, stem + ".xmp", required=False)
                remote_side = remote_side or found
                if found.generation is not None:
                    remote_side = found
                    break
            side_uri = remote_side.uri
        except FileNotFoundError as e:
            raise Skip(f"missing: {e}") from e
        except Exception as e:  # noqa: BLE001 - 403, network: this object fails alone
            raise Skip(f"unreadable: {uri}: cannot download: {type(e).__name__}: {e}",
                       "failed") from e
        with open(remote.local_path, "rb") as f:
            original = f.read()
        before = None
        if remote_side.generation is not None:
            with open(remote_side.local_path, "rb") as f:
                before = f.read()
        return Item(row, remote.local_path, original, remote_side.local_path, side_uri,
                    use_sidecar, remote=remote, remote_sidecar=remote_side,
                    sidecar_before=before)

    def _read_tags(self, items: dict[int, Item]) -> None:
        paths = [it.path for it in items.values()]
        sides = [it.sidecar_local for it in items.values() if it.sidecar_before is not None]
        found = self.session.read_json(paths + sides)
        by_path = dict(zip(paths + sides, found))
        for it in items.values():
            it.tags = by_path[it.path]
            if it.sidecar_before is not None:
                it.sidecar_tags = by_path[it.sidecar_local]

    def _decide(self, item: Item) -> None:
        uri, opts, caption = item.row["uri"], self.options, item.row["caption"]
        if item.changed is not None:
            if unlogged_own_write(item, opts.fields):
                raise Skip(f"already_written: {uri}: the caption is already there (written "
                           "by an altbeam run whose log never reached the catalog)")
            raise Skip(item.changed)
        for tags, what in ((item.tags, uri), (item.sidecar_tags, item.sidecar_uri)):
            if isinstance(tags, ExifResult):
                raise Skip(f"unreadable: {what}: exiftool cannot read it: {tags.message()}",
                           "failed")
        raw_type = str(item.tags.get("File:FileType", "")).upper()
        if not item.use_sidecar and raw_type in RAW_TYPES:   # a RAW file's bytes stay as they are
            raise Skip(f"raw_file: {uri}: exiftool reads a {raw_type} RAW file, catalogued as "
                       f"{item.row.get('format')}; RAW files are annotated in sidecars only "
                       "(caption it again under a RAW file's name, or use --sidecar)")
        file_type = str(item.tags.get("File:FileTypeExtension", "")).upper()
        item.fields = supported_fields(file_type, opts.fields, item.use_sidecar)
        left_out = [FIELDS[f][0] for f in opts.fields if f not in item.fields]
        if left_out:
            where = "an XMP sidecar" if item.use_sidecar else f"{file_type} files"
            item.notes.append(f"not written ({where} cannot hold them): {', '.join(left_out)}")
        if not item.fields:
            raise Skip(f"no_field: {uri}: none of the chosen fields fits; {item.notes[0]}")
        check = check_texts(item.tags, item.sidecar_tags or {})
        in_the_way = persons_in_fields(check, item.fields)
        if in_the_way and not opts.overwrite_existing:
            tag, text = in_the_way[0]
            raise Skip(f"existing_text: {uri}: {tag} already holds {quote(text)}, not written "
                       "by altbeam; left alone (--overwrite-existing to replace)")
        written = {FIELDS[f][1] for f in item.fields}
        _note_persons(item, [t for t, _ in check.persons if t in written],
                      [t for t, _ in check.persons if t not in written])
        item.plan_keywords()
        if not item.keywords and already_written(check, item.target_tags, item.fields,
                                                 caption, item.row.get("model_version")):
            raise Skip(f"already_written: {uri}: the caption is already there")
        if opts.dry_run:
            raise Skip(self._would(item), "would_write")
        if item.remote is None:   # gs:// copies live in our private temp folder
            removed = remove_dead_exiftool_tmp(item.target_path, self._started_at)
            if removed:
                item.notes.append(f"removed {removed}, left by an earlier run that died")

    def _would(self, item: Item) -> str:
        target = item.sidecar_uri if item.use_sidecar else item.row["uri"]
        return "; ".join([f"dry_run: would write {target}", *item.notes])

    # -- writing ------------------------------------------------------------------
    def _write_command(self, item: Item) -> list[str]:
        row, s = item.row, self.session
        cmd: list[str] = []
        captioned = caption_fields(item.fields)
        for f in captioned:   # XMP: the x-default entry; other languages stay as they are
            tag = FIELDS[f][0] + ("-x-default" if f in XMP_FIELDS else "")
            cmd.append(f"-{tag}<={s.value_file(field_value(f, row['caption']))}")
        for f, added in item.keywords.items():   # "+=": after those already there
            cmd += [f"-{FIELDS[f][0]}+<={s.value_file(k)}" for k in added]
        if iptc_needs_utf8(item.fields, item.keywords):   # so readers decode it right
            cmd += ["-charset", "iptc=UTF8", "-IPTC:CodedCharacterSet=UTF8"]
        p = PROVENANCE_GROUP
        cmd += [f"-{p}:Generator={GENERATOR}",
                f"-{p}:Caption<={s.value_file(row['caption'])}",
                f"-{p}:ModelVersion<={s.value_file(row.get('model_version') or '')}",
                f"-{p}:RunId<={s.value_file(self.options.run_id)}",
                f"-{p}:WrittenAt={dt.datetime.now(dt.UTC):%Y:%m:%d %H:%M:%SZ}"]
        if row.get("score") is not None:
            cmd.append(f"-{p}:Score={float(row['score']):.6g}")
        cmd += [f"-{p}:Fields={FIELDS[f][0]}" for f in captioned]
        cmd += [f"-{RECORDED_KEYWORDS}+<={s.value_file(k)}"   # "+=": earlier runs' stay
                for k in keywords_to_record(item.target_tags, item.keywords)]
        if item.use_sidecar and item.sidecar_before is None:
            # A new sidecar: exiftool creates it under a temp name in the same folder,
            # renamed into place after verification (no half-written sidecar).
            folder, name = os.path.split(item.sidecar_local)
            item.new_sidecar_tmp = os.path.join(
                folder, f".{name}.altbeam-{uuid.uuid4().hex[:8]}.xmp")
            return cmd + ["-o", file_arg(item.new_sidecar_tmp)]
        if self._keeps_mtime(item):   # to the second; _finish puts back the nanoseconds
            cmd.append("-P")
        return ["-overwrite_original", *cmd, file_arg(item.target_path)]

    def _keeps_mtime(self, item: Item) -> bool:
        """An image written in place keeps its modification time unless --update-mtime.

        A sidecar's time always moves: photo managers (Lightroom, darktable) notice an
        updated sidecar by its time, and the image beside it is not touched at all.
        """
        return not (item.use_sidecar or self.options.update_mtime
                    or item.target_times is None)

    def _written_path(self, item: Item) -> str:
        return item.new_sidecar_tmp or item.target_path

    def _read_after(self, to_write: dict[int, Item], results: list[ExifResult]) -> dict:
        ok = [(i, it) for (i, it), r in zip(to_write.items(), results) if r.status == 0]
        found = self.session.read_json([self._written_path(it) for _, it in ok])
        return {i: tags for (i, _), tags in zip(ok, found)}

    def _finish(self, item: Item, result: ExifResult, after) -> dict:
        row = item.row
        target = item.sidecar_uri if item.use_sidecar else row["uri"]
        problem = None
        if result.status != 0:
            problem = f"exiftool_failed: {target}: {result.message()}"
        elif isinstance(after, ExifResult) or after is None:
            problem = f"verify_failed: {target}: cannot read it back: " + (
                after.message() if after else "no answer")
        else:
            problem = self._verify(item, after, target)
        if problem is None and item.remote is not None:
            problem = self._upload(item)
        if problem is not None:
            restore_original(item)
            action = "skipped" if problem.startswith("concurrent_change") else "failed"
            return self._decision(row, action, problem, item)
        if self._keeps_mtime(item) and item.remote is None:
            try:
                os.utime(item.path, ns=item.target_times)
            except OSError as e:   # not the owner of the file: its time moved, say so
                item.notes.append(f"modification time not kept: {e}")
        if item.new_sidecar_tmp and item.remote is None:
            try:  # a hard link never replaces a sidecar that appeared meanwhile
                os.link(item.new_sidecar_tmp, item.sidecar_local)
            except FileExistsError:
                restore_original(item)
                return self._decision(row, "skipped", f"concurrent_change: {target}: a "
                                      "sidecar appeared while writing; not replaced", item)
            except OSError:  # filesystems without hard links
                os.replace(item.new_sidecar_tmp, item.sidecar_local)
            if os.path.exists(item.new_sidecar_tmp):
                os.unlink(item.new_sidecar_tmp)
        with open(item.path, "rb") as f:
            sha_after = sha256_hex(f.read())
        mtime_after = None if item.remote else os.stat(item.target_path).st_mtime_ns
        return self._decision(row, "written", "; ".join(["written", *item.notes]), item,
                              sha_after=sha_after, mtime_after_ns=mtime_after)

    def _verify(self, item: Item, after: dict, target: str) -> str | None:
        bad = (wrong_fields(after, item.fields, item.row["caption"])
               + wrong_keywords(item.target_tags, after, item.keywords))
        if bad:
            return f"verify_failed: {target}: read back differs for {', '.join(bad)}"
        lost = lost_tags(item.target_tags, after, item.fields)
        if lost:
            return f"verify_failed: {target}: existing metadata lost: {', '.join(lost[:5])}"
        with open(item.path, "rb") as f:
            current = f.read()
        if item.use_sidecar and current != item.original:
            return f"verify_failed: {item.row['uri']}: the image changed during a sidecar write"
        if not item.use_sidecar:
            try:
                if not same_pixels(item.original, item.path):
                    return f"verify_failed: {target}: decoded pixels differ after writing"
            except Exception as e:  # noqa: BLE001 - undecodable after writing is a failure
                return f"verify_failed: {target}: cannot decode after writing: {e}"
        return None

    def _upload(self, item: Item) -> str | None:
        obj = item.remote_sidecar if item.use_sidecar else item.remote
        if item.new_sidecar_tmp:
            os.replace(item.new_sidecar_tmp, obj.local_path)
            item.new_sidecar_tmp = None
        try:
            self.gcs.upload(obj)
        except ConcurrentChange as e:
            return f"concurrent_change: {e}; not overwritten"
        except Exception as e:  # noqa: BLE001 - a failed upload leaves the object as it was
            return f"upload_failed: {obj.uri}: {type(e).__name__}: {e}"
        return None

    def _decision(self, row: dict, action: str, reason: str, item: Item | None = None,
                  sha_after: str | None = None, mtime_after_ns: int | None = None) -> dict:
        return decision_row(row, action, reason, self.options.run_id, item, sha_after,
                            mtime_after_ns)


def _note_persons(item: Item, replaced: list[str], kept: list[str]) -> None:
    """Say in the decision's reason whose text was replaced, and whose stays beside ours."""
    if replaced:
        item.notes.append(f"replaces a person's text (--overwrite-existing): "
                          f"{', '.join(replaced)}")
    if kept:
        item.notes.append(f"a person's text left as it was: {', '.join(kept)}")
