"""A small fault-injecting HTTP proxy for object-storage tests.

It sits on 127.0.0.1 in front of ``gcp-storage-emulator``; point
``STORAGE_EMULATOR_HOST`` at :attr:`FaultProxy.host` and every request the storage
client (and so Beam's gcsio) makes passes through it. Each request is forwarded
unchanged unless a :class:`Fault` rule matches it first; a rule can

* answer with an HTTP error status (``status``: 503, 500, 404, 403 ...),
* close the connection without answering (``drop=True``: the client sees a reset),
* or wait ``delay`` seconds before forwarding (a slow server, no error),

for the first ``first`` matching requests per distinct method+path (transient), for
every ``every``-th matching request (flaky), or forever (``first=None, every=None``:
a permanent failure). ``requests`` logs ``(method, path_and_query, status)`` for every
request, ``status`` being what the client got (0 for a dropped connection).

The emulator writes its own address into ``mediaLink``/``selfLink`` and into the
``Location`` of a resumable upload; the proxy rewrites those to its own address, as a
real GCS front end would name itself, so media downloads and upload chunks pass
through the proxy too.
"""
from __future__ import annotations

import dataclasses
import http.client
import http.server
import re
import threading
import time
import urllib.parse

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
               "te", "trailers", "transfer-encoding", "upgrade", "content-length"}


@dataclasses.dataclass
class Fault:
    pattern: str = ""                 # regex searched in "METHOD /path?query" (unquoted)
    status: int | None = 503          # None: forward after the delay (a slow server)
    first: int | None = None          # hit the first N matches per method+path ...
    every: int | None = None          # ... or every k-th match; neither: every match
    drop: bool = False                # close the connection instead of answering
    delay: float = 0.0                # seconds to wait first
    hits: int = 0                     # requests this rule hit
    _seen: dict = dataclasses.field(default_factory=dict)
    _count: int = 0

    def hit(self, request_line: str, key: str) -> bool:
        """Whether this rule takes this request (called under the proxy's lock)."""
        if not re.search(self.pattern, request_line):
            return False
        self._count += 1
        if self.first is not None:
            n = self._seen[key] = self._seen.get(key, 0) + 1
            taken = n <= self.first
        elif self.every is not None:
            taken = self._count % self.every == 0
        else:
            taken = True
        self.hits += taken
        return taken


class FaultProxy:
    """``with FaultProxy(upstream) as proxy: proxy.faults.append(Fault(...))``."""

    def __init__(self, upstream: str):
        parsed = urllib.parse.urlsplit(upstream)
        self._upstream = (parsed.hostname, parsed.port)
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                line = f"{self.command} {urllib.parse.unquote(self.path)}"
                key = f"{self.command} {self.path.split('?', 1)[0]}"
                with proxy._lock:
                    fault = next((f for f in proxy.faults if f.hit(line, key)), None)
                if fault and fault.delay:
                    time.sleep(fault.delay)
                if fault and fault.drop:
                    proxy._log(self.command, self.path, 0)
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault and fault.status:
                    payload = (b'{"error": {"code": %d, "message": "injected by fault_proxy"}}'
                               % fault.status)
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    proxy._log(self.command, self.path, fault.status)
                    return
                self._forward(body)

            def _forward(self, body: bytes):
                conn = http.client.HTTPConnection(*proxy._upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _HOP_BY_HOP and k.lower() != "host"}
                headers["Host"] = f"{proxy._upstream[0]}:{proxy._upstream[1]}"
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                # The emulator names itself in mediaLink/selfLink and in resumable-upload
                # Location headers; point those at the proxy so follow-ups pass through it.
                data = resp.read().replace(proxy._upstream_url, proxy._url)
                conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP_BY_HOP:
                        self.send_header(k, v.replace(proxy._upstream_url.decode(),
                                                      proxy._url.decode()))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                proxy._log(self.command, self.path, resp.status)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                import sys

                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)  # clients hanging up: fine

        self._server = Server(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._url = self.host.encode()
        self._upstream_url = f"http://{parsed.hostname}:{parsed.port}".encode()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _log(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.requests.append((method, urllib.parse.unquote(path), status))

    def failed(self) -> list[tuple[str, str, int]]:
        """Requests that got an error status or a dropped connection."""
        with self._lock:
            return [r for r in self.requests if r[2] >= 400 or r[2] == 0]

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
