"""Backends used by the resolver tests: real implementations of the Backend interface that
record their calls, hang, or fail, to exercise the resolver's guarantees."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from secret_backend.backend import Backend, CommonConfig, Ref
from secret_backend.deadline import Deadline
from secret_backend.errors import SecretError


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordingConfig(CommonConfig):
    hang_on: list[str] = dataclasses.field(default_factory=list)  # keys that never return
    hang_in_init: bool = False
    fail_on: list[str] = dataclasses.field(default_factory=list)  # keys whose chunk raises


class RecordingBackend(Backend):
    """Handles are `key;field`; the fetched value of `key` is `{"field": "<key>.<field>"}`."""

    type_name = "test.recording"
    Config = RecordingConfig
    config: RecordingConfig
    max_batch = 3
    default_concurrency = 2
    fetched_chunks: list[list[Hashable]]

    def __init__(self, config: Any, deadline: Deadline) -> None:
        super().__init__(config, deadline)
        self.fetched_chunks = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        if config.hang_in_init:
            time.sleep(3600)

    def parse(self, handle: str) -> Ref:
        key, sep, field = handle.partition(";")
        if not sep:
            raise SecretError("expected key;field")
        return Ref(key, field)

    def fetch(self, keys: Sequence[Hashable], deadline: Deadline) -> Mapping[Hashable, Any]:
        self.count_call()
        with self.lock:
            self.fetched_chunks.append(list(keys))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if any(k in self.config.hang_on for k in keys):
                time.sleep(3600)
            if any(k in self.config.fail_on for k in keys):
                raise SecretError("provider said no")
            time.sleep(0.02)
            return {k: {"field": f"{k}.field", "other": f"{k}.other"} for k in keys}
        finally:
            with self.lock:
                self.in_flight -= 1

    def select(self, fetched: Any, ref: Ref) -> str:
        if ref.selector not in fetched:
            raise SecretError(f"no field {ref.selector}")
        return str(fetched[ref.selector])
