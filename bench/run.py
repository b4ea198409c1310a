"""`make bench`: run every bench/bench_*.py and write docs/benchmarks.md.

Each module exposes `main() -> str` returning a Markdown section (with its own heading);
sections are written in file-name order, all measured in this one run.
"""

from __future__ import annotations

import compileall
import importlib.util
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]


def main() -> int:
    only = sys.argv[1:]
    # Like an installed package: our sources byte-compiled once, not at every measured start
    # (PYTHONDONTWRITEBYTECODE, set on some machines, would make every run compile them).
    compileall.compile_dir(REPO / "secret_backend", quiet=1)
    compileall.compile_dir(REPO / "backends", quiet=1)
    sections = []
    for path in sorted(HERE.glob("bench_*.py")):
        if only and path.stem.removeprefix("bench_") not in only:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"== {path.name}", flush=True)
        section = module.main()
        print(section, flush=True)
        sections.append(section)
    header = (
        "# Benchmarks\n\n"
        f"Written by `make bench` on {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}. All numbers in this file come from one run; "
        "times are medians.\n\n"
    )
    out = REPO / "docs" / "benchmarks.md"
    if only and out.exists():
        print(f"(partial run: {out} not rewritten)")
        return 0
    out.parent.mkdir(exist_ok=True)
    out.write_text(header + "\n\n".join(sections) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
