"""Foundation: file.json requests of 1 to 10,000 handles through the real executable.

Wall time is measured around the whole subprocess (interpreter start included); peak
memory is the child's maximum resident set size from wait4(2).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

from measure import run_measured

REPO = Path(__file__).resolve().parent.parent
RUNS = 9
SIZES = (1, 100, 1_000, 10_000)


def run_once(cmd: list[str], payload: bytes) -> tuple[float, int, bytes]:
    """Wall seconds, peak RSS in KiB, stdout."""
    return run_measured(cmd, payload, cwd=REPO)


def main() -> str:
    cmd = [sys.executable, "-m", "secret_backend"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "secrets.json"
        path.write_text(json.dumps({f"key_{i}": f"value-{i:06d}" for i in range(10_000)}))
        for size in SIZES:
            handles = [f"key_{i}" for i in range(size)]
            payload = json.dumps(
                {
                    "version": "1.1",
                    "secrets": handles,
                    "type": "file.json",
                    "config": {"file_path": str(path)},
                }
            ).encode()
            times, peaks = [], []
            for _ in range(RUNS):
                elapsed, peak, out = run_once(cmd, payload)
                answers = json.loads(out)
                assert len(answers) == size
                assert all(a["error"] is None for a in answers.values())
                times.append(elapsed)
                peaks.append(peak)
            rows.append((size, statistics.median(times), max(peaks)))
        version_times = [run_once([*cmd, "--version"], b"")[0] for _ in range(RUNS)]

    lines = [
        "## Foundation: file.json through `python -m secret_backend`",
        "",
        f"Median of {RUNS} runs each, whole process (interpreter start included), "
        "handles over one 10,000-key JSON file. Target: 10,000 handles under 1 s.",
        "",
        "| handles | median wall time | peak RSS |",
        "|---:|---:|---:|",
    ]
    for size, median, peak in rows:
        lines.append(f"| {size:,} | {median * 1000:.0f} ms | {peak / 1024:.1f} MiB |")
    lines.append(f"| `--version` | {statistics.median(version_times) * 1000:.0f} ms | |")
    base = rows[0][1]
    lines += [
        "",
        f"Cost growth: {(rows[-1][1] - base) / (SIZES[-1] - 1) * 1e6:.1f} µs per extra handle "
        "on top of the process start (one file read and parse, then one dictionary lookup "
        "and one JSON entry per handle).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
