"""file.json, file.yaml, file.text, k8s.file, docker.secrets and env, through the executable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import make_request, run_cli


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    root = tmp_path / "secrets"
    root.mkdir()
    (root / "api_key").write_text("abc123")
    (root / "with_newline").write_text("line\n")
    (root / "empty").write_text("")
    (root / "big").write_bytes(b"x" * 2048)
    (root / "sub").mkdir()
    (root / "sub" / "nested").write_text("deep")
    (root / "binary").write_bytes(b"\xff\xfe\x00")
    outside = tmp_path / "outside"
    outside.write_text("must not be readable")
    (root / "escape_link").symlink_to(outside)
    (root / "inside_link").symlink_to(root / "api_key")
    (root / "dir_link").symlink_to(tmp_path)
    os.mkfifo(root / "fifo")
    return root


def text_request(handles: list[str], root: Path, **config: object) -> dict[str, object]:
    return make_request(handles, type="file.text", config={"secrets_path": str(root), **config})


def test_text_values_are_verbatim(secrets_dir: Path) -> None:
    result = run_cli(
        text_request(["api_key", "with_newline", "sub/nested", "inside_link"], secrets_dir)
    )
    assert result.value("api_key") == "abc123"
    assert result.value("with_newline") == "line\n"
    assert result.value("sub/nested") == "deep"
    assert result.value("inside_link") == "abc123"


def test_absolute_path_inside_directory(secrets_dir: Path) -> None:
    handle = str(secrets_dir / "api_key")
    assert run_cli(text_request([handle], secrets_dir)).value(handle) == "abc123"


@pytest.mark.parametrize(
    "handle",
    [
        "../outside",
        "../../../../../../etc/passwd",
        "/etc/passwd",
        "escape_link",
        "dir_link/outside",
        "sub/../../outside",
    ],
)
def test_paths_outside_the_directory_are_refused(secrets_dir: Path, handle: str) -> None:
    result = run_cli(text_request([handle], secrets_dir))
    error = result.error(handle)
    assert "path outside allowed directory" in error
    assert "must not be readable" not in result.stdout.decode()


def test_file_errors_are_precise(secrets_dir: Path) -> None:
    result = run_cli(
        text_request(
            ["empty", "missing", "big", "sub", "fifo", "binary", ""],
            secrets_dir,
            max_file_read_size=1024,
        )
    )
    assert "secret file 'empty' is empty" in result.error("empty")
    assert "secret file 'missing' does not exist" in result.error("missing")
    assert result.error("big") == (
        "secret file 'big' exceeds maximum size limit of 1024 bytes (actual: 2048 bytes)"
    )
    assert "is a directory" in result.error("sub")
    assert "not a regular file" in result.error("fifo")
    assert "not UTF-8 text" in result.error("binary")
    assert "empty handle" in result.error("")


def test_max_file_read_size_zero_or_negative_means_default(secrets_dir: Path) -> None:
    for size in (0, -5):
        assert run_cli(text_request(["big"], secrets_dir, max_file_read_size=size)).value("big")


def test_unreadable_file(secrets_dir: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    locked = secrets_dir / "locked"
    locked.write_text("x")
    locked.chmod(0)
    assert "not readable" in run_cli(text_request(["locked"], secrets_dir)).error("locked")


@pytest.mark.parametrize("backend_type", ["file.text", "k8s.file", "docker.secrets"])
def test_directory_config_errors(backend_type: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    result = run_cli(make_request(["a"], type=backend_type, config={"secrets_path": str(missing)}))
    assert f"config.secrets_path: directory {missing} does not exist" in result.error("a")
    result = run_cli(make_request(["a"], type=backend_type, config={"secrets_path": "relative"}))
    assert "must be an absolute directory path" in result.error("a")


def test_k8s_file_and_docker_secrets(secrets_dir: Path) -> None:
    for backend_type in ("k8s.file", "docker.secrets"):
        request = make_request(
            ["api_key", "../outside"], type=backend_type, config={"secrets_path": str(secrets_dir)}
        )
        result = run_cli(request)
        assert result.value("api_key") == "abc123"
        assert "path outside allowed directory" in result.error("../outside")


def test_text_file_requires_secrets_path() -> None:
    result = run_cli(make_request(["a"], type="file.text", config={}))
    assert "config.secrets_path: required setting is missing" in result.error("a")


# --- file.json / file.yaml -------------------------------------------------------------


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_json_file_values(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.json",
        '{"s": "v", "port": 3306, "ratio": 0.75, "price": 1.50, "big": 12345678901234567890,'
        ' "precise": 123456789.123456789, "on": true, "off": false, "nested": {"a": [1, 2.0]},'
        ' "nothing": null, "empty": "", "uni": "caf\\u00e9"}',
    )
    handles = ["s", "port", "ratio", "price", "big", "precise", "on", "off", "nested", "uni"]
    result = run_cli(
        make_request(
            [*handles, "nothing", "empty", "x"], type="file.json", config={"file_path": path}
        )
    )
    expected = [
        "v",
        "3306",
        "0.75",
        "1.50",
        "12345678901234567890",
        "123456789.123456789",
        "true",
        "false",
        '{"a":[1,2.0]}',
        "café",
    ]
    assert [result.value(h) for h in handles] == expected
    assert "is null" in result.error("nothing")
    assert "the secret is empty" in result.error("empty")
    assert result.error("x").startswith('backend does not provide secret key "x"')


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "is not valid JSON"), ("[1, 2]", "must hold a mapping"), ("", "is empty")],
)
def test_json_file_errors(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path / "s.json", content)
    result = run_cli(make_request(["a", "b"], type="file.json", config={"file_path": path}))
    assert message in result.error("a")
    assert message in result.error("b")


def test_json_file_missing_and_oversized(tmp_path: Path) -> None:
    result = run_cli(
        make_request(["a"], type="file.json", config={"file_path": str(tmp_path / "none.json")})
    )
    assert "does not exist" in result.error("a")
    path = write(tmp_path / "big.json", json.dumps({"a": "x" * 100}))
    result = run_cli(
        make_request(["a"], type="file.json", config={"file_path": path, "max_file_read_size": 50})
    )
    assert "exceeds maximum size limit of 50 bytes (actual: 109 bytes)" in result.error("a")


def test_yaml_file_values(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.yaml",
        "password: hunter2\nport: 3306\nratio: 1.50\nbig: 12345678901234567890\n"
        "enabled: true\nday: 2024-01-02\nquoted: '0042'\n"
        "nested:\n  user: bob\n  ports: [1, 2]\nnull_value: ~\nmultiline: |\n  a\n  b\n",
    )
    handles = [
        "password",
        "port",
        "ratio",
        "big",
        "enabled",
        "day",
        "quoted",
        "nested",
        "multiline",
    ]
    result = run_cli(
        make_request([*handles, "null_value"], type="file.yaml", config={"file_path": path})
    )
    assert [result.value(h) for h in handles] == [
        "hunter2",
        "3306",
        "1.50",
        "12345678901234567890",
        "true",
        "2024-01-02",
        "0042",
        '{"user":"bob","ports":[1,2]}',
        "a\nb\n",
    ]
    assert "is null" in result.error("null_value")


def test_yaml_file_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "a: [unclosed\n")
    assert "is not valid YAML at line" in run_cli(
        make_request(["a"], type="file.yaml", config={"file_path": path})
    ).error("a")
    path = write(tmp_path / "list.yaml", "- a\n- b\n")
    assert "must hold a mapping" in run_cli(
        make_request(["a"], type="file.yaml", config={"file_path": path})
    ).error("a")
    path = write(tmp_path / "unsafe.yaml", "a: !!python/object/apply:os.system ['true']\n")
    assert "is not valid YAML" in run_cli(
        make_request(["a"], type="file.yaml", config={"file_path": path})
    ).error("a")


# --- env --------------------------------------------------------------------------------


def test_env_backend() -> None:
    env = {"MY_SECRET": "s3cret", "OTHER": "x", "EMPTY_VAR": ""}
    result = run_cli(
        make_request(["MY_SECRET", "UNSET_VAR_XYZ", "EMPTY_VAR", "a=b"], type="env"), env=env
    )
    assert result.value("MY_SECRET") == "s3cret"
    assert "is not set" in result.error("UNSET_VAR_XYZ")
    assert "the secret is empty" in result.error("EMPTY_VAR")
    assert "invalid environment variable name" in result.error("a=b")


def test_env_allowed_keys() -> None:
    request = make_request(
        ["MY_SECRET", "OTHER"], type="env", config={"allowed_keys": ["MY_SECRET"]}
    )
    result = run_cli(request, env={"MY_SECRET": "s3cret", "OTHER": "x"})
    assert result.value("MY_SECRET") == "s3cret"
    assert "not in config.allowed_keys" in result.error("OTHER")
    bad = run_cli(make_request(["A"], type="env", config={"allowed_keys": "A"}))
    assert "config.allowed_keys: expected a list" in bad.error("A")
