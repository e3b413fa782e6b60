"""One long-lived exiftool process (``-stay_open``) that runs batches of commands.

Why not PyExifTool: it runs one command per round trip and joins arguments with
newlines without checking them. Here a *batch* of commands goes down the pipe in one
write, each ended by its own ``-executeN``, so a batch costs one round trip while every
command keeps its own stdout, stderr and exit status (a bad file fails only its own
command).

Argument safety (issue #11). In ``-stay_open`` mode exiftool reads one argument per
line, strips leading white space and a trailing CR/LF, drops lines starting with
``#`` and treats ``-``-prefixed lines as options. So:

* file names must be passed as absolute paths (:func:`file_arg`): ``/d/-@ x.jpg`` can
  never be an option, ``-`` never means stdin;
* tag *values* never travel as ``-TAG=value`` lines (exiftool trims one space after
  ``=``, and its ``#[CSTR]`` escape form mangles ``$`` and ``@`` in 12.57): callers
  write the value to a private file and pass ``-TAG<=FILE``, which exiftool reads
  byte for byte (:meth:`ExifToolSession.value_file`);
* a command holding any argument that cannot be one argfile line (a newline or CR,
  leading white space, a leading ``#``) is run as a one-shot ``exiftool`` process
  with real argv instead, where no byte is special.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import json
import os
import re
import selectors
import shutil
import subprocess
import tempfile
import time
import uuid

EXIFTOOL = os.environ.get("ALTBEAM_EXIFTOOL", "exiftool")
CONFIG_NAME = "altbeam_xmp.config"
_DONE = re.compile(rb"\{altbeam-done (\d+):(-?\d+)\}\r?\n")


class ExifToolError(RuntimeError):
    """exiftool could not be started, died, or did not answer in time."""


@dataclasses.dataclass
class ExifResult:
    """What one command produced."""

    status: int            # exiftool's exit status for the command (0: success)
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("Error")]

    @property
    def warnings(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("Warning")]

    def message(self) -> str:
        """The most telling line of stderr (errors first), for decision reasons."""
        lines = self.errors or self.warnings or self.stderr.strip().splitlines()
        return "; ".join(lines) if lines else f"exiftool exit status {self.status}"


def file_arg(path: str) -> str:
    """A local path as an argument exiftool can only read as a file name."""
    return os.path.abspath(path)


def line_safe(arg: str) -> bool:
    """Whether ``arg`` survives being one line of a -stay_open argfile unchanged."""
    return not ("\n" in arg or "\r" in arg or arg[:1].isspace() or arg.startswith("#")
                or arg == "")


def config_path() -> str:
    """The provenance-namespace config shipped as package data beside this module."""
    ref = importlib.resources.files(__package__) / CONFIG_NAME
    path = str(ref)
    if not os.path.isfile(path):
        raise ExifToolError(f"exiftool config {CONFIG_NAME} missing from the "
                            f"{__package__} package (expected at {path})")
    return path


class ExifToolSession:
    """``exiftool -config altbeam_xmp.config -stay_open True -@ -`` and its batches.

    Use as a context manager or call :meth:`start` / :meth:`close`. Not thread-safe:
    one session per DoFn instance.
    """

    def __init__(self, executable: str = EXIFTOOL, timeout: float = 120.0):
        self._exe = executable
        self._timeout = timeout
        self._proc: subprocess.Popen | None = None
        self._seq = 0
        self._tmpdir: str | None = None

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> ExifToolSession:
        if self._proc and self._proc.poll() is None:
            return self
        exe = shutil.which(self._exe)
        if not exe:
            raise ExifToolError(f"exiftool not found ({self._exe!r}); install it, e.g. "
                                "apt-get install libimage-exiftool-perl")
        self._exe = exe
        self._config = config_path()
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="altbeam-exiftool-")  # mode 0700
        self._proc = subprocess.Popen(
            [exe, "-config", self._config, "-stay_open", "True", "-@", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return self

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc and proc.poll() is None:
            try:
                proc.stdin.write(b"-stay_open\nFalse\n")
                proc.stdin.flush()
                proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr) if proc else ():
            stream.close()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> ExifToolSession:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def version(self) -> str:
        return self.run([["-ver"]])[0].stdout.strip()

    # -- values ---------------------------------------------------------------
    def value_file(self, value: str) -> str:
        """Write ``value`` (UTF-8) to a private file for a ``-TAG<=FILE`` argument."""
        if self._tmpdir is None:
            self.start()
        path = os.path.join(self._tmpdir, f"v{uuid.uuid4().hex}.txt")
        with open(path, "wb") as f:
            f.write(value.encode("utf-8"))
        return path

    def discard_value_files(self) -> None:
        for name in os.listdir(self._tmpdir or "."):
            if self._tmpdir and name.startswith("v") and name.endswith(".txt"):
                os.unlink(os.path.join(self._tmpdir, name))

    # -- commands -------------------------------------------------------------
    def run(self, commands: list[list[str]]) -> list[ExifResult]:
        """Run commands (each a list of arguments); one ExifResult per command, in order."""
        results: list[ExifResult | None] = [None] * len(commands)
        batch = [(i, c) for i, c in enumerate(commands) if all(map(line_safe, c))]
        for i, cmd in enumerate(commands):
            if results[i] is None and not all(map(line_safe, cmd)):
                results[i] = self._one_shot(cmd)
        if batch:
            try:
                answers = self._stay_open([c for _, c in batch])
            except ExifToolError as e:  # the process is gone; the next batch restarts it
                answers = [ExifResult(-1, "", f"Error: {e}") for _ in batch]
            for (i, _), res in zip(batch, answers):
                results[i] = res
        return results  # type: ignore[return-value]

    def read_json(self, paths: list[str], *extra: str) -> list[dict | ExifResult]:
        """``exiftool -j -G1 -a`` per file: its tag dict, or the failed ExifResult."""
        cmds = [["-j", "-G1", "-a", "-api", "LargeFileSupport=1", *extra, file_arg(p)]
                for p in paths]
        out: list[dict | ExifResult] = []
        for res in self.run(cmds):
            try:
                out.append(json.loads(res.stdout)[0] if res.status == 0 else res)
            except (ValueError, IndexError):
                out.append(res)
        return out

    def _one_shot(self, cmd: list[str]) -> ExifResult:
        self.start()
        proc = subprocess.run([self._exe, "-config", self._config, *cmd],
                              capture_output=True, timeout=self._timeout)
        return ExifResult(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                          proc.stderr.decode("utf-8", "replace"))

    def _stay_open(self, commands: list[list[str]]) -> list[ExifResult]:
        self.start()
        seqs, payload = [], bytearray()
        for cmd in commands:
            self._seq += 1
            seqs.append(self._seq)
            for arg in [*cmd, "-echo4", "{altbeam-done " + str(self._seq) + ":${status}}",
                        f"-execute{self._seq}"]:
                payload += os.fsencode(arg) + b"\n"
        try:
            out, err = self._exchange(bytes(payload), seqs[-1])
        except ExifToolError:
            self._kill()
            raise
        results, out_pos, err_pos = [], 0, 0
        for seq in seqs:
            marker = b"{ready%d}" % seq
            end = out.index(marker, out_pos)
            stdout = out[out_pos:end]
            out_pos = out.index(b"\n", end) + 1
            m = _DONE.search(err, err_pos)
            while m and int(m.group(1)) != seq:
                m = _DONE.search(err, m.end())
            stderr = err[err_pos:m.start()]
            err_pos = m.end()
            results.append(ExifResult(int(m.group(2)), stdout.decode("utf-8", "replace"),
                                      stderr.decode("utf-8", "replace")))
        return results

    def _exchange(self, payload: bytes, last_seq: int) -> tuple[bytes, bytes]:
        """Write the batch and read both pipes until the last command has answered."""
        proc = self._proc
        out, err = bytearray(), bytearray()
        out_done, err_done = b"{ready%d}" % last_seq, b"{altbeam-done %d:" % last_seq
        sel = selectors.DefaultSelector()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            os.set_blocking(stream.fileno(), False)
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        pending = memoryview(payload)
        if pending:
            sel.register(proc.stdin, selectors.EVENT_WRITE)
        deadline = time.monotonic() + self._timeout * max(1, payload.count(b"-execute"))
        try:
            while not (out_done in out and err_done in err and _DONE.search(err, err.find(
                    err_done))):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ExifToolError(f"exiftool did not answer within {self._timeout}s")
                for key, _ in sel.select(timeout=min(left, 1.0)):
                    if key.fileobj is proc.stdin:
                        try:
                            sent = os.write(proc.stdin.fileno(), pending)
                        except BrokenPipeError as e:
                            raise ExifToolError("exiftool exited (broken pipe)") from e
                        pending = pending[sent:]
                        if not pending:
                            sel.unregister(proc.stdin)
                        continue
                    chunk = os.read(key.fileobj.fileno(), 65536)
                    if not chunk:
                        raise ExifToolError(f"exiftool exited with status {proc.poll()}")
                    key.data.extend(chunk)
        finally:
            sel.close()
        return bytes(out), bytes(err)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
