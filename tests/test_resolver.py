"""The resolver's guarantees: one fetch per distinct key, batch size, bounded concurrency,
one deadline, and exactly one answer per handle."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from typing import Any

from secret_backend.backend import Backend
from secret_backend.config import build
from secret_backend.deadline import Deadline
from secret_backend.errors import SecretError
from secret_backend.resolver import Route, Slot, resolve
from tests.helpers import REPO
from tests.slow_backends import RecordingBackend, RecordingConfig


def run(handles: list[str], timeout: float = 5.0, **config: Any) -> tuple[dict[str, Any], Slot]:
    built: list[Backend] = []

    def factory(deadline: Deadline) -> Backend:
        backend = RecordingBackend(build(RecordingConfig, config), deadline)
        built.append(backend)
        return backend

    slot = Slot(label="test.recording", factory=factory)
    routes = {h: Route(slot="s", inner=h) for h in handles}
    answers = resolve(handles, routes, {"s": slot}, Deadline.after(timeout))
    return answers, slot


def test_many_handles_on_one_key_cost_one_fetch() -> None:
    handles = [f"db;field{i}" for i in range(50)] + ["db;field", "db;other"]
    answers, slot = run(handles)
    backend = slot.backend
    assert isinstance(backend, RecordingBackend)
    assert backend.fetched_chunks == [["db"]]
    assert backend.calls == 1
    assert answers["db;field"] == "db.field"
    assert answers["db;other"] == "db.other"
    assert isinstance(answers["db;field7"], SecretError)
    assert len(answers) == 52


def test_batch_size_and_concurrency_are_respected() -> None:
    handles = [f"k{i};field" for i in range(10)]
    answers, slot = run(handles)
    backend = slot.backend
    assert isinstance(backend, RecordingBackend)
    assert sorted(len(c) for c in backend.fetched_chunks) == [1, 3, 3, 3]
    assert sorted(k for c in backend.fetched_chunks for k in c) == sorted(
        f"k{i}" for i in range(10)
    )
    assert backend.max_in_flight <= 2
    assert all(answers[h] == h.split(";")[0] + ".field" for h in handles)


def test_concurrency_setting_overrides_the_default() -> None:
    _, slot = run([f"k{i};field" for i in range(12)], concurrency=1)
    assert isinstance(slot.backend, RecordingBackend)
    assert slot.backend.max_in_flight == 1


def test_parse_errors_and_chunk_failures_are_per_handle() -> None:
    # Chunks of 3: [a, b, c] then [boom]; a raising fetch fails only its own chunk.
    answers, _ = run(["bad", "a;field", "b;field", "c;field", "boom;field"], fail_on=["boom"])
    assert str(answers["bad"]) == "expected key;field"
    assert [answers[f"{k};field"] for k in "abc"] == ["a.field", "b.field", "c.field"]
    assert str(answers["boom;field"]) == "provider said no"


def test_hanging_fetch_is_answered_with_timeout_errors() -> None:
    handles = ["slow;field", "fast1;field", "fast2;field", "fast3;field"]
    started = time.monotonic()
    answers, _ = run(handles, timeout=1.0, hang_on=["slow"])
    elapsed = time.monotonic() - started
    assert elapsed < 3.0
    assert "timed out fetching" in str(answers["slow;field"])
    assert "secret_backend_timeout" in str(answers["slow;field"])
    # The keys batched with "slow" in the same chunk time out too; others succeed.
    assert len(answers) == 4
    assert sum(isinstance(a, str) for a in answers.values()) >= 1


def test_hanging_initialisation_is_bounded() -> None:
    started = time.monotonic()
    answers, _ = run(["a;field", "b;field"], timeout=0.5, hang_in_init=True)
    assert time.monotonic() - started < 2.5
    for answer in answers.values():
        assert "timed out initialising test.recording" in str(answer)


def test_executable_exits_in_time_with_a_hung_backend() -> None:
    """Through the real CLI: stuck threads must not delay the answer or the exit."""
    script = textwrap.dedent(
        """
        import sys
        from secret_backend import registry
        registry.BACKENDS["test.recording"] = registry.Entry(
            "tests.slow_backends:RecordingBackend", None)
        from secret_backend.__main__ import main
        sys.exit(main())
        """
    )
    request = (
        '{"version": "1.1", "secrets": ["slow;field", "k1;field", "k2;field", "k3;field",'
        ' "k4;field"], "secret_backend_timeout": 2, "type": "test.recording",'
        ' "config": {"hang_on": ["slow"], "concurrency": 4}}'
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=request.encode(),
        capture_output=True,
        cwd=REPO,
        timeout=30,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 2.0, f"took {elapsed:.2f}s with secret_backend_timeout 2"
    import json

    answers = json.loads(proc.stdout)
    assert "timed out" in answers["slow;field"]["error"]
    assert answers["k4;field"]["value"] == "k4.field"
