"""aws.secrets: AWS Secrets Manager, handles `secret_id;json_key`.

Each distinct secret id is fetched once. A chunk of two or more ids costs one
BatchGetSecretValue (up to 20 ids); a single id costs one GetSecretValue. Where the IAM policy
does not allow secretsmanager:BatchGetSecretValue, the first AccessDenied switches this run to
concurrent GetSecretValue calls (`batch: false` does so from the start).

v0 file mode: `secret_id` in the backend config names the one secret, and the handle is the
JSON key (`_` = the whole value).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import threading
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from backends import aws_session
from secret_backend import jsonvalue
from secret_backend.backend import Backend, CommonConfig, Ref
from secret_backend.deadline import Deadline
from secret_backend.errors import SecretError

log = logging.getLogger("secret_backend")

WHOLE = "_"  # v0: the whole secret value
GET = "secretsmanager:GetSecretValue"
BATCH_GET = "secretsmanager:BatchGetSecretValue"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SecretsManagerConfig(CommonConfig):
    aws_session: aws_session.AwsSessionConfig = dataclasses.field(
        default_factory=aws_session.AwsSessionConfig
    )
    # Always return the whole secret value, never a JSON key of it.
    force_string: bool = False
    # false: never call BatchGetSecretValue (one GetSecretValue per secret).
    batch: bool = True
    # v0 file mode: the secret every handle of this backend reads; handles are JSON keys.
    secret_id: str | None = None


class SecretsManagerBackend(Backend):
    type_name = "aws.secrets"
    Config = SecretsManagerConfig
    config: SecretsManagerConfig
    max_batch = 20  # BatchGetSecretValue's SecretIdList limit
    default_concurrency = 8

    def __init__(self, config: SecretsManagerConfig, deadline: Deadline) -> None:
        super().__init__(config, deadline)
        self.aws = aws_session.connect(
            "secretsmanager",
            config.aws_session,
            deadline,
            self.count_call,
            max_connections=self.concurrency,
        )
        self._batch = config.batch
        # Bounds single GetSecretValue calls across all chunks to `concurrency`.
        self._singles = threading.BoundedSemaphore(self.concurrency)

    def parse(self, handle: str) -> Ref:
        if self.config.secret_id is not None:  # v0 file mode: the handle is the key
            if not handle:
                raise SecretError(
                    f'empty key: expected a JSON key of secret "{self.config.secret_id}" or "_"'
                )
            return Ref(self.config.secret_id, handle)
        secret_id, sep, key = handle.partition(";")
        if not sep:
            raise SecretError("invalid secret format, expected 'secret_id;key'")
        if not secret_id:
            raise SecretError(
                f"invalid secret format, expected 'secret_id;key': empty secret_id in \"{handle}\""
            )
        return Ref(secret_id, key)

    def describe_key(self, key: Hashable) -> str:
        return f'secret "{key}"'

    def fetch(self, keys: Sequence[Hashable], deadline: Deadline) -> Mapping[Hashable, Any]:
        ids = [str(k) for k in keys]
        if len(ids) >= 2 and self._batch:
            try:
                return self._batch_get(ids, deadline)
            except _BatchDenied as denied:
                # Remembered for the rest of the run: later chunks go straight to singles.
                self._batch = False
                log.debug("aws.secrets: %s; falling back to %s per secret", denied, GET)
        return self._get_each(ids, deadline)

    def select(self, fetched: Any, ref: Ref) -> str:
        raw: str = fetched
        key = str(ref.selector)
        if self.config.secret_id is not None and key == WHOLE:
            return raw
        where = f'secret "{ref.fetch_key}"'
        return jsonvalue.select_key(raw, key, where, force_string=self.config.force_string)

    # -- provider calls ------------------------------------------------------------------

    def _batch_get(self, ids: list[str], deadline: Deadline) -> dict[Hashable, Any]:
        results: dict[Hashable, Any] = {}
        token: str | None = None
        answered: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        while True:
            params: dict[str, Any] = {"SecretIdList": ids}
            if token:
                params["NextToken"] = token
            try:
                page = self.aws.call(
                    "batch_get_secret_value",
                    what=_several("secrets", ids),
                    action=f"{BATCH_GET} (or set batch: false)",
                    deadline=deadline,
                    **params,
                )
            except aws_session.AwsError as exc:
                if exc.code in aws_session.DENIED_CODES and "kms:Decrypt" not in str(exc):
                    raise _BatchDenied(str(exc))
                raise
            answered.extend(page.get("SecretValues", []))
            errors.extend(page.get("Errors", []))
            token = page.get("NextToken")
            if not token:
                break
        for entry in answered:
            secret_id = _match(entry, ids)
            if secret_id is not None:
                results[secret_id] = self._value_of(entry, secret_id)
        for error in errors:
            secret_id = str(error.get("SecretId", ""))
            if secret_id in ids and secret_id not in results:
                results[secret_id] = SecretError(
                    aws_session.describe_error(
                        str(error.get("ErrorCode", "")),
                        str(error.get("Message", "")),
                        f'secret "{secret_id}"',
                        self.aws.region,
                        GET,
                    )
                )
        # An id the batch answer does not account for (e.g. an ARN spelled differently):
        # ask for it alone rather than guess.
        leftover = [i for i in ids if i not in results]
        if leftover:
            results.update(self._get_each(leftover, deadline))
        return results

    def _get_each(self, ids: list[str], deadline: Deadline) -> dict[Hashable, Any]:
        if len(ids) == 1:
            return {ids[0]: self._get_one(ids[0], deadline)}
        results: dict[Hashable, Any] = {}
        pool = cf.ThreadPoolExecutor(max_workers=min(len(ids), self.concurrency))
        try:
            futures = {pool.submit(self._get_one, i, deadline): i for i in ids}
            done, _ = cf.wait(futures, timeout=deadline.remaining())
            for future in done:
                results[futures[future]] = future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        for i in ids:
            if i not in results:
                results[i] = SecretError(deadline.timeout_error(f'reading secret "{i}"'))
        return results

    def _get_one(self, secret_id: str, deadline: Deadline) -> str | SecretError:
        try:
            with self._singles:
                entry = self.aws.call(
                    "get_secret_value",
                    what=f'secret "{secret_id}"',
                    action=GET,
                    deadline=deadline,
                    SecretId=secret_id,
                )
            return self._value_of(entry, secret_id)
        except SecretError as exc:
            return exc

    def _value_of(self, entry: Mapping[str, Any], secret_id: str) -> str | SecretError:
        if entry.get("SecretString") is not None:
            return str(entry["SecretString"])
        binary = entry.get("SecretBinary")
        if binary is not None:
            try:
                return bytes(binary).decode("utf-8")
            except UnicodeDecodeError:
                return SecretError(
                    f'secret "{secret_id}" holds binary data ({len(binary)} bytes) that is not '
                    "UTF-8 text; the Agent can only use text: store it as a SecretString "
                    "(e.g. base64-encoded)"
                )
        return SecretError(
            f'secret "{secret_id}" in region {self.aws.region} has no SecretString or '
            "SecretBinary in its current version"
        )


class _BatchDenied(Exception):
    """BatchGetSecretValue is not allowed by the caller's IAM policy."""


def _several(kind: str, names: list[str]) -> str:
    shown = ", ".join(f'"{n}"' for n in names[:3])
    return f"{len(names)} {kind} ({shown}{', ...' if len(names) > 3 else ''})"


def _match(entry: Mapping[str, Any], ids: list[str]) -> str | None:
    """Which requested id a batch answer belongs to: its name, full ARN or partial ARN."""
    name, arn = entry.get("Name"), str(entry.get("ARN", ""))
    for secret_id in ids:
        if secret_id in (name, arn):
            return secret_id
    for secret_id in ids:
        # A partial ARN (without the 6-character random suffix) also names the secret.
        if (
            secret_id.startswith("arn:")
            and arn.startswith(secret_id + "-")
            and len(arn) == len(secret_id) + 7
        ):
            return secret_id
    return None
