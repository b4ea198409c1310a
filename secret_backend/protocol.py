"""The Agent's request on stdin and our answer on stdout (CONTRACT section 1)."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from secret_backend.config import describe
from secret_backend.deadline import DEFAULT_TIMEOUT
from secret_backend.errors import ExitCode, RequestError, SecretError

# The Agent's own payloads are small; this cap only guards against runaway input.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
# What the Agent reads of our stdout by default (secret_backend_output_max_size).
AGENT_OUTPUT_LIMIT = 1024 * 1024


@dataclasses.dataclass
class Request:
    version: str
    secrets: list[str]
    timeout: float = DEFAULT_TIMEOUT
    type: str | None = None
    config: Any = None
    has_type: bool = False


def parse_request(data: bytes) -> Request:
    """Validate the Agent's payload; raise RequestError naming the problem."""
    if len(data) > MAX_REQUEST_BYTES:
        raise RequestError(
            f"request on stdin is {len(data)} bytes, over the {MAX_REQUEST_BYTES} byte limit",
            ExitCode.REQUEST_TOO_LARGE,
        )
    if not data.strip():
        raise RequestError(
            "no request on stdin: expected a JSON object like "
            '{"version": "1.1", "secrets": ["handle"]} (the Agent writes it)'
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"request on stdin is not valid UTF-8 (byte {exc.start})")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(
            f"request on stdin is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        )
    except RecursionError:
        raise RequestError("request on stdin is not valid JSON: nested too deeply")
    if not isinstance(doc, dict):
        raise RequestError(f"request must be a JSON object, got {describe(doc)}")

    version = doc.get("version")
    if not isinstance(version, str):
        raise RequestError(
            f'request "version" must be a string like "1.1", got {describe(version)}'
        )
    if version.split(".", 1)[0].strip() != "1":
        raise RequestError(
            # describe(): JSON-escaped, so the message stays one line whatever the version.
            f"unsupported protocol version {describe(version)}: this backend speaks version 1.x"
        )

    if "secrets" not in doc:
        raise RequestError('request has no "secrets" list')
    secrets = doc["secrets"]
    if not isinstance(secrets, list):
        raise RequestError(f'request "secrets" must be a list of strings, got {describe(secrets)}')
    for index, handle in enumerate(secrets):
        if not isinstance(handle, str):
            raise RequestError(
                f'request "secrets"[{index}] must be a string, got {describe(handle)}'
            )

    timeout = doc.get("secret_backend_timeout", DEFAULT_TIMEOUT)
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise RequestError(
            f'request "secret_backend_timeout" must be a number of seconds, got {describe(timeout)}'
        )
    if not math.isfinite(timeout) or timeout <= 0:
        raise RequestError(
            f'request "secret_backend_timeout" must be positive, got {describe(timeout)}'
        )

    backend_type = doc.get("type")
    has_type = "type" in doc and backend_type not in (None, "")
    return Request(
        version=version,
        secrets=secrets,
        timeout=float(timeout),
        type=backend_type if has_type else None,
        config=doc.get("config"),
        has_type=has_type,
    )


def encode_response(answers: dict[str, str | SecretError]) -> bytes:
    """One JSON object with one entry per handle: exactly one of value/error is null."""
    out: dict[str, dict[str, str | None]] = {}
    for handle, answer in answers.items():
        if isinstance(answer, SecretError):
            out[handle] = {"value": None, "error": str(answer) or "could not fetch the secret"}
        else:
            out[handle] = {"value": answer, "error": None}
    # ensure_ascii: handles may hold lone surrogates, which cannot be written as UTF-8.
    return json.dumps(out, ensure_ascii=True).encode("ascii") + b"\n"
