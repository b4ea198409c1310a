"""Typed configuration objects built from the untyped dicts found in requests and YAML files.

Each backend declares its configuration as a frozen dataclass. `build()` checks every key
and type and names what is wrong with its full path, so the operator knows what to fix:
`config.max_file_read_size: expected an integer, got "big"`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from secret_backend.errors import ConfigError

T = TypeVar("T")

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean (true or false)",
    list: "a list",
    dict: "a mapping",
}


# Settings whose values must never be echoed in an error, even when they have the wrong type.
_SENSITIVE = ("secret", "password", "token", "key", "jwt", "credential")


def describe(value: Any, path: str = "") -> str:
    """A short, safe description of a wrong value: its JSON text if short, else its type.

    For settings that may hold a credential (by name), only the type is described.
    """
    leaf = path.rsplit(".", 1)[-1].lower()
    if any(word in leaf for word in _SENSITIVE):
        if isinstance(value, str):
            return f"a string of {len(value)} characters"
        if isinstance(value, (bool, int, float)):
            return "a boolean" if isinstance(value, bool) else "a number"
    if isinstance(value, (bool, int, float)) or value is None:
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value) if len(value) <= 40 else f"a string of {len(value)} characters"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _convert(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, options[0], path)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        if value is None:
            value = {}
        return build(typing.cast(type, hint), value, path)
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {describe(value, path)}")
        return tuple(_convert(v, item_hint, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {describe(value, path)}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str and isinstance(value, str):
        return value
    expected = _TYPE_NAMES.get(hint, str(hint))
    raise ConfigError(f"{path}: expected {expected}, got {describe(value, path)}")


def build(cls: type[T], data: Any, path: str = "config") -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types by path."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of settings, got {describe(data, path)}")
    fields = {f.name: f for f in dataclasses.fields(typing.cast(Any, cls))}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            import difflib  # only on this error path: it is slow to import

            hint = ""
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            if close:
                hint = f' (did you mean "{close[0]}"?)'
            known = ", ".join(sorted(fields)) or "none"
            raise ConfigError(f"{path}.{key}: unknown setting{hint}; known settings: {known}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        has_default = (
            field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING
        )
        if name not in data or (data[name] is None and has_default):
            if not has_default:
                raise ConfigError(f"{path}.{name}: required setting is missing")
            continue
        values[name] = _convert(data[name], hints[name], f"{path}.{name}")
    return cls(**values)
