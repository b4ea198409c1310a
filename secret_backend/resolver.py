"""Resolve every handle exactly once, in parallel, within one deadline.

Handles are routed to backend *slots* (one per configured backend). For each slot the
resolver constructs the backend (on the thread pool, so construction is bounded by the
deadline too), parses handles into fetch keys, fetches each distinct key once in chunks of
the backend's batch size with at most `backend.concurrency` chunks in flight, then applies
each handle's selector. Anything unfinished at the deadline gets a timeout error.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from secret_backend.backend import Backend, Ref
from secret_backend.deadline import Deadline
from secret_backend.errors import SecretError

log = logging.getLogger("secret_backend")

MAX_WORKERS = 32
EMPTY_VALUE = (
    "the secret is empty: an empty value is never a valid secret for the Agent; "
    "store a non-empty value"
)

Answer = str | SecretError
BackendFactory = Callable[[Deadline], Backend]


@dataclasses.dataclass
class Slot:
    """One backend as configured for this run (a type and its config)."""

    label: str  # for messages: "aws.secrets" or "backend 'prod' (aws.secrets)"
    factory: BackendFactory
    backend: Backend | None = None
    handles: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (handle, inner)
    refs: dict[str, Ref] = dataclasses.field(default_factory=dict)  # handle -> ref
    fetched: dict[Hashable, Any] = dataclasses.field(default_factory=dict)
    queue: list[list[Hashable]] = dataclasses.field(default_factory=list)
    in_flight: int = 0
    started: float = 0.0
    construct_seconds: float = 0.0
    chunks: int = 0


@dataclasses.dataclass
class Route:
    """Where one handle goes: a slot and the handle as that backend sees it, or an error."""

    slot: str | None = None
    inner: str = ""
    error: str | None = None


def _error_text(exc: BaseException, label: str, doing: str) -> SecretError:
    if isinstance(exc, SecretError):
        return exc
    # Unexpected exceptions are bugs; keep the type and a short message, never a repr of data.
    message = str(exc).splitlines()[0][:200] if str(exc) else ""
    return SecretError(f"{label}: unexpected {type(exc).__name__} while {doing}: {message}")


def resolve(
    handles: Iterable[str],
    routes: dict[str, Route],
    slots: dict[str, Slot],
    deadline: Deadline,
    max_workers: int = MAX_WORKERS,
) -> dict[str, Answer]:
    answers: dict[str, Answer] = {}
    order = list(dict.fromkeys(handles))
    for handle in order:
        route = routes[handle]
        if route.error is not None or route.slot is None:
            answers[handle] = SecretError(route.error or "no backend for this handle")
        else:
            slots[route.slot].handles.append((handle, route.inner))
    active = {name: slot for name, slot in slots.items() if slot.handles}

    pool = cf.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="secret-fetch")
    pending: dict[cf.Future[Any], tuple[str, list[Hashable] | None]] = {}
    try:
        for name, slot in active.items():
            slot.started = time.monotonic()
            pending[pool.submit(slot.factory, deadline)] = (name, None)

        while pending and not deadline.expired():
            done, _ = cf.wait(pending, timeout=deadline.remaining(), return_when="FIRST_COMPLETED")
            for future in done:
                name, chunk = pending.pop(future)
                slot = active[name]
                if chunk is None:
                    _on_constructed(slot, future, answers)
                else:
                    slot.in_flight -= 1
                    _on_fetched(slot, chunk, future)
                # Keep at most `concurrency` chunks of this backend in flight.
                backend = slot.backend
                while backend and slot.queue and slot.in_flight < backend.concurrency:
                    next_chunk = slot.queue.pop(0)
                    slot.in_flight += 1
                    slot.chunks += 1
                    pending[pool.submit(backend.fetch, next_chunk, deadline)] = (name, next_chunk)
    finally:
        # Threads stuck in a provider call are abandoned: the CLI exits without joining them.
        pool.shutdown(wait=False, cancel_futures=True)

    for slot in active.values():
        _finish_slot(slot, answers, deadline)
    return {handle: answers[handle] for handle in order}


def _on_constructed(slot: Slot, future: cf.Future[Any], answers: dict[str, Answer]) -> None:
    slot.construct_seconds = time.monotonic() - slot.started
    try:
        backend: Backend = future.result()
    except BaseException as exc:
        error = _error_text(exc, slot.label, "initialising the backend")
        for handle, _ in slot.handles:
            answers[handle] = error
        log.debug("%s: initialisation failed: %s", slot.label, error)
        return
    slot.backend = backend
    keys: dict[Hashable, None] = {}
    for handle, inner in slot.handles:
        try:
            ref = backend.parse(inner)
        except BaseException as exc:
            answers[handle] = _error_text(exc, slot.label, "parsing the handle")
            continue
        slot.refs[handle] = ref
        keys[ref.fetch_key] = None
    distinct = list(keys)
    if log.isEnabledFor(logging.DEBUG):
        # Handles are names from datadog.yaml, never values: safe to log.
        shown = ", ".join(json.dumps(h) for h, _ in slot.handles[:20])
        more = f" and {len(slot.handles) - 20} more" if len(slot.handles) > 20 else ""
        log.debug("%s: handles %s%s", slot.label, shown, more)
    size = max(1, backend.max_batch)
    slot.queue = [distinct[i : i + size] for i in range(0, len(distinct), size)]
    log.debug(
        "%s: ready in %.1f ms; %d handles, %d distinct fetch keys, %d chunks of up to %d",
        slot.label,
        slot.construct_seconds * 1000,
        len(slot.handles),
        len(distinct),
        len(slot.queue),
        size,
    )


def _on_fetched(slot: Slot, chunk: list[Hashable], future: cf.Future[Any]) -> None:
    assert slot.backend is not None
    try:
        results = future.result()
    except BaseException as exc:
        error = _error_text(exc, slot.label, "fetching secrets")
        for key in chunk:
            slot.fetched[key] = error
        return
    for key in chunk:
        if key in results:
            slot.fetched[key] = results[key]
        else:
            slot.fetched[key] = SecretError(
                f"{slot.label}: no answer for {slot.backend.describe_key(key)}"
            )


def _finish_slot(slot: Slot, answers: dict[str, Answer], deadline: Deadline) -> None:
    backend = slot.backend
    for handle, _ in slot.handles:
        if handle in answers:
            continue
        if backend is None:
            answers[handle] = SecretError(
                deadline.timeout_error(f"initialising {slot.label} (credentials, authentication)")
            )
            continue
        ref = slot.refs[handle]
        if ref.fetch_key not in slot.fetched:
            answers[handle] = SecretError(
                deadline.timeout_error(
                    f"fetching {backend.describe_key(ref.fetch_key)} from {slot.label}"
                )
            )
            continue
        fetched = slot.fetched[ref.fetch_key]
        if isinstance(fetched, SecretError):
            answers[handle] = fetched
            continue
        try:
            value = backend.select(fetched, ref)
        except BaseException as exc:
            answers[handle] = _error_text(exc, slot.label, "selecting the value")
            continue
        answers[handle] = value if value != "" else SecretError(EMPTY_VALUE)
    if backend is not None:
        log.debug(
            "%s: %d handles answered with %d provider calls in %.1f ms",
            slot.label,
            len(slot.handles),
            backend.calls,
            (time.monotonic() - slot.started) * 1000,
        )
