"""Shared JSON selection for `id;key` handles (CONTRACT section 3).

* a string value is returned as is;
* a number keeps its exact source text (`1.50` stays `1.50`, 20-digit integers stay exact);
* `true` / `false` as such; objects and arrays as compact JSON (numbers still exact);
* a secret that is not a JSON object is returned whole, whatever the key;
* `force_string`: always the whole value.
"""

from __future__ import annotations

import json
from typing import Any

from secret_backend.errors import SecretError

MISSING_KEY = "backend does not provide secret key"


class RawNumber(str):
    """A number kept as the exact text it was written with."""

    __slots__ = ()


def loads_exact(text: str) -> Any:
    """json.loads, with numbers kept as RawNumber text instead of int/float."""
    return json.loads(text, parse_int=RawNumber, parse_float=RawNumber, parse_constant=RawNumber)


def parse_object(text: str) -> dict[str, Any] | None:
    """The JSON object in `text`, or None when `text` is not a JSON object."""
    stripped = text.lstrip()
    if not stripped.startswith("{"):
        return None
    try:
        value = loads_exact(stripped)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def render(value: Any) -> str:
    """A selected value as the text the Agent receives."""
    if isinstance(value, str):  # includes RawNumber
        return str.__str__(value)
    return dumps_compact(value)


def dumps_compact(value: Any) -> str:
    """Compact JSON text, with RawNumber written verbatim and non-ASCII kept as is."""
    if isinstance(value, RawNumber):
        return str.__str__(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    if isinstance(value, dict):
        items = (f"{dumps_compact(str(k))}:{dumps_compact(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps_compact(v) for v in value) + "]"
    # e.g. dates from YAML: their canonical text.
    return json.dumps(str(value), ensure_ascii=False)


def missing_key_error(key: str, where: str, available: Any = ()) -> SecretError:
    names = sorted(str(k) for k in available)
    hint = ""
    if names:
        shown = ", ".join(f'"{n}"' for n in names[:10])
        hint = f"; keys present: {shown}" + (", ..." if len(names) > 10 else "")
    return SecretError(f'{MISSING_KEY} "{key}" in {where}{hint}')


def select_from_object(obj: dict[str, Any], key: str, where: str) -> str:
    """The rendered value of `key` in an already parsed object."""
    if key not in obj:
        raise missing_key_error(key, where, obj.keys())
    value = obj[key]
    if value is None:
        raise SecretError(f'secret key "{key}" in {where} is null')
    return render(value)


def select_key(raw: str, key: str, where: str, *, force_string: bool = False) -> str:
    """Apply an `id;key` selector to a secret's raw text."""
    if force_string:
        return raw
    obj = parse_object(raw)
    if obj is None:
        return raw
    return select_from_object(obj, key, where)
