"""Unit tests of the pure core pieces: JSON selection, config building, deadline."""

from __future__ import annotations

import dataclasses
import time

import pytest

from secret_backend import jsonvalue
from secret_backend.config import build
from secret_backend.deadline import Deadline, safety_margin
from secret_backend.errors import ConfigError, SecretError


@pytest.mark.parametrize(
    ("raw", "key", "expected"),
    [
        ('{"a": "x"}', "a", "x"),
        ('{"a": 3306}', "a", "3306"),
        ('{"a": 0.75}', "a", "0.75"),
        ('{"a": 1.50}', "a", "1.50"),
        ('{"a": 123456789.123456789}', "a", "123456789.123456789"),
        ('{"a": 12345678901234567890}', "a", "12345678901234567890"),
        ('{"a": -1e10}', "a", "-1e10"),
        ('{"a": true}', "a", "true"),
        ('{"a": false}', "a", "false"),
        ('{"a": {"b": [1, 2.50, {"c": null}]}}', "a", '{"b":[1,2.50,{"c":null}]}'),
        ('{"a": ["x", "é"]}', "a", '["x","é"]'),
        ("plain text", "anything", "plain text"),
        ("[1, 2]", "a", "[1, 2]"),
        ('"just a string"', "a", '"just a string"'),
        ("42", "a", "42"),
        ("{broken", "a", "{broken"),
    ],
)
def test_select_key(raw: str, key: str, expected: str) -> None:
    assert jsonvalue.select_key(raw, key, "secret 'db'") == expected


def test_force_string_returns_whole_value() -> None:
    assert jsonvalue.select_key('{"a": 1}', "a", "x", force_string=True) == '{"a": 1}'


def test_missing_key_names_key_and_lists_present_keys() -> None:
    with pytest.raises(SecretError) as info:
        jsonvalue.select_key('{"user": "u", "host": "h"}', "password", "secret 'db'")
    message = str(info.value)
    assert message.startswith(jsonvalue.MISSING_KEY)
    assert '"password"' in message and '"host", "user"' in message
    assert '"u"' not in message  # values are never shown


def test_null_value_is_an_error() -> None:
    with pytest.raises(SecretError, match="is null"):
        jsonvalue.select_key('{"a": null}', "a", "x")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner:
    region: str = "us-east-1"
    retries: int = 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer:
    name: str
    ratio: float = 1.0
    enabled: bool = False
    tags: list[str] = dataclasses.field(default_factory=list)
    session: Inner = dataclasses.field(default_factory=Inner)
    optional: int | None = None


def test_build_converts_and_defaults() -> None:
    built = build(
        Outer,
        {"name": "n", "ratio": 2, "enabled": "true", "tags": ["a"], "session": {"retries": 5.0}},
    )
    assert built == Outer(
        name="n",
        ratio=2.0,
        enabled=True,
        tags=("a",),  # type: ignore[arg-type]
        session=Inner(retries=5),
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "config.name: required setting is missing"),
        ({"name": "n", "ratio": "x"}, 'config.ratio: expected a number, got "x"'),
        ({"name": "n", "enabled": 1}, "config.enabled: expected a boolean (true or false), got 1"),
        ({"name": "n", "tags": ["a", 2]}, "config.tags[1]: expected a string, got 2"),
        (
            {"name": "n", "session": {"regoin": "x"}},
            'config.session.regoin: unknown setting (did you mean "region"?)',
        ),
        ({"name": "n", "session": {"retries": 1.5}}, "config.session.retries: expected an integer"),
        ({"name": "n", "session": []}, "config.session: expected a mapping of settings"),
        ({"name": "n", "optional": "x" * 100}, "got a string of 100 characters"),
    ],
)
def test_build_errors_name_the_path(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(Outer, data)
    assert message in str(info.value)


def test_deadline_margin_and_cap() -> None:
    assert safety_margin(30) == 2.0
    assert safety_margin(1) == 0.2
    assert safety_margin(5) == 0.5
    deadline = Deadline.after(10)
    assert 9 < deadline.cap(60) <= 10
    assert deadline.cap(1) == 1
    expired = Deadline.after(-1)
    assert expired.expired()
    assert expired.cap(5) == 0.001


@dataclasses.dataclass(frozen=True, kw_only=True)
class Credentials:
    client_secret: str = ""
    vault_token: str = ""
    allowed_keys: list[str] = dataclasses.field(default_factory=list)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"client_secret": 12345678}, "config.client_secret: expected a string, got a number"),
        ({"vault_token": ["hvs.x"]}, "config.vault_token: expected a string, got a list"),
    ],
)
def test_wrongly_typed_credentials_are_not_echoed(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(Credentials, data)
    assert str(info.value) == message
    assert "12345678" not in str(info.value)


def test_retry_after_seconds_and_http_dates() -> None:
    from email.utils import formatdate

    from secret_backend.retrying import retry_after

    assert retry_after("3") == 3.0
    assert retry_after("0.5") == 0.5
    assert retry_after("-4") == 0.0
    in_a_minute = retry_after(formatdate(time.time() + 60, usegmt=True))
    assert in_a_minute is not None and 55 < in_a_minute <= 60
    assert retry_after(formatdate(time.time() - 60, usegmt=True)) == 0.0
    for unreadable in (None, "", "soon", "Fri, 99 Foo 2024"):
        assert retry_after(unreadable) is None
