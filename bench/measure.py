"""Run one command the way the benchmarks measure it: wall time and peak RSS of that process.

Peak RSS comes from wait4(2), but a child's ru_maxrss also counts the memory image it had
before exec(): the forking process's, and a benchmark process grows (SDK clients, servers).
So a small interpreter forks the measured process and times it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

SPAWNER = """
import json, os, sys, time
cmd, stdin_path, stdout_path = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(stdin_path, "rb") as stdin, open(stdout_path, "wb") as stdout:
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.dup2(stdin.fileno(), 0)
        os.dup2(stdout.fileno(), 1)
        os.execv(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - started
print(json.dumps([elapsed, usage.ru_maxrss, os.waitstatus_to_exitcode(status)]))
"""


def run_measured(
    cmd: Sequence[str],
    stdin: bytes,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> tuple[float, int, bytes]:
    """(wall seconds, peak RSS in KiB, stdout) of one run; the command must exit 0."""
    with tempfile.TemporaryDirectory() as tmp:
        stdin_path, stdout_path = Path(tmp) / "stdin", Path(tmp) / "stdout"
        stdin_path.write_bytes(stdin)
        report = subprocess.run(
            [
                sys.executable,
                "-S",
                "-c",
                SPAWNER,
                json.dumps(list(cmd)),
                str(stdin_path),
                str(stdout_path),
            ],
            env=dict(env) if env is not None else dict(os.environ),
            cwd=cwd,
            capture_output=True,
            check=True,
        )
        elapsed, peak, code = json.loads(report.stdout)
        assert code == 0, report.stderr
        return elapsed, peak, stdout_path.read_bytes()
