"""The frozen build for tests, and a stand-in for the Agent that runs it.

`build_once()` runs packaging/build.sh (the script `make binary` runs) once per test session,
shared by pytest-xdist workers through a file lock, then installs the bundle with
packaging/install.sh into a private prefix so that it has the rights the Agent demands.

`agent_run()` does what the Agent does on every refresh (datadog-agent comp/core/secrets;
the messages are close to, not copies of, the Agent's): check the file's rights, write the
payload on stdin, read at most `secret_backend_output_max_size` bytes of stdout, kill the
process at `secret_backend_timeout`, then validate every handle, in order, failing the whole
batch on the first problem.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "packaging" / "build.sh"
INSTALL_SCRIPT = REPO / "packaging" / "install.sh"
NAME = "datadog-secret-backend"
OUTPUT_MAX = 1024 * 1024  # the Agent's default secret_backend_output_max_size


@dataclasses.dataclass
class Build:
    bundle: Path  # dist/datadog-secret-backend as PyInstaller left it
    installed: Path  # the executable, installed with the Agent's rights
    build_seconds: float


def build_once(shared_dir: Path) -> Build:
    """Build (or reuse this session's build), then install it under shared_dir."""
    shared_dir.mkdir(parents=True, exist_ok=True)
    with open(shared_dir / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = shared_dir / "build.json"
        failed = shared_dir / "build.failed"
        if failed.exists():
            raise RuntimeError(failed.read_text())
        if not done.exists():
            started = time.monotonic()
            proc = subprocess.run(
                [str(BUILD_SCRIPT)],
                env={
                    **os.environ,
                    "PY": sys.executable,
                    "DIST": str(shared_dir / "dist"),
                    "WORK": str(shared_dir / "work"),
                },
                capture_output=True,
                text=True,
            )
            seconds = time.monotonic() - started
            if proc.returncode != 0:
                failed.write_text(f"build failed:\n{proc.stdout}\n{proc.stderr}")
                raise RuntimeError(failed.read_text())
            prefix = shared_dir / "prefix"
            install(shared_dir / "dist" / NAME, prefix)
            done.write_text(json.dumps({"seconds": seconds}))
        seconds = json.loads(done.read_text())["seconds"]
    return Build(shared_dir / "dist" / NAME, shared_dir / "prefix" / NAME / NAME, seconds)


def install(
    bundle: Path, prefix: Path, *options: str, owner: str | None = None
) -> subprocess.CompletedProcess[str]:
    """packaging/install.sh as the current user (root in CI); raises on failure."""
    owner = owner or _current_user()
    return subprocess.run(
        [INSTALL_SCRIPT, "--bundle", bundle, "--prefix", prefix, "--owner", owner, *options],
        capture_output=True,
        text=True,
        check=True,
    )


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


class AgentError(Exception):
    """What the Agent would log instead of using the secrets."""


def agent_check_rights(path: str | Path, allow_group_exec: bool = False) -> None:
    """pkg/util/filesystem/rights_nix.go, written again here (not our own code)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise AgentError(f"invalid executable '{path}': can't stat it: {exc}")
    if allow_group_exec:
        if st.st_mode & (stat.S_IWGRP | stat.S_IRWXO):
            raise AgentError(
                f"invalid executable '{path}', 'others' have rights on it or 'group' has "
                "write permissions on it"
            )
    elif st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AgentError(f"invalid executable '{path}', 'group' or 'others' have rights on it")
    if not os.access(path, os.X_OK):
        raise AgentError(f"invalid executable '{path}': can't access it: permission denied")


@dataclasses.dataclass
class AgentRun:
    values: dict[str, str]
    stdout: bytes  # as much as the Agent read
    stderr: str
    returncode: int | None  # None: killed at the timeout
    seconds: float


def _read_capped(stream: Any, limit: int, into: bytearray) -> None:
    # The Agent's limitBuffer: keep `limit` bytes, then report overflow; keep draining so
    # the child never blocks on a full pipe.
    while chunk := stream.read(65536):
        room = limit + 1 - len(into)
        if room > 0:
            into.extend(chunk[:room])


def agent_run(
    command: str | Path,
    secrets: Sequence[str],
    type: str | None = None,
    config: Any = None,
    timeout: float | None = None,
    arguments: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    allow_group_exec: bool = False,
    output_max: int = OUTPUT_MAX,
) -> AgentRun:
    """Resolve `secrets` exactly as the Agent would; AgentError carries the Agent's message."""
    agent_check_rights(command, allow_group_exec)
    payload: dict[str, Any] = {"version": "1.1", "secrets": list(secrets)}
    if timeout is not None:
        payload["secret_backend_timeout"] = timeout
    if type is not None:
        payload["type"] = type
        payload["config"] = config if config is not None else {}
    kill_after = timeout if timeout is not None else 30
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(command), *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = bytearray(), bytearray()
    readers = [
        threading.Thread(target=_read_capped, args=(proc.stdout, output_max, out)),
        threading.Thread(target=_read_capped, args=(proc.stderr, output_max, err)),
    ]
    for reader in readers:
        reader.start()
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(payload).encode())
    proc.stdin.close()
    try:
        returncode: int | None = proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        returncode = None
    for reader in readers:
        reader.join()
    seconds = time.monotonic() - started
    stderr = err.decode(errors="replace")
    if returncode is None:
        raise AgentError(f"error while running '{command}': command timeout")
    if len(out) > output_max:
        raise AgentError(
            f"error while running '{command}': command output was too long: exceeded "
            f"{output_max} bytes"
        )
    if returncode != 0:
        raise AgentError(f"error while running '{command}': exit status {returncode}: {stderr}")
    try:
        answers = json.loads(bytes(out))
    except json.JSONDecodeError as exc:
        raise AgentError(f"could not unmarshal 'secret_backend_command' output: {exc}")
    values: dict[str, str] = {}
    for handle in secrets:
        entry = answers.get(handle)
        if entry is None:
            raise AgentError(f"secret handle '{handle}' was not resolved by the secret_backend")
        if entry.get("error"):
            raise AgentError(f"an error occurred while resolving '{handle}': {entry['error']}")
        if not entry.get("value"):
            raise AgentError(f"resolved secret for '{handle}' is empty")
        values[handle] = entry["value"]
    return AgentRun(values, bytes(out), stderr, returncode, seconds)


def copy_bundle(bundle: Path, dest: Path) -> Path:
    shutil.copytree(bundle, dest, symlinks=True)
    return dest / NAME
