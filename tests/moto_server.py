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

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tests.helpers import free_port
from tests.proxy import HttpReverseProxy

READY_TIMEOUT = 30.0


def start_moto_server(
    extra_env: Mapping[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `python -m moto.server` on a free port; return it once it answers HTTP.

    `extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "N"}`: after N requests, moto checks every
    request's access key and SigV4 signature against the IAM users it holds."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env.update(extra_env or {})
    for _ in range(3):  # the free port may be taken between probe and bind: try again
        port = free_port()
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


class CountingProxy(HttpReverseProxy):
    """HTTP reverse proxy that counts AWS operations and can inject AWS errors."""

    def key(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> str:
        target = headers.get("X-Amz-Target")
        if target:
            return target.rsplit(".", 1)[-1]
        # Query-protocol services (STS) name the operation in the Action parameter.
        query = urllib.parse.parse_qs(body.decode(errors="replace"))
        query.update(urllib.parse.parse_qs(urllib.parse.urlsplit(path).query))
        return query.get("Action", [f"{method} {path}"])[0]

    @property
    def operations(self) -> list[str]:
        return self.keys

    def fail(
        self, operation: str, code: str, status: int = 400, times: int | None = 1, message: str = ""
    ) -> None:
        """Answer the next `times` calls of `operation` (None: all) with an AWS JSON error."""
        body = json.dumps({"__type": code, "message": message or f"injected {code}"}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1"}
        self.inject(operation, status, body, headers, times)
