"""file.json: one JSON file, handles are its top-level keys."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from secret_backend import files, jsonvalue
from secret_backend.backend import Backend, CommonConfig, Ref
from secret_backend.deadline import Deadline
from secret_backend.errors import SecretError

WHOLE_FILE = "file"  # the only fetch key: the file is read and parsed once per run


@dataclasses.dataclass(frozen=True, kw_only=True)
class StructuredFileConfig(CommonConfig):
    file_path: str
    max_file_read_size: int = 0


class JsonFileBackend(Backend):
    type_name = "file.json"
    Config = StructuredFileConfig
    config: StructuredFileConfig
    format_name = "JSON"

    def parse(self, handle: str) -> Ref:
        if not handle:
            raise SecretError("empty handle: expected a top-level key of the file")
        return Ref(WHOLE_FILE, handle)

    def fetch(self, keys: Sequence[Hashable], deadline: Deadline) -> Mapping[Hashable, Any]:
        path = self.config.file_path
        self.count_call()
        data = files.read_secret_file(
            path, path, files.effective_max_size(self.config.max_file_read_size)
        )
        document = self.load(files.decode_text(data, path), path)
        if not isinstance(document, dict):
            raise SecretError(
                f"{self.format_name} file {path} must hold a mapping of keys to values at its "
                f"top level, not a {type(document).__name__}"
            )
        return {key: document for key in keys}

    def load(self, text: str, path: str) -> Any:
        try:
            return jsonvalue.loads_exact(text)
        except json.JSONDecodeError as exc:
            raise SecretError(
                f"file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            )
        except RecursionError:
            raise SecretError(f"file {path} is not valid JSON: nested too deeply")

    def select(self, fetched: Any, ref: Ref) -> str:
        return jsonvalue.select_from_object(fetched, ref.selector, self.config.file_path)

    def describe_key(self, key: Hashable) -> str:
        return self.config.file_path
