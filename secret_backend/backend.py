"""The interface every backend implements: batch-first, deadline-aware.

The resolver (not the backend) owns dedupe, chunking, concurrency, the deadline and the
guarantee that every handle gets exactly one answer. A backend only:

1. `parse(handle)`: splits a handle into a `Ref` = fetch key (what goes over the wire: a
   secret id, a Vault path, a file) + selector (a JSON key, a pointer...). Handles that share
   a fetch key cost one fetch.
2. `fetch(keys, deadline)`: fetches up to `max_batch` distinct keys, answering each with a
   fetched object or a `SecretError`. Raising fails the whole chunk.
3. `select(fetched, ref)`: turns one fetched object into the handle's final string value.
"""

from __future__ import annotations

import abc
import dataclasses
import threading
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

from secret_backend.deadline import Deadline
from secret_backend.errors import SecretError


@dataclasses.dataclass(frozen=True, kw_only=True)
class CommonConfig:
    """Settings every backend accepts; backend configs subclass this."""

    # Maximum number of provider calls in flight for this backend (default: the backend's own).
    concurrency: int | None = None


@dataclasses.dataclass(frozen=True)
class Ref:
    fetch_key: Hashable
    selector: Any = None


class Backend(abc.ABC):
    type_name: ClassVar[str]
    Config: ClassVar[type[CommonConfig]] = CommonConfig
    # Keys per fetch() call: >1 where the provider has a batch API.
    max_batch: ClassVar[int] = 1
    # Provider calls in flight at once, unless the config's `concurrency` says otherwise.
    default_concurrency: ClassVar[int] = 8

    def __init__(self, config: Any, deadline: Deadline) -> None:
        self.config = config
        self._calls = 0
        self._calls_lock = threading.Lock()

    @property
    def concurrency(self) -> int:
        wanted = getattr(self.config, "concurrency", None)
        return max(1, wanted) if wanted else self.default_concurrency

    @property
    def calls(self) -> int:
        """Provider calls made so far (for --debug statistics and tests)."""
        return self._calls

    def count_call(self, n: int = 1) -> None:
        with self._calls_lock:
            self._calls += n

    def parse(self, handle: str) -> Ref:
        """Split a handle; raise SecretError when it is malformed. Default: fetch it whole."""
        return Ref(handle)

    @abc.abstractmethod
    def fetch(
        self, keys: Sequence[Hashable], deadline: Deadline
    ) -> Mapping[Hashable, Any | SecretError]:
        """Answer every key with a fetched object or a SecretError; raise if all failed."""

    def select(self, fetched: Any, ref: Ref) -> str:
        """Turn a fetched object into the value for one handle. Default: it is the value."""
        if not isinstance(fetched, str):
            raise SecretError(f"{self.type_name} returned a {type(fetched).__name__}, not text")
        return fetched

    def describe_key(self, key: Hashable) -> str:
        """How a fetch key is named in error messages."""
        return repr(key) if not isinstance(key, str) else f'"{key}"'
