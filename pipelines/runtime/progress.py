"""Counting what the caption pipeline did: Beam metrics everywhere, live progress locally.

`Tally` is used inside DoFns. Every ``add(name)`` increments the Beam counter
``altbeam/<name>`` (readable on any runner, e.g. in the Dataflow UI), and, when the
pipeline runs locally, appends one byte per image to ``<progress_dir>/<name>``.
Appends with O_APPEND are atomic, so worker processes of the multi-processing
DirectRunner can share the files; the main process reads the file sizes to print a
progress line (`ProgressReporter`) while the runner blocks.

Counter names: listed, todo, done, captioned, unchanged, failed.
"""
from __future__ import annotations

import os
import sys
import threading
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

NAMESPACE = "altbeam"
_FLUSH_EVERY_S = 0.5


class Tally:
    """Per-DoFn-instance counter; cheap to call once per element."""

    def __init__(self, progress_dir: str | None):
        self._dir = progress_dir
        self._counters: dict = {}
        self._pending: dict[str, int] = {}
        self._last_flush = time.monotonic()

    def add(self, name: str, n: int = 1) -> None:
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = Metrics.counter(NAMESPACE, name)
        counter.inc(n)
        if self._dir:
            self._pending[name] = self._pending.get(name, 0) + n
            if time.monotonic() - self._last_flush >= _FLUSH_EVERY_S:
                self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._dir:
            return
        pending, self._pending = self._pending, {}
        for name, n in pending.items():
            if n <= 0:
                continue
            fd = os.open(os.path.join(self._dir, name),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, b"." * n)
            finally:
                os.close(fd)


def read_counts(progress_dir: str) -> dict[str, int]:
    counts = {}
    for name in ("listed", "todo", "done", "captioned", "unchanged", "failed"):
        try:
            counts[name] = os.path.getsize(os.path.join(progress_dir, name))
        except OSError:
            counts[name] = 0
    return counts


def format_progress(counts: dict[str, int], elapsed_s: float) -> str:
    rate = counts["captioned"] / elapsed_s if elapsed_s > 0 else 0.0
    total = counts["todo"] or "?"
    return (f"altbeam: {counts['done']}/{total} images  captioned {counts['captioned']}  "
            f"unchanged {counts['unchanged']}  failed {counts['failed']}  "
            f"{rate:.1f} images/s  {elapsed_s:.0f}s")


class ProgressReporter(threading.Thread):
    """Prints a progress line to stderr every ``interval`` seconds until stopped."""

    def __init__(self, progress_dir: str, interval: float = 5.0, stream=None):
        super().__init__(name="altbeam-progress", daemon=True)
        self._dir = progress_dir
        self._interval = interval
        self._stream = stream or sys.stderr
        self._stop_event = threading.Event()
        self._start = time.monotonic()
        self._last_line = ""

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            self._report()

    def _report(self) -> None:
        line = format_progress(read_counts(self._dir), time.monotonic() - self._start)
        if line.split("  ")[:5] != self._last_line.split("  ")[:5]:  # skip idle repeats
            print(line, file=self._stream, flush=True)
            self._last_line = line

    def stop(self) -> None:
        """Stop, printing the final counts if they changed since the last line."""
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout=2)
            self._report()


class TallyEach(beam.DoFn):
    """Pass-through step that counts its elements under ``name`` (e.g. "todo")."""

    def __init__(self, name: str, progress_dir: str | None = None, also: tuple = ()):
        self._names = (name, *also)
        self._progress_dir = progress_dir

    def setup(self):
        self._tally = Tally(self._progress_dir)

    def process(self, element):
        for name in self._names:
            self._tally.add(name)
        yield element

    def finish_bundle(self):
        self._tally.flush()
