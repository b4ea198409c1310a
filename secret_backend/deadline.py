"""One deadline for the whole run.

The Agent kills us `secret_backend_timeout` seconds after it started us. The deadline is
anchored at our process start (read from /proc when possible, so interpreter start-up is
counted) and keeps a safety margin for writing the answer.
"""

from __future__ import annotations

import os
import time

DEFAULT_TIMEOUT = 30.0


def safety_margin(timeout: float) -> float:
    """Time kept back to serialise and write the answer: 10 %, between 0.2 s and 2 s."""
    return min(2.0, max(0.2, timeout * 0.1))


def process_age() -> float:
    """Seconds since this process started (0 if the platform does not tell us)."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of proc(5), counted after the comm field
        ticks = os.sysconf("SC_CLK_TCK")
        uptime = time.clock_gettime(time.CLOCK_BOOTTIME)
        return max(0.0, min(uptime - start_ticks / ticks, 5.0))
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


class Deadline:
    """A point in `time.monotonic()` time after which no work may continue."""

    def __init__(self, at: float, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.at = at
        self.timeout = timeout  # the Agent's secret_backend_timeout, for error messages

    @classmethod
    def from_timeout(cls, timeout: float, started: float | None = None) -> Deadline:
        if started is None:
            started = time.monotonic() - process_age()
        return cls(started + timeout - safety_margin(timeout), timeout)

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def cap(self, seconds: float) -> float:
        """`seconds`, shortened to the time left (never zero: sockets treat 0 as non-blocking)."""
        return max(0.001, min(seconds, self.remaining()))

    def timeout_error(self, what: str) -> str:
        return (
            f"timed out {what}: the run must answer within secret_backend_timeout "
            f"({self.timeout:g}s); check connectivity to the provider or raise "
            "secret_backend_timeout in datadog.yaml"
        )
