"""The frozen executable: start-up, a local batch, an AWS client, bundle size.

Builds dist/datadog-secret-backend with packaging/build.sh (what `make binary` runs) when it
is missing or older than the sources, then times whole runs of the executable, as the Agent
sees them (process start to exit), median of RUNS runs each.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "dist" / "datadog-secret-backend"
EXE = BUNDLE / "datadog-secret-backend"
RUNS = 15
TARGETS_MS = {"version": 100, "file": 150, "aws": 400}
SIZE_TARGET_MB = 60


def sources_newer_than(path: Path) -> bool:
    built = path.stat().st_mtime
    trees = [REPO / "secret_backend", REPO / "backends", REPO / "packaging"]
    return any(p.stat().st_mtime > built for tree in trees for p in tree.rglob("*") if p.is_file())


def ensure_build() -> str:
    if EXE.exists() and not sources_newer_than(EXE):
        return "existing build (up to date with the sources)"
    started = time.monotonic()
    subprocess.run(
        [str(REPO / "packaging" / "build.sh")], env={**os.environ, "PY": sys.executable}, check=True
    )
    return f"built by this run in {time.monotonic() - started:.0f} s"


def median_ms(args: list[str], stdin: bytes | None, env: dict[str, str] | None = None) -> float:
    times = []
    full_env = {**os.environ, **(env or {})}
    for _ in range(RUNS):
        started = time.perf_counter()
        proc = subprocess.run(args, input=stdin, capture_output=True, env=full_env)
        times.append(time.perf_counter() - started)
        if proc.returncode != 0 or (stdin and b'"error": null' not in proc.stdout):
            raise RuntimeError(f"{args} failed: {proc.stdout[:300]!r} {proc.stderr[:300]!r}")
    return statistics.median(times) * 1000


def aws_present() -> bool:
    return importlib.util.find_spec("backends.aws_secrets") is not None


@contextlib.contextmanager
def moto_secret() -> Iterator[dict[str, str]]:
    """A moto server on 127.0.0.1 holding one secret; yields the environment to reach it."""
    from tests.moto_server import moto_with_secrets

    with moto_with_secrets({"bench/db": '{"password": "p4ss"}'}) as env:
        yield env


def bundle_mb() -> float:
    return sum(p.stat().st_size for p in BUNDLE.rglob("*") if p.is_file()) / 2**20


def row(name: str, value: float, target: float, unit: str = "ms") -> str:
    verdict = "ok" if value < target else "**over**"
    return f"| {name} | {value:.0f} {unit} | < {target} {unit} | {verdict} |"


def main() -> str:
    how = ensure_build()
    rows = []
    rows.append(row("`--version`", median_ms([str(EXE), "--version"], None), TARGETS_MS["version"]))
    with tempfile.TemporaryDirectory() as tmp:
        secrets = Path(tmp, "secrets.json")
        secrets.write_text(json.dumps({f"key{i}": f"value-{i}" for i in range(100)}))
        request = {
            "version": "1.1",
            "secrets": [f"key{i}" for i in range(100)],
            "type": "file.json",
            "config": {"file_path": str(secrets)},
        }
        file_ms = median_ms([str(EXE)], json.dumps(request).encode())
    rows.append(row("100 `file.json` handles", file_ms, TARGETS_MS["file"]))
    if aws_present():
        with moto_secret() as env:
            request = {
                "version": "1.1",
                "secrets": ["bench/db;password"],
                "type": "aws.secrets",
                "config": {"aws_session": {"aws_region": "us-east-1"}},
            }
            aws_ms = median_ms([str(EXE)], json.dumps(request).encode(), env)
        rows.append(
            row("`aws.secrets`: client + 1 call (moto on 127.0.0.1)", aws_ms, TARGETS_MS["aws"])
        )
    else:
        rows.append("| `aws.secrets` run | not measured: no backends/aws_secrets.py | < 400 ms | |")
    rows.append(row("bundle size", bundle_mb(), SIZE_TARGET_MB, "MB"))
    return (
        "## Frozen executable (PyInstaller one-folder)\n\n"
        f"`dist/datadog-secret-backend/` ({how}); whole runs of the executable, process "
        f"start to exit, median of {RUNS}.\n\n"
        "| scenario | median | target | |\n|---|---|---|---|\n" + "\n".join(rows)
    )


if __name__ == "__main__":
    print(main())
