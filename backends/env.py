"""env: secrets from the Agent's environment variables."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from secret_backend.backend import Backend, CommonConfig, Ref
from secret_backend.deadline import Deadline
from secret_backend.errors import SecretError


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnvConfig(CommonConfig):
    # Variables that may be read; empty means any.
    allowed_keys: list[str] = dataclasses.field(default_factory=list)


class EnvBackend(Backend):
    type_name = "env"
    Config = EnvConfig
    config: EnvConfig
    max_batch = 1000

    def parse(self, handle: str) -> Ref:
        if not handle or "=" in handle or "\0" in handle:
            raise SecretError(f"invalid environment variable name {handle!r}")
        allowed = self.config.allowed_keys
        if allowed and handle not in allowed:
            raise SecretError(
                f'environment variable "{handle}" is not in config.allowed_keys; '
                "add it there to allow reading it"
            )
        return Ref(handle)

    def fetch(self, keys: Sequence[Hashable], deadline: Deadline) -> Mapping[Hashable, Any]:
        results: dict[Hashable, Any] = {}
        for key in keys:
            value = os.environ.get(str(key))
            if value is None:
                results[key] = SecretError(
                    f'environment variable "{key}" is not set in the Agent\'s environment'
                )
            else:
                results[key] = value
        return results
