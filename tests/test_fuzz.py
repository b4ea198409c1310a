"""Fuzzing with hypothesis: the request parser in-process, and the whole executable.

Properties (README "Exit codes"): a request is either answered (exit 0, stdout one JSON
object with exactly one entry per distinct handle, exactly one of value/error null) or
refused (exit 3 or 4, empty stdout, one line on stderr); never a traceback.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from secret_backend.errors import ExitCode, RequestError, SecretError
from secret_backend.protocol import MAX_REQUEST_BYTES, Request, encode_response, parse_request
from tests.helpers import executable, run_cli

FIELDS = ("version", "secrets", "secret_backend_timeout", "type", "config")

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
# Handles as the Agent could send them, and worse: unicode, control characters, lone
# surrogates (legal in JSON text as \ud800 escapes), separators, long strings.
handles = st.text(
    st.characters(codec=None, exclude_categories=()),  # every code point, surrogates included
    max_size=40,
) | st.sampled_from(["", " ", ";", "a;b", "../etc/passwd", "x" * 5000, "\x00", "é\u202e"])
versions = st.sampled_from(["1.0", "1.1", "1", "1.99", " 1.1", "2.0", "0.9", "", "v1"]) | st.text(
    max_size=8
)


def is_valid(doc: Any) -> bool:
    """The specification of a valid request, written independently of the parser."""
    if not isinstance(doc, dict):
        return False
    version = doc.get("version")
    if not isinstance(version, str) or version.split(".", 1)[0].strip() != "1":
        return False
    secrets = doc.get("secrets")
    if not isinstance(secrets, list) or not all(isinstance(h, str) for h in secrets):
        return False
    timeout = doc.get("secret_backend_timeout")
    if timeout is None:
        return True
    return (
        not isinstance(timeout, bool)
        and isinstance(timeout, (int, float))
        and math.isfinite(timeout)
        and timeout > 0
    )


# A request whose every field is either the right type or any JSON value at all.
requests_docs = st.fixed_dictionaries(
    {},
    optional={
        "version": versions | json_values,
        "secrets": st.lists(handles, max_size=8) | json_values,
        "secret_backend_timeout": st.floats(min_value=0.001, max_value=1e6) | json_values,
        "type": st.sampled_from(["file.json", "env", "nope"]) | json_values,
        "config": json_values,
    },
)


def check_parse(data: bytes) -> Request | RequestError:
    try:
        return parse_request(data)
    except RequestError as exc:
        assert exc.code in (ExitCode.BAD_REQUEST, ExitCode.REQUEST_TOO_LARGE)
        message = str(exc)
        assert message and "\n" not in message, message  # one line on stderr
        assert len(message) < 400, message  # never echoes a huge input back
        return exc


# -- in-process: the parser ----------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
@example(b"")
@example(b"\xff\xfe")
@example(b"[" * 100_000)
@example(b'{"version": "1.1", "secrets": ["a"]}')
def test_parser_on_random_bytes(data: bytes) -> None:
    check_parse(data)


@settings(max_examples=400, deadline=None)
@given(requests_docs)
@example({"version": "\n", "secrets": []})  # was: a request error on two stderr lines
def test_parser_agrees_with_the_specification(doc: dict[str, Any]) -> None:
    outcome = check_parse(json.dumps(doc).encode())
    if is_valid(doc):
        assert isinstance(outcome, Request), outcome
        assert outcome.secrets == doc["secrets"]
        assert outcome.timeout > 0 and math.isfinite(outcome.timeout)
    else:
        assert isinstance(outcome, RequestError), doc


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FIELDS), json_values)
def test_parser_wrong_type_at_every_field(field: str, value: Any) -> None:
    doc: dict[str, Any] = {"version": "1.1", "secrets": ["a", "b"], "secret_backend_timeout": 5}
    doc[field] = value
    outcome = check_parse(json.dumps(doc).encode())
    assert isinstance(outcome, Request) == is_valid(doc)


@settings(max_examples=100, deadline=None)
@given(st.lists(handles, max_size=30))
def test_parser_keeps_duplicates_and_any_text(secrets: list[str]) -> None:
    doc = {"version": "1.1", "secrets": secrets}
    outcome = check_parse(json.dumps(doc).encode())
    assert isinstance(outcome, Request)
    assert outcome.secrets == secrets


def test_parser_huge_inputs() -> None:
    big_handle = "h" * (8 * 1024 * 1024)
    parsed = check_parse(json.dumps({"version": "1.1", "secrets": [big_handle]}).encode())
    assert isinstance(parsed, Request) and parsed.secrets == [big_handle]
    too_big = check_parse(b" " * (MAX_REQUEST_BYTES + 1))
    assert isinstance(too_big, RequestError) and too_big.code == ExitCode.REQUEST_TOO_LARGE
    deep = check_parse(b'{"version": "1.1", "secrets": [], "config": ' + b"[" * 200_000 + b"}")
    assert isinstance(deep, RequestError)
    huge_version = check_parse(json.dumps({"version": "9" * 100_000, "secrets": []}).encode())
    assert isinstance(huge_version, RequestError)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(handles, st.one_of(handles.filter(bool), handles.map(SecretError))))
def test_response_is_one_ascii_json_object(answers: dict[str, Any]) -> None:
    out = encode_response(answers)
    text = out.decode("ascii")  # lone surrogates must not break writing the answer
    assert text.endswith("\n") and text.count("\n") == 1
    decoded = json.loads(text)
    assert list(decoded) == list(answers)
    for handle, entry in decoded.items():
        answer = answers[handle]
        if isinstance(answer, SecretError):
            assert entry["value"] is None and entry["error"]
        else:
            assert entry == {"value": answer, "error": None}


# -- the whole executable ------------------------------------------------------------

SUBPROCESS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file.json whose keys are strange on purpose."""
    path = tmp_path_factory.mktemp("fuzz") / "secrets.json"
    keys = ["a", "b", "é", "\x01ctl", "semi;colon", "\ud800", "sp ace", "x" * 300]
    path.write_text(json.dumps({k: f"value-of-{i}" for i, k in enumerate(keys)}))
    return path


def stored(store: Path) -> dict[str, str]:
    return dict(json.loads(store.read_text()))


def check_answered(result: Any, secrets: list[str], store: dict[str, str] | None = None) -> None:
    """run_cli already checked: exit 0 => one object, every handle once, one of value/error."""
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert len(answers) == len(set(secrets))
    if store is not None:
        for handle in set(secrets):
            if store.get(handle):
                assert answers[handle] == {"value": store[handle], "error": None}
            else:
                assert answers[handle]["value"] is None and answers[handle]["error"]


@SUBPROCESS
@given(st.lists(handles | st.sampled_from(["a", "b", "é", "\x01ctl", "\ud800"]), max_size=12))
def test_executable_answers_every_distinct_handle_once(store: Path, secrets: list[str]) -> None:
    request = {"version": "1.1", "secrets": secrets, "type": "file.json"}
    request["config"] = {"file_path": str(store)}
    result = run_cli(request, timeout=30)
    check_answered(result, secrets, stored(store))


@SUBPROCESS
@given(requests_docs)
def test_executable_on_any_request_document(doc: dict[str, Any]) -> None:
    result = run_cli(json.dumps(doc), timeout=30)
    check_exit(result)
    if is_valid(doc):
        check_answered(result, doc["secrets"])
    else:
        assert result.returncode == ExitCode.BAD_REQUEST


@SUBPROCESS
@given(st.binary(max_size=300))
@example(b'{"version": "1.1", "secrets": ["a"], "type": "file.json"}')
def test_executable_on_random_bytes(data: bytes) -> None:
    check_exit(run_cli(data, timeout=30))


def check_exit(result: Any) -> None:
    assert "Traceback" not in result.stderr
    assert result.returncode in (ExitCode.OK, ExitCode.BAD_REQUEST, ExitCode.REQUEST_TOO_LARGE)
    if result.returncode == ExitCode.OK:
        assert isinstance(json.loads(result.stdout), dict)
        assert result.stdout.count(b"\n") == 1
    else:
        assert result.stdout == b""
        assert result.stderr.count("\n") == 1, result.stderr  # one line


def test_ten_thousand_handles_with_duplicates(store: Path, tmp_path: Path) -> None:
    many = tmp_path / "many.json"
    many.write_text(json.dumps({f"k{i}": f"v{i}" for i in range(0, 10_000, 2)}))
    secrets = [f"k{i}" for i in range(10_000)] + [f"k{i}" for i in range(0, 10_000, 7)]
    request = {"version": "1.1", "secrets": secrets, "type": "file.json"}
    request["config"] = {"file_path": str(many)}
    result = run_cli(request, timeout=60)
    check_answered(result, secrets, {f"k{i}": f"v{i}" for i in range(0, 10_000, 2)})
    assert len(result.answers) == 10_000


def test_executable_refuses_a_request_over_the_size_limit() -> None:
    import subprocess

    data = b'{"version": "1.1", "secrets": ["' + b"x" * MAX_REQUEST_BYTES + b'"]}'
    proc = subprocess.run([*executable()], input=data, capture_output=True, timeout=60)
    assert proc.returncode == ExitCode.REQUEST_TOO_LARGE
    assert proc.stdout == b""
    assert b"Traceback" not in proc.stderr and proc.stderr.count(b"\n") == 1
