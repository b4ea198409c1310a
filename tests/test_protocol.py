"""The Agent contract, through the real executable: request validation and answer shape."""

from __future__ import annotations

import json

import pytest

from secret_backend import __version__
from secret_backend.errors import ExitCode
from tests.helpers import REPO, make_request, run_cli

SECRETS_JSON = str(REPO / "examples" / "secrets.json")


def file_request(secrets: list[str], **kw: object) -> dict[str, object]:
    return make_request(secrets, type="file.json", config={"file_path": SECRETS_JSON}, **kw)


BAD_REQUESTS = [
    (b"", "no request on stdin"),
    (b"   \n", "no request on stdin"),
    (b"not json", "not valid JSON"),
    (b'{"version": "1.1", "secrets": ["a"]', "not valid JSON"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b"[]", "must be a JSON object, got a list"),
    (b'"x"', "must be a JSON object"),
    (b"null", "must be a JSON object"),
    (b'{"secrets": ["a"]}', '"version" must be a string'),
    (b'{"version": 1.1, "secrets": ["a"]}', '"version" must be a string'),
    (b'{"version": "2.0", "secrets": ["a"]}', 'unsupported protocol version "2.0"'),
    (b'{"version": "0.9", "secrets": ["a"]}', "unsupported protocol version"),
    (b'{"version": "1.1"}', 'no "secrets" list'),
    (b'{"version": "1.1", "secrets": "a"}', '"secrets" must be a list of strings'),
    (b'{"version": "1.1", "secrets": {"a": 1}}', '"secrets" must be a list of strings'),
    (b'{"version": "1.1", "secrets": ["a", 3]}', '"secrets"[1] must be a string, got 3'),
    (b'{"version": "1.1", "secrets": [null]}', '"secrets"[0] must be a string, got null'),
    (b'{"version": "1.1", "secrets": [], "secret_backend_timeout": "30"}', "number of seconds"),
    (b'{"version": "1.1", "secrets": [], "secret_backend_timeout": true}', "number of seconds"),
    (b'{"version": "1.1", "secrets": [], "secret_backend_timeout": -1}', "must be positive"),
    (b'{"version": "1.1", "secrets": [], "secret_backend_timeout": 0}', "must be positive"),
    (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
]


@pytest.mark.parametrize(("stdin", "message"), BAD_REQUESTS)
def test_bad_requests_fail_with_one_line(stdin: bytes, message: str) -> None:
    result = run_cli(stdin)
    assert result.returncode == ExitCode.BAD_REQUEST
    assert result.stdout == b""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_request_too_large() -> None:
    big = json.dumps({"version": "1.1", "secrets": ["x" * (17 * 1024 * 1024)]}).encode()
    result = run_cli(big)
    assert result.returncode == ExitCode.REQUEST_TOO_LARGE
    assert result.stdout == b""
    assert "over the" in result.stderr and "byte limit" in result.stderr


@pytest.mark.parametrize("version", ["1.0", "1.1", "1", "1.7"])
def test_accepted_versions(version: str) -> None:
    result = run_cli(file_request(["api_key"], version=version))
    assert result.returncode == 0
    assert result.value("api_key") == "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("timeout", [5, 2.5, None])
def test_timeout_int_float_or_absent(timeout: float | None) -> None:
    result = run_cli(file_request(["db_port"], timeout=timeout))
    assert result.value("db_port") == "5432"


def test_answer_shape_values_and_errors() -> None:
    result = run_cli(file_request(["api_key", "db_port", "ratio", "tls", "nope"]))
    assert result.returncode == 0
    assert result.value("db_port") == "5432"
    assert result.value("ratio") == "1.50"
    assert result.value("tls") == '{"enabled":true,"ciphers":["TLS_AES_128_GCM_SHA256"]}'
    assert result.error("nope").startswith('backend does not provide secret key "nope"')
    assert result.stderr == ""


def test_duplicates_answered_once() -> None:
    result = run_cli(file_request(["api_key", "api_key", "db_port", "api_key"]))
    assert list(result.answers) == ["api_key", "db_port"]


def test_empty_secrets_list() -> None:
    result = run_cli(file_request([]))
    assert result.returncode == 0
    assert result.answers == {}


@pytest.mark.parametrize(
    "handle",
    ["", " ", "é", "日本語", "a\nb", "tab\there", "\x00", "\x1b[31m", "\ud800", "emoji 🔑", "a;b"],
)
def test_unicode_and_control_characters_in_handles(handle: str) -> None:
    result = run_cli(file_request([handle, "api_key"]))
    assert result.returncode == 0
    assert set(result.answers) == {handle, "api_key"}
    assert result.error(handle)
    assert result.value("api_key")


def test_ten_thousand_handles() -> None:
    handles = [f"missing_{i}" for i in range(9_998)] + ["api_key", "db_port"]
    result = run_cli(file_request(handles))
    assert result.returncode == 0
    assert len(result.answers) == 10_000
    assert result.value("db_port") == "5432"
    assert result.error("missing_42")


def test_unknown_type() -> None:
    result = run_cli(make_request(["a", "b"], type="aws.secret", config={}))
    for handle in ("a", "b"):
        error = result.error(handle)
        assert error.startswith("unsupported backend type: aws.secret")
        assert "aws.secrets" in error  # lists what is supported


def test_non_string_type_is_unsupported() -> None:
    request = {"version": "1.1", "secrets": ["a"], "type": 12, "config": {}}
    assert run_cli(request).error("a").startswith("unsupported backend type: 12")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"file_path": SECRETS_JSON, "max_file_read_size": "big"},
            'config.max_file_read_size: expected an integer, got "big"',
        ),
        (
            {"file_path": SECRETS_JSON, "file_pat": "x"},
            'config.file_pat: unknown setting (did you mean "file_path"?)',
        ),
        ({}, "config.file_path: required setting is missing"),
        ({"file_path": 3}, "config.file_path: expected a string, got 3"),
        ("file_path", 'config: expected a mapping of settings, got "file_path"'),
        (
            {"file_path": SECRETS_JSON, "concurrency": True},
            "config.concurrency: expected an integer",
        ),
    ],
)
def test_config_errors_name_the_path(config: object, message: str) -> None:
    result = run_cli(make_request(["api_key", "db_port"], type="file.json", config=config))
    assert result.returncode == 0
    for handle in ("api_key", "db_port"):
        assert message in result.error(handle)


def test_version_flag_does_not_read_stdin() -> None:
    # stdin left open and never written: --version must not wait for it.
    import subprocess

    from tests.helpers import executable

    proc = subprocess.Popen(
        [*executable(), "--version"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out.decode().strip() == f"datadog-secret-backend {__version__}"


def test_help() -> None:
    result = run_cli(b"", args=["--help"])
    assert result.returncode == 0
    assert b"--with-provider-prefixes" in result.stdout


def test_unknown_argument_is_a_usage_error() -> None:
    result = run_cli(file_request(["api_key"]), args=["--bogus"])
    assert result.returncode == ExitCode.USAGE
    assert result.stdout == b""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--bogus" in result.stderr


def test_debug_logs_without_values(tmp_path: object) -> None:
    result = run_cli(file_request(["api_key", "db_password"]), args=["--debug"])
    assert "typed (file.json)" in result.stderr
    assert 'handles "api_key", "db_password"' in result.stderr
    assert "provider calls" in result.stderr
    assert "0123456789abcdef" not in result.stderr
    assert "correct-horse" not in result.stderr
    env_result = run_cli(file_request(["api_key"]), env={"DD_SECRET_BACKEND_LOG_LEVEL": "debug"})
    assert "DEBUG" in env_result.stderr
    assert "0123456789abcdef" not in env_result.stderr


def test_console_script_is_installed() -> None:
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "datadog-secret-backend"
    path = str(script) if script.exists() else shutil.which("datadog-secret-backend")
    assert path, "the datadog-secret-backend console script is installed with the project"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("datadog-secret-backend ")
