"""A TCP proxy the tests and benchmarks control, in front of a real server on 127.0.0.1.

* `delay`: seconds added before forwarding each chunk in each direction, so one HTTP
  request/response costs about one extra `2 * delay` round trip (set delay = rtt / 2).
  A client that writes headers and body separately pays it twice: prefer `rtt`.
* `rtt`: a network round trip emulated as latency, not per chunk: every chunk arrives
  `rtt / 2` after it was sent, chunks sent back to back are not delayed again, and a new
  connection costs one `rtt` (the TCP handshake a real network would add).
* `mode`: "forward" (default), "blackhole" (accept, never answer), "refuse" (close at once).
* `connections`: connections accepted, for tests that count.

`HttpFaultServer` answers every HTTP request with one fixed fault (e.g. 429/503 with
`Retry-After`), over plain HTTP or TLS with a certificate from its own throwaway CA.

`HttpReverseProxy` forwards HTTP requests to a real http:// server, records a key for each
(`METHOD /path` unless a subclass says otherwise), answers chosen keys with injected
faults instead (`inject`), and can add a round trip (`rtt`) to every connection and request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import http.server
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Self

from tests.https_server import HttpsServer


class _Server:
    """`with` support: close() on exit."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TcpProxy(_Server):
    def __init__(
        self,
        upstream_port: int,
        delay: float = 0.0,
        upstream_host: str = "127.0.0.1",
        rtt: float = 0.0,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = delay
        self.rtt = rtt
        self.mode = "forward"
        self.connections = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._sockets.append(client)
            if self.mode == "refuse":
                client.close()
                continue
            if self.mode == "blackhole":
                continue  # keep it open, never answer
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.append(upstream)
            if self.rtt:
                threading.Thread(
                    target=self._latency_pair, args=(client, upstream), daemon=True
                ).start()
                continue
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _latency_pair(self, client: socket.socket, upstream: socket.socket) -> None:
        # Small writes must go out at once: Nagle + delayed ACK would add ~40 ms.
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The handshake of a real connection costs one round trip before any data.
        not_before = time.monotonic() + self.rtt
        for src, dst in ((client, upstream), (upstream, client)):
            pending: queue.Queue[tuple[float, bytes]] = queue.Queue()
            threading.Thread(
                target=self._latency_reader, args=(src, pending, not_before), daemon=True
            ).start()
            threading.Thread(target=self._latency_writer, args=(dst, pending), daemon=True).start()

    def _latency_reader(
        self, src: socket.socket, pending: queue.Queue[tuple[float, bytes]], not_before: float
    ) -> None:
        try:
            while True:
                data = src.recv(65536)
                pending.put((max(time.monotonic() + self.rtt / 2, not_before), data))
                if not data:
                    return
        except OSError:
            pending.put((0.0, b""))

    @staticmethod
    def _latency_writer(dst: socket.socket, pending: queue.Queue[tuple[float, bytes]]) -> None:
        try:
            while True:
                due, data = pending.get()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                # shutdown() first: close() alone neither wakes a thread blocked in recv()
                # nor ends the connection for the peer (e.g. a server stuck in a handshake).
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


class HttpFaultServer(HttpsServer):
    """Answers every request with `status`, `headers` and `body` (HTTP/1.1, keep-alive).

    `tls=True` serves HTTPS with a certificate for 127.0.0.1/localhost from a fresh `trustme`
    CA: clients reject it unless given `ca_path`. `requests` lists what was received.
    """

    def __init__(
        self,
        status: int = 503,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        tls: bool = False,
    ) -> None:
        super().__init__(lambda request: (status, body, dict(headers or {})), tls=tls)


@dataclasses.dataclass
class _Fault:
    matches: Callable[[str], bool]
    status: int
    headers: dict[str, str]
    body: bytes
    times: int | None  # None: every matching request


class HttpReverseProxy(_Server):
    """Keep-alive HTTP/1.1 reverse proxy in front of `upstream_url` (see the module doc)."""

    def __init__(self, upstream_url: str, rtt: float = 0.0) -> None:
        # rtt: an injected network round trip, paid once per new connection (the TCP
        # handshake) and once per request, whatever the size of its headers and body.
        self.rtt = rtt
        parsed = urllib.parse.urlsplit(upstream_url)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.keys: list[str] = []  # one per request, in arrival order
        self.connections = 0
        self.injected = 0  # requests answered with a fault
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm
            # and the client's delayed ACK would add ~40 ms to every answer.
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy.connections += 1
                if proxy.rtt:
                    time.sleep(proxy.rtt)

            def _handle(self) -> None:
                proxy._handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_LIST = _handle

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def key(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> str:
        """What requests are counted and matched by."""
        return f"{method} {urllib.parse.urlsplit(path).path}"

    def count(self, key: str) -> int:
        with self._lock:
            return self.keys.count(key)

    def inject(
        self,
        match: str | Callable[[str], bool],
        status: int,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        times: int | None = 1,
    ) -> None:
        """Answer the next `times` requests whose key equals (or satisfies) `match` with
        `status`, instead of forwarding them; `times=None`: all of them."""
        matches = match if callable(match) else match.__eq__
        with self._lock:
            self._faults.append(_Fault(matches, status, dict(headers or {}), body, times))

    def _next_fault(self, key: str) -> _Fault | None:
        with self._lock:
            self.keys.append(key)
            for fault in self._faults:
                if fault.times != 0 and fault.matches(key):
                    if fault.times is not None:
                        fault.times -= 1
                    self.injected += 1
                    return fault
            return None

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        fault = self._next_fault(self.key(handler.command, handler.path, handler.headers, body))
        if self.rtt:
            time.sleep(self.rtt)
        if fault is not None:
            self._reply(handler, fault.status, list(fault.headers.items()), fault.body)
            return
        hop_by_hop = ("connection", "host", "keep-alive", "transfer-encoding")
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in hop_by_hop}
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            conn.request(handler.command, handler.path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            kept = [
                (k, v)
                for k, v in response.getheaders()
                if k.lower() not in ("connection", "transfer-encoding", "content-length")
            ]
            self._reply(handler, response.status, kept, data)
        finally:
            conn.close()

    @staticmethod
    def _reply(
        handler: http.server.BaseHTTPRequestHandler,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown()
            self._server.server_close()
