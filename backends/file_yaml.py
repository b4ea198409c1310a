"""file.yaml: one YAML file, handles are its top-level keys.

Numbers keep the text they were written with (`1.50` stays `1.50`), booleans become
`true`/`false`, dates their text, nested mappings and lists compact JSON.
"""

from __future__ import annotations

from typing import Any

import yaml

from backends.file_json import JsonFileBackend
from secret_backend.errors import SecretError
from secret_backend.jsonvalue import RawNumber

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _ExactLoader(_BaseLoader):
    """SafeLoader that keeps numbers and timestamps as their source text."""


def _as_text(loader: Any, node: Any) -> RawNumber:
    return RawNumber(node.value)


def _timestamp_text(loader: Any, node: Any) -> str:
    return str(node.value)


_ExactLoader.add_constructor("tag:yaml.org,2002:int", _as_text)
_ExactLoader.add_constructor("tag:yaml.org,2002:float", _as_text)
_ExactLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_text)


class YamlFileBackend(JsonFileBackend):
    type_name = "file.yaml"
    format_name = "YAML"

    def load(self, text: str, path: str) -> Any:
        try:
            return yaml.load(text, Loader=_ExactLoader)  # noqa: S506 (a SafeLoader subclass)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
            raise SecretError(f"file {path} is not valid YAML{where}")
