"""SIGKILL a run while it works, and prove the kill landed mid-run.

A kill test that kills a process which had already finished, or had not started its
work yet, proves nothing about interruption. ``kill_mid_run`` waits for a real sign of
partial progress (bounded, never a fixed sleep) and fails, rather than passes, when the
run ends first or when the kill does not land.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable

import pytest


def file_state(path) -> tuple[int, int, int]:
    """Cheap enough to poll hundreds of files: changes when a file is rewritten."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def count_changed(states: dict) -> Callable[[], int]:
    """A progress probe: how many of ``states`` (path -> file_state) have changed."""
    return lambda: sum(file_state(p) != s for p, s in states.items())


def kill_mid_run(proc: subprocess.Popen, progress: Callable[[], int], *, at_least: int,
                 timeout: float = 60.0) -> None:
    """SIGKILL ``proc``'s process group once ``progress()`` reaches ``at_least``.

    ``proc`` must be started with ``start_new_session=True`` (its helpers die with it).
    Fails when the run exits first (the workload is too small for the kill to land
    mid-run), when that progress does not come within ``timeout`` seconds, or when the
    exit status does not show the kill. The caller then checks that some, not all, of
    the work was done.
    """
    deadline = time.monotonic() + timeout
    try:
        while (done := progress()) < at_least:
            if proc.poll() is not None:
                pytest.fail(f"the run exited ({proc.returncode}) after {done} units of work, "
                            f"before the kill: too little work for it to land mid-run")
            if time.monotonic() > deadline:
                pytest.fail(f"no partial progress within {timeout:.0f} s ({done} of the "
                            f"{at_least} units awaited)")
            time.sleep(0.005)
        assert proc.poll() is None, f"the run exited ({proc.returncode}) just before the kill"
        os.killpg(proc.pid, signal.SIGKILL)
        # A run that exited between the check and the kill shows its own status here.
        assert proc.wait(timeout=30) == -signal.SIGKILL, (
            f"the kill did not land: exit status {proc.returncode}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def some_but_not_all(done: Iterable, total: int, at_least: int) -> list:
    """``done`` as a list, asserting the kill left ``at_least`` to ``total - 1`` of them."""
    done = list(done)
    assert at_least <= len(done) < total, (
        f"{len(done)} of {total} done at the kill: it should land mid-run")
    return done
