"""Refuse to build with dependency versions other than the pins in constraints.txt.

A reproducible build needs the same inputs: every package pinned in constraints.txt that is
installed in the build environment must have exactly the pinned version (`make binary`
installs them with `pip install -c constraints.txt`).
"""

import re
import sys
from importlib import metadata
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)")


def main() -> int:
    constraints = Path(sys.argv[1] if len(sys.argv) > 1 else "constraints.txt")
    wrong = []
    for line in constraints.read_text().splitlines():
        match = PIN.match(line.strip())
        if not match:
            continue
        name, pinned = match.groups()
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if installed != pinned:
            wrong.append(f"{name} {installed} (pinned {pinned})")
    if wrong:
        print(
            f"check_pins: not the versions pinned in {constraints}: {', '.join(wrong)}; "
            "run: pip install -c constraints.txt -e '.[build]'",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
