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


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and every exception it wraps, outermost first."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    causes: list[BaseException] = []
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        causes.append(current)
        # requests/urllib3 wrap in `reason` or args, azure-core in `inner_exception`,
        # botocore in `kwargs["error"]`.
        kwargs = getattr(current, "kwargs", None)
        linked = [
            getattr(current, "reason", None),
            getattr(current, "inner_exception", None),
            kwargs.get("error") if isinstance(kwargs, dict) else None,
            current.__cause__,
            current.__context__,
        ]
        linked += list(current.args)
        stack.extend(e for e in linked if isinstance(e, BaseException))
    return causes


def is_certificate_error(exc: BaseException) -> bool:
    """True when a TLS certificate was rejected: retrying cannot help."""
    import ssl

    return any(isinstance(c, ssl.SSLCertVerificationError) for c in _causes(exc))


def network_cause(exc: BaseException) -> str:
    """What went wrong under an HTTP client's connection error, in a few words.

    HTTP libraries wrap the socket error several times (requests -> urllib3 -> ssl/OSError)
    and their outer message is long or, as a bare type name, says nothing. The innermost
    cause tells the operator what to fix: a refused port, a dropped connection, or a
    certificate their trust store rejects. The text holds no request data.
    """
    import ssl

    causes = _causes(exc)
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = cause.verify_message or cause.reason or "rejected"
            return f"TLS certificate verification failed ({detail})"
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, (ssl.SSLEOFError, ConnectionResetError, ConnectionAbortedError)):
            return "the server closed the connection"
        if type(cause).__name__ == "RemoteDisconnected":
            return "the server closed the connection without answering"
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed ({cause.reason or type(cause).__name__})"
        if isinstance(cause, TimeoutError):
            return "timed out"
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
