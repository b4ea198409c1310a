"""Start-up discipline: the core and a file.json request import no cloud SDK."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO

SDKS = ("boto3", "botocore", "azure", "hvac", "google", "requests", "urllib3", "yaml")


def test_file_json_request_imports_no_sdk() -> None:
    request = json.dumps(
        {
            "version": "1.1",
            "secrets": ["api_key", "db_port"],
            "type": "file.json",
            "config": {"file_path": str(REPO / "examples" / "secrets.json")},
        }
    )
    script = f"""
import io, json, sys
from secret_backend.cli import run
out = io.BytesIO()
code = run([], stdin=io.BytesIO({request.encode()!r}), stdout=out)
answers = json.loads(out.getvalue())
assert code == 0 and answers["db_port"]["value"] == "5432", answers
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({SDKS!r}))
print(json.dumps(loaded))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert json.loads(proc.stdout) == []


def test_version_imports_almost_nothing() -> None:
    script = (
        "import sys; from secret_backend.cli import run; run(['--version']);"
        "ours = ('secret_backend', 'backends');"
        "print(sorted(m for m in sys.modules if m.startswith(ours)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True
    )
    loaded = proc.stdout.splitlines()[-1]
    assert "resolver" not in loaded and "backends" not in loaded, loaded
