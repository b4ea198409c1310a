"""A small threaded HTTPS server on 127.0.0.1 for tests that speak a provider's REST API
(or plain HTTP with `tls=False`).

Certificates come from `trustme` (a throwaway CA); clients trust it through `ca_path`
(e.g. `REQUESTS_CA_BUNDLE`). The test supplies a handler function that receives a
`Request` and returns `(status, body)` or `(status, body, headers)`, where a dict or list
body is sent as JSON, `str` as text and `bytes` as is. Requests are counted per
(method, path) so tests can prove dedupe and batching.
"""

from __future__ import annotations

import collections
import dataclasses
import http.server
import json
import ssl
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import trustme


@dataclasses.dataclass
class Request:
    method: str
    path: str  # without the query string, still percent-encoded
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(self.body.decode()))


Handler = Callable[[Request], tuple[Any, ...]]


class HttpsServer:
    def __init__(
        self, handler: Handler, directory: str | Path | None = None, tls: bool = True
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._tmp = None
        self.ca_path = ""  # the CA clients must trust (TLS only)
        context: ssl.SSLContext | None = None
        if tls:
            if directory is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="https-server-")
                directory = self._tmp.name
            ca = trustme.CA()
            self.ca_path = str(Path(directory) / "ca.pem")
            ca.cert_pem.write_to_path(self.ca_path)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)

        server = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like real APIs
            # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm
            # and the client's delayed ACK would add ~40 ms to every answer.
            disable_nagle_algorithm = True

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urllib.parse.urlsplit(self.path)
                request = Request(
                    self.command,
                    split.path,
                    urllib.parse.parse_qs(split.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with server._lock:
                    server.counts[(self.command, split.path)] += 1
                    server.requests.append(request)
                try:
                    reply = server.handler(request)
                except Exception as exc:  # a bug in the test's handler: make it visible
                    reply = (500, {"error": f"test handler failed: {exc!r}"})
                status, payload = reply[0], reply[1]
                headers = dict(reply[2]) if len(reply) > 2 else {}
                if isinstance(payload, (dict, list)):
                    data = json.dumps(payload).encode()
                    headers.setdefault("Content-Type", "application/json")
                elif isinstance(payload, str):
                    data = payload.encode()
                    headers.setdefault("Content-Type", "text/plain")
                else:
                    data = bytes(payload or b"")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest output clean

        class _Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: Any, client_address: Any) -> None:
                if context is None:  # plain HTTP
                    super().finish_request(request, client_address)
                    return
                # TLS handshake on the connection's own thread, so a stalled client never
                # blocks the accept loop.
                try:
                    tls = context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    return
                try:
                    self.RequestHandlerClass(tls, client_address, self)
                finally:
                    tls.close()

        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self.port: int = self._httpd.server_address[1]
        # The socket is already listening: the server is ready once this thread runs.
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def count(self, path: str, method: str | None = None) -> int:
        """Requests received for `path` (percent-encoded, no query), by any or one method."""
        with self._lock:
            return sum(n for (m, p), n in self.counts.items() if p == path and method in (None, m))

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.requests.clear()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> HttpsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
