"""Safe file reading shared by the file-based backends.

Paths are resolved with symlinks followed and must stay inside the configured directory;
the size limit is checked before reading; FIFOs and devices are refused (reading them
could block past the deadline).
"""

from __future__ import annotations

import os
import stat

from secret_backend.errors import SecretError

DEFAULT_MAX_FILE_SIZE = 10 * 1024 * 1024


def effective_max_size(configured: int) -> int:
    """`max_file_read_size` <= 0 means the 10 MiB default."""
    return configured if configured > 0 else DEFAULT_MAX_FILE_SIZE


def resolve_inside(root: str, name: str) -> str:
    """The real path of `name` (relative to `root`, or absolute inside it), symlinks followed.

    Raises SecretError when it resolves outside `root`.
    """
    if not name or "\0" in name:
        raise SecretError(f"invalid secret file name {name!r}: it must be a non-empty path")
    real_root = os.path.realpath(root)
    candidate = name if os.path.isabs(name) else os.path.join(real_root, name)
    resolved = os.path.realpath(candidate)
    if os.path.commonpath([real_root, resolved]) != real_root:
        raise SecretError(
            f"path outside allowed directory: secret file '{name}' resolves outside {real_root}"
        )
    return resolved


def read_secret_file(path: str, label: str, max_size: int) -> bytes:
    """Read a regular file of at most `max_size` bytes; precise errors for every failure."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SecretError(f"secret file '{label}' does not exist ({path})")
    except PermissionError:
        raise SecretError(
            f"secret file '{label}' is not readable by this user ({path}): "
            "grant the Agent user read access"
        )
    except IsADirectoryError:
        raise SecretError(f"secret file '{label}' is a directory, not a file ({path})")
    except OSError as exc:
        raise SecretError(f"cannot open secret file '{label}' ({path}): {exc.strerror}")
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise SecretError(f"secret file '{label}' is a directory, not a file ({path})")
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(f"secret file '{label}' is not a regular file ({path})")
        if info.st_size > max_size:
            raise SecretError(
                f"secret file '{label}' exceeds maximum size limit of {max_size} bytes "
                f"(actual: {info.st_size} bytes)"
            )
        chunks = []
        remaining = max_size + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise SecretError(f"cannot read secret file '{label}' ({path}): {exc.strerror}")
    finally:
        os.close(fd)
    if len(data) > max_size:  # the file grew after fstat
        raise SecretError(
            f"secret file '{label}' exceeds maximum size limit of {max_size} bytes "
            f"(actual: more than {max_size} bytes)"
        )
    if not data:
        raise SecretError(f"secret file '{label}' is empty ({path}): an empty secret is an error")
    return data


def decode_text(data: bytes, label: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SecretError(f"secret file '{label}' is not UTF-8 text (invalid byte at {exc.start})")
