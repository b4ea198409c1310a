#!/usr/bin/env bash
# Reproducible one-folder PyInstaller build of datadog-secret-backend.
#
#   packaging/build.sh            -> dist/datadog-secret-backend/{datadog-secret-backend,_internal/}
#
# `make binary` runs this after installing the pinned dependencies (constraints.txt) into .venv;
# the end-to-end tests run the same script. Environment overrides: PY (the Python that has
# PyInstaller and every backend SDK installed), DIST and WORK (output and scratch directories).
#
# Reproducibility: PyInstaller orders its tables through sets and dicts, so the hash seed is
# fixed; SOURCE_DATE_EPOCH (the last commit's time) pins every timestamp PyInstaller writes.
# Two builds of the same commit give a byte-identical executable (tests/test_binary.py checks it).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
DIST="${DIST:-$REPO/dist}"
WORK="${WORK:-$REPO/build/pyinstaller}"

export PYTHONHASHSEED=0
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH="$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 315532800)"
fi
export SOURCE_DATE_EPOCH
# Never let a developer's bytecode or site customisations leak into the bundle.
export PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1

"$PY" "$REPO/packaging/check_pins.py" "$REPO/constraints.txt"
if ! "$PY" -c 'import PyInstaller' 2>/dev/null; then
    echo "build.sh: PyInstaller is not installed for $PY: make binary installs it" >&2
    exit 1
fi

rm -rf "$WORK"
# PyInstaller's cache (stripped binaries) is global by default and --clean empties it: keep
# one per build so that concurrent builds (tests, CI) never pull files from under each other.
export PYINSTALLER_CONFIG_DIR="$WORK/cache"
"$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$DIST" --workpath "$WORK" "$REPO/packaging/datadog-secret-backend.spec"

EXE="$DIST/datadog-secret-backend/datadog-secret-backend"
echo "built $EXE"
echo "  sha256 $(sha256sum "$EXE" | cut -d' ' -f1)"
echo "  bundle $(du -sb "$DIST/datadog-secret-backend" | cut -f1) bytes"
