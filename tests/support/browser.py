"""Headless Chromium driven over the DevTools protocol, for tests of HTML output.

``chromium_or_skip()`` finds Debian's ``chromium`` (installing it with apt-get when
running as root or with password-less sudo) or skips the test with the reason.
:class:`Browser` starts it on a free DevTools port, talks to one page over a
websocket (the ``websockets`` package's sync client), and records what a person would
not see: console errors, uncaught exceptions, CSP violations and JavaScript dialogs.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--mute-audio", "--hide-scrollbars"]


def find_chromium() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _install_chromium() -> str:
    """Try apt-get; return '' on success or why it could not be done."""
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if prefix and not shutil.which("sudo"):
        return "not root and no sudo"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "install", "-y", "-q", "chromium"],
                ["sh", "-c", "apt-get update -q && apt-get install -y -q chromium"]):
        try:
            done = subprocess.run(prefix + cmd, env=env, capture_output=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"apt-get failed: {exc}"
        if done.returncode == 0 and find_chromium():
            return ""
    return f"apt-get install chromium failed: {done.stderr.decode(errors='replace')[-300:]}"


def chromium_or_skip() -> str:
    path = find_chromium()
    if path:
        return path
    why = _install_chromium()
    path = find_chromium()
    if not path:
        pytest.skip(f"headless Chromium unavailable ({why}); install Debian's 'chromium'")
    return path


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, executable: str, width: int = 1200, height: int = 900):
        self.executable = executable
        self.size = (width, height)
        self.events: list[dict] = []
        self._id = 0

    def __enter__(self) -> Browser:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="altbeam-chromium-")
        self.log = open(os.path.join(self.profile, "stderr.log"), "wb")
        self.proc = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self.profile}",
             f"--window-size={self.size[0]},{self.size[1]}", "--remote-debugging-port=0",
             "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        port = self._devtools_port()
        deadline = time.monotonic() + 15
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        return self

    def _devtools_port(self, timeout: float = 60.0) -> int:
        # Chromium can take over 20 s to start on 2 busy cores (seen with a training run
        # beside the suite).
        marker = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.proc.returncode}")
            if os.path.exists(marker):
                with open(marker) as f:
                    first = f.readline().strip()
                if first.isdigit():
                    return int(first)
            time.sleep(0.05)
        raise RuntimeError("chromium did not open a DevTools port")

    def __exit__(self, *exc) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
            shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        """Call a DevTools method and return its result; events meanwhile are recorded."""
        self._id += 1
        my_id = self._id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("id") == my_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict) -> None:
        if "method" not in message:
            return
        self.events.append(message)
        if message["method"] == "Page.javascriptDialogOpening":
            self.ws.send(json.dumps({"id": 0, "method": "Page.handleJavaScriptDialog",
                                     "params": {"accept": False}}))

    def open(self, url: str, timeout: float = 20.0) -> None:
        """Navigate and wait for the load event."""
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{url} did not finish loading in {timeout}s")
            self._event(json.loads(self.ws.recv(timeout=remaining)))

    def evaluate(self, expression: str, timeout: float = 30.0):
        """Evaluate JS in the page (promises awaited); return the value."""
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                                "returnByValue": True}, timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, CSP/log errors and dialogs seen so far."""
        out = []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value') for a in p.get('args', [])]}")
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log error: {p['entry'].get('text')}")
            elif m == "Page.javascriptDialogOpening":
                out.append(f"dialog: {p.get('type')} {p.get('message')!r}")
        return out

    def screenshot(self, path: str, full_page: bool = True) -> bytes:
        params = {"format": "png", "captureBeyondViewport": full_page}
        data = base64.b64decode(self.send("Page.captureScreenshot", params)["data"])
        with open(path, "wb") as f:
            f.write(data)
        return data
