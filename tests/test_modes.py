"""Multi-backend file mode and provider-prefix mode, through the executable."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, make_request, run_cli


@pytest.fixture
def v0_config(tmp_path: Path) -> Path:
    (tmp_path / "secrets.json").write_text('{"api_key": "k1", "port": 8125}')
    (tmp_path / "secrets.yaml").write_text("password: p@ss\n")
    config = tmp_path / "datadog-secret-backend.yaml"
    config.write_text(
        f"""
backends:
  json:
    backend_type: file.json
    file_path: {tmp_path / "secrets.json"}
  yaml:
    backend_type: file.yaml
    file_path: {tmp_path / "secrets.yaml"}
  broken:
    backend_type: file.json
    file_path: 12
  misspelled:
    backend_type: file.jsn
    file_path: x
  no_type:
    file_path: x
  never_used:
    backend_type: aws.secrets
    no_such_setting: will not be validated because no handle uses it
"""
    )
    return config


@pytest.mark.parametrize("flag", ["--config", "-config"])
def test_multi_backend_file(v0_config: Path, flag: str) -> None:
    handles = [
        "json:api_key",
        "json:port",
        "yaml:password",
        "json:missing",
        "broken:x",
        "misspelled:x",
        "no_type:x",
        "nocolon",
        "unknown:x",
        "json:with:colon",
    ]
    result = run_cli(make_request(handles), args=[flag, str(v0_config)])
    assert result.value("json:api_key") == "k1"
    assert result.value("json:port") == "8125"
    assert result.value("yaml:password") == "p@ss"
    assert 'does not provide secret key "missing"' in result.error("json:missing")
    assert "backends.broken.file_path: expected a string, got 12" in result.error("broken:x")
    assert "unsupported backend type: file.jsn" in result.error("misspelled:x")
    assert "backends.no_type.backend_type: required setting is missing" in result.error("no_type:x")
    assert 'expected "<backend_id>:<secret_key>"' in result.error("nocolon")
    assert result.error("unknown:x").startswith('undefined backend "unknown"')
    # split on the first ":" only
    assert 'does not provide secret key "with:colon"' in result.error("json:with:colon")


def test_only_used_backends_are_initialised(v0_config: Path) -> None:
    # "never_used" is an aws.secrets backend with an invalid key: untouched, no error, no SDK.
    result = run_cli(make_request(["json:api_key"]), args=["--config", str(v0_config), "--debug"])
    assert result.value("json:api_key") == "k1"
    assert "never_used" not in result.stderr


def test_config_file_next_to_the_executable(tmp_path: Path) -> None:
    """Without --config and without a type, the YAML next to the executable is used."""
    install = tmp_path / "install"
    install.mkdir()
    (tmp_path / "s.json").write_text('{"token": "t0k"}')
    (install / "datadog-secret-backend.yaml").write_text(
        f"backends:\n  local:\n    backend_type: file.json\n    file_path: {tmp_path / 's.json'}\n"
    )
    # A launcher in its own directory, as the Agent runs the installed executable.
    launcher = install / "datadog-secret-backend"
    launcher.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
        "from secret_backend.__main__ import main\nsys.exit(main())\n"
    )
    launcher.chmod(0o700)
    result = run_cli(make_request(["local:token"]), exe=[str(launcher)])
    assert result.value("local:token") == "t0k"


def test_no_type_and_no_config_file() -> None:
    result = run_cli(make_request(["a:b"]))
    error = result.error("a:b")
    assert "no backend configured" in error
    assert "datadog-secret-backend.yaml" in error


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("backends: [1]", "must contain a 'backends' mapping"),
        ("a: [", "is not valid YAML"),
        ("backends: {}\n" + "#" * 1024 * 1024, "is larger than 1048576 bytes"),
    ],
    ids=["not-a-mapping", "bad-yaml", "too-large"],
)
def test_bad_multi_backend_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(content)
    result = run_cli(make_request(["a:b", "c:d"]), args=["--config", str(path)])
    assert message in result.error("a:b")
    assert message in result.error("c:d")


def test_multi_backend_file_that_is_a_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    result = run_cli(make_request(["a:b"]), args=["--config", str(fifo)], timeout=20)
    assert "is not a regular file" in result.error("a:b")


def test_command_line_mode_wins_over_request_type(v0_config: Path) -> None:
    request = make_request(["json:api_key"], type="env", config={})
    assert run_cli(request, args=["--config", str(v0_config)]).value("json:api_key") == "k1"


# --- provider prefixes ------------------------------------------------------------------


def test_provider_prefixes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "db_pass").write_text("rootsecret")
    (tmp_path / "abs_secret").write_text("absolute")
    (root / "escape").symlink_to(tmp_path / "abs_secret")
    handles = [
        "db_pass",
        f"file@{tmp_path / 'abs_secret'}",
        "file@relative/path",
        "vault@x",
        "escape",
        "../abs_secret",
        "k8s_secret@bad",
    ]
    result = run_cli(make_request(handles), args=["--with-provider-prefixes", str(root)])
    assert result.value("db_pass") == "rootsecret"
    assert result.value(f"file@{tmp_path / 'abs_secret'}") == "absolute"
    assert "file@ needs an absolute path" in result.error("file@relative/path")
    assert result.error("vault@x") == "provider not supported: vault"
    assert "path outside allowed directory" in result.error("escape")
    assert "path outside allowed directory" in result.error("../abs_secret")
    assert "expected k8s_secret@<namespace>/<secret name>/<key>" in result.error("k8s_secret@bad")


def test_provider_prefixes_without_root_dir(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("v")
    result = run_cli(
        make_request(["bare", f"file@{tmp_path / 's'}"]), args=["--with-provider-prefixes"]
    )
    assert "no root directory was given" in result.error("bare")
    assert result.value(f"file@{tmp_path / 's'}") == "v"
