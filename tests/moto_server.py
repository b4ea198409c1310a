"""A real AWS API server for tests: moto's server mode on a free 127.0.0.1 port.

Reuse it from any test module:

    from tests.moto_server import moto_url  # noqa: F401  (the session-scoped fixture)

    def test_x(moto_url): ...            # e.g. AWS_ENDPOINT_URL=moto_url

`start_moto_server()` starts one outside pytest (benchmarks) and returns (process, url);
`secretsmanager_client(url)` seeds it; `isolated_aws_env(url, scratch)` is the environment
that points the executable at it with test credentials and nothing from the host;
`moto_with_secrets({...})` does all three for a one-off server.
`CountingProxy(url)` is an HTTP reverse proxy in front of it that records the operation of
every request (X-Amz-Target, or the Action of query-protocol services such as STS), can
answer chosen operations with injected AWS errors (AccessDenied, throttling, 5xx) and can
add a network round trip (`rtt`) to every connection and request, for benchmarks.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

READY_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto_server() -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m moto.server` on a free port; return it once it answers HTTP."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    for _ in range(3):  # the free port may be taken between probe and bind: try again
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):  # noqa: S310
                    return proc, url
            except OSError:
                time.sleep(0.1)
        stop_moto_server(proc)
    raise RuntimeError("moto server did not start (is moto[server] installed?)")


def stop_moto_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def secretsmanager_client(url: str, region: str = "us-east-1") -> Any:
    """A boto3 Secrets Manager client for seeding the server at `url` (test credentials)."""
    import boto3

    return boto3.client(
        "secretsmanager",
        region_name=region,
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def isolated_aws_env(url: str, scratch: str, region: str = "us-east-1") -> dict[str, str]:
    """Environment for the executable: reach `url` with test credentials, and nothing from
    the host (no instance metadata, no shared config files: they point into `scratch`)."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": f"{scratch}/none",
        "AWS_SHARED_CREDENTIALS_FILE": f"{scratch}/none",
        "AWS_ENDPOINT_URL": url,
    }


@contextlib.contextmanager
def moto_with_secrets(secrets: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """A moto server holding `secrets` (name -> SecretString); yields the environment."""
    proc, url = start_moto_server()
    try:
        client = secretsmanager_client(url)
        for name, value in secrets.items():
            client.create_secret(Name=name, SecretString=value)
        with tempfile.TemporaryDirectory() as scratch:
            yield isolated_aws_env(url, scratch)
    finally:
        stop_moto_server(proc)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """URL of a moto server for this pytest session (one per xdist worker)."""
    proc, url = start_moto_server()
    try:
        yield url
    finally:
        stop_moto_server(proc)


class CountingProxy:
    """HTTP reverse proxy that counts AWS operations and can inject AWS errors."""

    def __init__(self, upstream_url: str, rtt: float = 0.0) -> None:
        # rtt: an injected network round trip, paid once per new connection (the TCP
        # handshake) and once per request, whatever the size of its headers and body.
        self.rtt = rtt
        parsed = urllib.parse.urlsplit(upstream_url)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.operations: list[str] = []
        self.connections = 0
        # operation -> errors to answer before forwarding again; None in the list = forever.
        self._faults: dict[str, collections.deque[tuple[int, str, str] | None]] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore uses it
            # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm
            # and the client's delayed ACK would add ~40 ms to every answer.
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with proxy._lock:
                    proxy.connections += 1
                if proxy.rtt:
                    time.sleep(proxy.rtt)

            def do_POST(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_DELETE = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, operation: str) -> int:
        with self._lock:
            return self.operations.count(operation)

    def fail(
        self, operation: str, code: str, status: int = 400, times: int | None = 1, message: str = ""
    ) -> None:
        """Answer the next `times` calls of `operation` (None: all) with an AWS JSON error."""
        with self._lock:
            queue = self._faults.setdefault(operation, collections.deque())
            error = (status, code, message or f"injected {code}")
            if times is None:
                queue.append(error)
                queue.append(None)
            else:
                queue.extend([error] * times)

    def _next_fault(self, operation: str) -> tuple[int, str, str] | None:
        with self._lock:
            self.operations.append(operation)
            queue = self._faults.get(operation)
            if not queue:
                return None
            if len(queue) >= 2 and queue[1] is None:  # a "forever" fault stays
                return queue[0]
            return queue.popleft()

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        target = handler.headers.get("X-Amz-Target")
        if target:
            operation = target.rsplit(".", 1)[-1]
        else:
            query = urllib.parse.parse_qs(body.decode(errors="replace"))
            query.update(urllib.parse.parse_qs(urllib.parse.urlsplit(handler.path).query))
            operation = query.get("Action", [handler.command + " " + handler.path])[0]
        fault = self._next_fault(operation)
        if self.rtt:
            time.sleep(self.rtt)
        if fault is not None:
            status, code, message = fault
            payload = json.dumps({"__type": code, "message": message}).encode()
            self._reply(handler, status, [("Content-Type", "application/x-amz-json-1.1")], payload)
            return
        headers = {
            k: v for k, v in handler.headers.items() if k.lower() not in ("connection", "host")
        }
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            conn.request(handler.command, handler.path, body=body, headers=headers)
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
        for key, value in headers:
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> CountingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
