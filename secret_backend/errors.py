"""Two kinds of failure.

* Request-level (`RequestError`): the Agent's payload itself is unusable. One line on stderr,
  nothing on stdout, a non-zero `ExitCode`.
* Per-handle (`SecretError`): one handle could not be resolved. It becomes that handle's
  `error` string in the JSON answer; the run still exits 0.

Messages must never contain a secret value, token, password or key.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    INTERNAL_ERROR = 1  # a bug: please report it with the --debug output
    USAGE = 2  # bad command-line arguments
    BAD_REQUEST = 3  # stdin is not a valid request (not JSON, wrong types, wrong version...)
    REQUEST_TOO_LARGE = 4  # stdin exceeds MAX_REQUEST_BYTES
    CHECK_FAILED = 5  # `check` / `check-permissions` found a problem


class RequestError(Exception):
    """The whole request is unusable; the message names the problem."""

    def __init__(self, message: str, code: ExitCode = ExitCode.BAD_REQUEST) -> None:
        super().__init__(message)
        self.code = code


class SecretError(Exception):
    """One handle (or every handle of a backend) failed; the message is shown to the operator."""


class ConfigError(SecretError):
    """The backend configuration is wrong; every handle of that backend gets this message."""


class SecretTimeoutError(SecretError):
    """The request's deadline passed before this handle could be answered."""
