"""Inputs of the caption pipeline: folders, globs, ``gs://`` prefixes and URI lists.

Every input goes through Beam's ``FileSystems`` (so any Beam filesystem works), except
that local directories are walked with ``os.walk`` so symlinks can be policed:

* a local directory (a path or a ``file://`` URI: see runtime.uris) is read
  recursively; a glob (``*``, ``?``, ``[``, ``**``) is matched as given; a
  ``gs://bucket/prefix`` (or any other scheme) that is not an object is read as a
  prefix, recursively; a single file is taken as is;
* ``@list.txt`` (or ``--input-list FILE``) names a text file with one URI per line
  (blank lines and ``#`` comments ignored);
* every regular file found under a folder, glob or prefix is accounted for: a
  candidate image (decided by content: caption.formats.skip_reason; a file named
  like a picture or camera RAW is always one), or a `SkippedFile` (not an image, or
  an XMP sidecar), counted in the run summary and never an errors row. With
  ``--extensions`` given (anything but its default, ``IMAGE_EXTENSIONS``), only files
  with those extensions are candidates and the rest are skipped as
  "not_in_extensions". A file named explicitly is always a candidate;
* candidates larger than ``--max-file-size`` become error rows;
* security: a symlink whose target lies outside the input root it was found under is
  not followed (it becomes an error row) unless ``--follow-symlinks``; symlinked
  directories are only descended with ``--follow-symlinks``.

The listing decisions are plain functions (`list_input` and the ones it calls), so
they run and are tested without a pipeline; `ExpandInput` only counts and routes.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import re

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from altbeam.pipelines.caption.decode import read_error_type
from altbeam.pipelines.caption.formats import (
    PICTURE_EXTENSIONS,
    RAW_FAMILIES,
    extension,
    skip_reason,
)
from altbeam.pipelines.runtime.progress import Tally
from altbeam.pipelines.runtime.uris import is_remote, local_path

# Every extension named like a picture Pillow opens or a camera RAW; as the value of
# --extensions (its default) it means "every file, decided by content".
IMAGE_EXTENSIONS = frozenset(PICTURE_EXTENSIONS | set(RAW_FAMILIES))

DEFAULT_MAX_FILE_SIZE = 200 * 1024 * 1024   # 200 MiB
_GLOB = re.compile(r"[*?\[]")


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """One candidate image as listed (nothing read yet)."""

    uri: str
    size_bytes: int
    mtime_us: int | None                  # microseconds since the epoch, UTC
    known_sha256: str | None = None       # catalogued hash, when size/mtime changed
    # Versions altbeam's writeback produced from the catalogued bytes (same pixels,
    # alt text added): reading one of these means the image itself is unchanged.
    known_versions: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ListError:
    uri: str
    error_type: str
    message: str


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    """A listed file that is not taken: counted in the run summary, not an error."""

    uri: str
    extension: str      # lower-cased with its dot; "" when the name has none
    reason: str         # not_an_image | xmp_sidecar | not_in_extensions


def by_content(extensions: frozenset[str] | None) -> bool:
    """Whether a listing decides by content (``extensions`` None or the default)."""
    return extensions is None or frozenset(extensions) == IMAGE_EXTENSIONS


def candidate_or_skip(record: FileRecord, extensions: frozenset[str] | None,
                      open_file) -> FileRecord | SkippedFile:
    """A listed file as a candidate image or as a skip (see the module doc)."""
    if by_content(extensions):
        reason = skip_reason(record.uri, open_file)
    else:
        reason = None if has_image_extension(record.uri, extensions) else "not_in_extensions"
    return record if reason is None else SkippedFile(record.uri, extension(record.uri), reason)


def read_input_list(path: str) -> list[str]:
    """URIs from a list file (local or any Beam filesystem), one per line."""
    with FileSystems.open(path) as f:
        text = f.read().decode("utf-8")
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def expand_input_args(inputs: list[str], input_lists: list[str] | None = None) -> list[str]:
    """Positional inputs plus list files (``@FILE`` or ``--input-list``), in order, deduplicated."""
    out: list[str] = []
    for item in inputs:
        out.extend(read_input_list(item[1:]) if item.startswith("@") else [item])
    for path in input_lists or []:
        out.extend(read_input_list(path))
    seen: set[str] = set()
    return [u for u in out if not (u in seen or seen.add(u))]


def has_image_extension(uri: str, extensions: frozenset[str]) -> bool:
    """The file name's extension (lower-cased, with its dot) is one of ``extensions``."""
    return os.path.splitext(uri.rsplit("/", 1)[-1])[1].lower() in extensions


def within_root(path: str, root: str) -> bool:
    """``path`` is ``root`` or lies under it (both already resolved by realpath)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def glob_root(pattern: str) -> str:
    """The literal directory in front of the first glob character."""
    head = _GLOB.split(pattern, maxsplit=1)[0]
    return os.path.dirname(head) or "."


def list_input(spec: str, extensions: frozenset[str] | None = IMAGE_EXTENSIONS,
               max_file_size: int = DEFAULT_MAX_FILE_SIZE, follow_symlinks: bool = False
               ) -> list[FileRecord | ListError | SkippedFile]:
    """Everything one input argument yields: its image files, a skip per other file,
    and an error per file or folder that cannot be taken (an input that cannot be
    listed at all: one error)."""
    try:
        if is_remote(spec):
            items = list(list_remote(spec, extensions))
        else:
            items = list(list_local(local_path(spec), extensions, follow_symlinks))
    except Exception as e:  # noqa: BLE001 - an unreadable input must not stop the run
        return [ListError(spec, type(e).__name__, f"{spec}: cannot list input: {e}")]
    return [size_checked(item, max_file_size) for item in items]


def size_checked(item: FileRecord | ListError, max_file_size: int) -> FileRecord | ListError:
    """A file over ``max_file_size`` becomes a "too_large" error; anything else passes."""
    if isinstance(item, FileRecord) and item.size_bytes > max_file_size:
        return ListError(item.uri, "too_large",
                         f"{item.uri}: file is {item.size_bytes:,} bytes, over the "
                         f"--max-file-size limit of {max_file_size:,} bytes")
    return item


# -- local paths: walked here so symlinks can be checked against the root ----------
def _local_listed(path: str, real_root: str, extensions, follow_symlinks: bool):
    """One file found in a folder or glob: stat-checked first (the symlink policy
    holds before any byte is read), then a candidate or a skip."""
    item = stat_file(path, real_root, follow_symlinks)
    if isinstance(item, ListError):
        return item
    return candidate_or_skip(item, extensions, lambda: open(path, "rb"))


def list_local(spec: str, extensions: frozenset[str] | None, follow_symlinks: bool = False):
    """A folder (recursive), a glob or one file -> FileRecords, SkippedFiles, ListErrors."""
    path = os.path.abspath(os.path.expanduser(spec))
    if os.path.isdir(path):
        yield from walk_folder(path, extensions, follow_symlinks)
    elif _GLOB.search(spec):
        root = os.path.realpath(glob_root(path))
        for result in FileSystems.match([path]):
            for md in result.metadata_list:
                if not os.path.isdir(md.path):
                    yield _local_listed(md.path, root, extensions, follow_symlinks)
    elif os.path.lexists(path):
        # An explicitly named file is taken whatever its extension.
        yield stat_file(path, os.path.realpath(os.path.dirname(path)), follow_symlinks)
    else:
        yield ListError(spec, "not_found", f"{spec}: input does not exist")


def walk_folder(root: str, extensions: frozenset[str] | None = IMAGE_EXTENSIONS,
                follow_symlinks: bool = False):
    """Every file under ``root`` (sorted) as a candidate, skip or error, and an error
    per folder it cannot list."""
    real_root = os.path.realpath(root)
    seen = {real_root}
    unlistable: list[ListError] = []

    def walk_error(e: OSError):
        # os.walk skips a folder it cannot list; say so instead of losing its files.
        where = e.filename or root
        unlistable.append(ListError(where, read_error_type(e),
                                    f"{where}: cannot list folder: {e.strerror or e}"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_symlinks,
                                                onerror=walk_error):
        yield from unlistable
        unlistable.clear()
        # Without --follow-symlinks os.walk skips symlinked dirs; with it, never
        # enter the same real directory twice (symlink cycles).
        keep = []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real not in seen:
                seen.add(real)
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            yield _local_listed(os.path.join(dirpath, name), real_root, extensions,
                                follow_symlinks)
    yield from unlistable


def stat_file(path: str, real_root: str, follow_symlinks: bool = False
              ) -> FileRecord | ListError:
    """One local file as a FileRecord, or why it is not taken (a symlink leaving
    ``real_root`` without ``follow_symlinks``, a broken link or loop, a failed stat)."""
    # One file that vanished or loops fails alone, never the whole folder's listing.
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return ListError(path, "symlink_loop",
                             f"{path}: symlink loop (too many levels of symbolic links)")
        if e.errno == errno.ENOENT and os.path.islink(path):
            return ListError(path, "broken_symlink", f"{path}: symlink target "
                             f"{os.path.realpath(path)} does not exist")
        return ListError(path, read_error_type(e), f"{path}: cannot stat: {e.strerror or e}")
    real = os.path.realpath(path)
    if not follow_symlinks and not within_root(real, real_root):
        return ListError(path, "symlink_outside_root",
                         f"{path}: symlink to {real}, outside the input root "
                         f"{real_root}; not followed (pass --follow-symlinks to allow)")
    return FileRecord(uri=path, size_bytes=st.st_size, mtime_us=st.st_mtime_ns // 1000)


# -- any other Beam filesystem ----------------------------------------------------
def _open_remote(uri: str):
    return FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)


def list_remote(spec: str, extensions: frozenset[str] | None):
    """A remote object, glob or prefix (recursive) -> FileRecords and SkippedFiles, or one
    not_found error."""
    if _GLOB.search(spec.split("://", 1)[1]):
        patterns, explicit = [spec], False
    else:
        exact = FileSystems.match([spec])[0].metadata_list
        if exact:
            patterns, explicit = [spec], True
        else:
            patterns, explicit = [spec.rstrip("/") + "/**"], False
    found = False
    for result in FileSystems.match(patterns):
        for md in result.metadata_list:
            if md.path.endswith("/"):
                continue  # "directory" placeholder objects
            found = True
            mtime = md.last_updated_in_seconds
            record = FileRecord(uri=md.path, size_bytes=md.size_in_bytes,
                                mtime_us=round(mtime * 1e6) if mtime else None)
            yield record if explicit else candidate_or_skip(
                record, extensions, lambda uri=record.uri: _open_remote(uri))
    if not found:
        yield ListError(spec, "not_found", f"{spec}: no objects under this input")


class ExpandInput(beam.DoFn):
    """One input argument -> the image files under it (main), listing errors ("errors")
    and the files that are not images ("skipped")."""

    def __init__(self, extensions=IMAGE_EXTENSIONS, max_file_size=DEFAULT_MAX_FILE_SIZE,
                 follow_symlinks=False, progress_dir=None):
        self._extensions = (None if extensions is None
                            else frozenset(e.lower() for e in extensions))
        self._max_file_size = max_file_size
        self._follow = follow_symlinks
        self._progress_dir = progress_dir

    def setup(self):
        self._tally = Tally(self._progress_dir)

    def process(self, spec: str):
        for item in list_input(spec, self._extensions, self._max_file_size, self._follow):
            if isinstance(item, ListError):
                self._tally.add("failed")
                yield beam.pvalue.TaggedOutput("errors", item)
            elif isinstance(item, SkippedFile):
                yield beam.pvalue.TaggedOutput("skipped", item)
            else:
                self._tally.add("listed")
                yield item

    def teardown(self):
        if getattr(self, "_tally", None):
            self._tally.flush()


def _first(records):
    return min(records, key=lambda r: (r.mtime_us or 0, r.size_bytes))


class ListImages(beam.PTransform):
    """Input arguments -> FileRecords (one per distinct URI), ListErrors ("errors") and
    SkippedFiles (one per distinct URI, "skipped")."""

    def __init__(self, inputs: list[str], **expand_kwargs):
        super().__init__()
        self._inputs = list(inputs)
        self._kwargs = expand_kwargs

    def expand(self, pbegin):
        listed = (pbegin
                  | "Inputs" >> beam.Create(self._inputs)
                  | "Expand" >> beam.ParDo(ExpandInput(**self._kwargs)).with_outputs(
                      "errors", "skipped", main="files"))
        files = (listed.files
                 | "KeyByUri" >> beam.Map(lambda r: (r.uri, r))
                 | "OnePerUri" >> beam.CombinePerKey(_first)
                 | "DropKey" >> beam.Values())
        skipped = (listed.skipped
                   | "KeySkippedByUri" >> beam.Map(lambda s: (s.uri, s))
                   | "OneSkipPerUri" >> beam.CombinePerKey(lambda skips: next(iter(skips)))
                   | "DropSkipKey" >> beam.Values())
        return {"files": files, "errors": listed.errors, "skipped": skipped}
