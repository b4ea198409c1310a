"""pass: entries of a `pass` password store (gpg-encrypted files), read with `pass show`.

The `pass` executable does the decryption (it runs gpg with the Agent user's key), so this
backend only runs `pass show -- ENTRY` without a shell and turns its exit status and stderr
into precise errors. The child runs in its own process group, killed at the deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from secret_backend.backend import Backend, CommonConfig, Ref
from secret_backend.deadline import Deadline
from secret_backend.errors import ConfigError, SecretError

CHILD_TIMEOUT = 30.0  # per entry, further capped by the run's deadline
# Kill the child this long before the deadline, so it never outlives our answer.
KILL_MARGIN = 0.1
MAX_DETAIL = 200


@dataclasses.dataclass(frozen=True, kw_only=True)
class PassConfig(CommonConfig):
    # The password store (PASSWORD_STORE_DIR for the child); default: pass's own default.
    store_path: str | None = None
    # Prepended to every handle: prefix "datadog" + handle "api_key" reads "datadog/api_key".
    prefix: str = ""
    # The pass executable, a path or a name looked up in PATH.
    pass_binary: str = "pass"


def _summary(stderr: bytes) -> str:
    """The most telling line of pass/gpg's stderr (it never holds the decrypted value)."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if line.startswith(("Error:", "gpg:")):
            return line[:MAX_DETAIL]
    return lines[-1][:MAX_DETAIL] if lines else "no message"


class PassBackend(Backend):
    type_name = "pass"
    Config = PassConfig
    config: PassConfig
    # Each entry costs one gpg decryption through one gpg-agent: a few at a time is enough.
    default_concurrency = 2

    def __init__(self, config: PassConfig, deadline: Deadline) -> None:
        super().__init__(config, deadline)
        binary = shutil.which(config.pass_binary)
        if binary is None:
            raise ConfigError(
                f'pass: executable "{config.pass_binary}" not found or not executable '
                "(PATH is searched for a bare name); install pass or set config.pass_binary"
            )
        self.binary = binary
        self.env = dict(os.environ)
        if config.store_path:
            if not os.path.isdir(config.store_path):
                raise ConfigError(
                    f"pass: config.store_path {config.store_path} is not a directory; "
                    "set it to the password store (the directory holding .gpg-id)"
                )
            self.env["PASSWORD_STORE_DIR"] = config.store_path
        self.store_dir = self.env.get("PASSWORD_STORE_DIR") or os.path.expanduser(
            "~/.password-store"
        )

    def parse(self, handle: str) -> Ref:
        if not handle:
            raise SecretError("empty handle: expected a pass entry path, e.g. datadog/api_key")
        if handle.startswith("-"):
            raise SecretError(f'invalid pass entry "{handle}": it must not start with "-"')
        if "\0" in handle or ".." in handle.split("/"):
            raise SecretError(
                f"invalid pass entry {handle!r}: NUL characters and '..' path segments "
                "are not allowed"
            )
        prefix = self.config.prefix.strip("/")
        return Ref(f"{prefix}/{handle}" if prefix else handle)

    def describe_key(self, key: Hashable) -> str:
        return f'pass entry "{key}"'

    def fetch(self, keys: Sequence[Hashable], deadline: Deadline) -> Mapping[Hashable, Any]:
        return {key: self._show(str(key), deadline) for key in keys}

    def _show(self, entry: str, deadline: Deadline) -> str | SecretError:
        what = f'pass entry "{entry}"'
        path = os.path.join(self.store_dir, entry)
        if os.path.isdir(path) and not os.path.isfile(f"{path}.gpg"):
            # `pass show DIR` prints a tree of the folder and succeeds: never a secret.
            return SecretError(f"{what} is a folder of the password store, not an entry")
        self.count_call()
        try:
            child = subprocess.Popen(
                [self.binary, "show", "--", entry],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                start_new_session=True,  # its own process group: gpg dies with it on timeout
            )
        except OSError as exc:
            return SecretError(f"{what}: cannot run {self.binary}: {exc.strerror}")
        try:
            stdout, stderr = child.communicate(
                timeout=max(0.001, deadline.cap(CHILD_TIMEOUT) - KILL_MARGIN)
            )
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return SecretError(deadline.timeout_error(f'running "pass show" for {what}'))
        if child.returncode != 0:
            return self._failure(what, stderr)
        try:
            value = stdout.decode("utf-8")
        except UnicodeDecodeError:
            return SecretError(f"{what} is not UTF-8 text; the Agent can only use text secrets")
        # pass adds one newline after the value: remove exactly that one.
        return value.removesuffix("\n")

    def _failure(self, what: str, stderr: bytes) -> SecretError:
        detail = _summary(stderr)
        if "is not in the password store" in detail:
            return SecretError(
                f"{what} is not in the password store {self.store_dir}; "
                "check the handle, config.prefix and config.store_path"
            )
        if "decryption failed" in detail or "No secret key" in detail:
            gnupghome = self.env.get("GNUPGHOME") or "~/.gnupg"
            return SecretError(
                f"{what}: gpg cannot decrypt it with the Agent user's keys ({gnupghome}): "
                "import the private key of a recipient listed in the store's .gpg-id, or "
                f"re-encrypt the store for the Agent's key with pass init ({detail})"
            )
        return SecretError(f"{what}: pass failed: {detail}")
