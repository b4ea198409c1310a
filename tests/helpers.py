"""Run the real executable the way the Agent does: JSON on stdin, JSON on stdout.

By default the executable is `python -m secret_backend` from this checkout; set
SECRET_BACKEND_EXE to a path (e.g. the PyInstaller build) to run the same tests against it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def executable() -> list[str]:
    override = os.environ.get("SECRET_BACKEND_EXE")
    if override:
        return shlex.split(override)
    return [sys.executable, "-m", "secret_backend"]


def make_request(
    secrets: Sequence[str],
    type: str | None = None,
    config: Any = None,
    timeout: float | None = None,
    version: str = "1.1",
) -> dict[str, Any]:
    request: dict[str, Any] = {"version": version, "secrets": list(secrets)}
    if timeout is not None:
        request["secret_backend_timeout"] = timeout
    if type is not None:
        request["type"] = type
        request["config"] = config if config is not None else {}
    return request


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: str
    seconds: float

    @property
    def answers(self) -> dict[str, dict[str, Any]]:
        out = json.loads(self.stdout)
        assert isinstance(out, dict)
        return out

    def value(self, handle: str) -> str:
        entry = self.answers[handle]
        assert entry["error"] is None, entry["error"]
        return str(entry["value"])

    def error(self, handle: str) -> str:
        entry = self.answers[handle]
        assert entry["value"] is None, "expected an error, got a value"
        assert entry["error"], "error must be a non-empty string"
        return str(entry["error"])


def run_cli(
    request: Mapping[str, Any] | bytes | str,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    cwd: str | Path | None = None,
    exe: Sequence[str] | None = None,
) -> Result:
    """Run the executable with `request` on stdin; check the protocol invariants on success."""
    import time

    if isinstance(request, Mapping):
        data = json.dumps(request).encode()
    elif isinstance(request, str):
        data = request.encode()
    else:
        data = request
    full_env = dict(os.environ)
    full_env.pop("DD_SECRET_BACKEND_LOG_LEVEL", None)
    if env:
        full_env.update(env)
    started = time.monotonic()
    proc = subprocess.run(
        [*(exe or executable()), *args],
        input=data,
        capture_output=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd or REPO,
    )
    result = Result(
        proc.returncode,
        proc.stdout,
        proc.stderr.decode(errors="replace"),
        time.monotonic() - started,
    )
    assert "Traceback" not in result.stderr, result.stderr
    if proc.returncode == 0 and isinstance(request, Mapping) and "secrets" in request:
        answers = result.answers
        assert set(answers) == set(request["secrets"]), "every handle answered exactly once"
        for entry in answers.values():
            assert set(entry) == {"value", "error"}
            assert (entry["value"] is None) != (entry["error"] is None), entry
            assert entry["value"] != "", "an empty string is never a success"
    return result


def free_port() -> int:
    """A free port on 127.0.0.1 (nothing listens on it: connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
