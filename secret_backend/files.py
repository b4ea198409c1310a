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


class NotRegularFileError(OSError):
    """The path is a directory, FIFO, device or socket."""

    def __init__(self, is_directory: bool) -> None:
        super().__init__("is a directory" if is_directory else "is not a regular file")
        self.is_directory = is_directory


def read_regular_file(path: str, limit: int, *, follow_symlinks: bool = True) -> tuple[bytes, int]:
    """At most `limit + 1` bytes of a regular file, and its size when opened.

    O_NONBLOCK: opening a FIFO must not block past the deadline; anything but a regular file
    raises NotRegularFileError before a byte is read. Other failures raise OSError.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFileError(stat.S_ISDIR(info.st_mode))
        if info.st_size > limit:
            return b"", info.st_size  # refused by the caller without reading it
        chunks = []
        remaining = limit + 1  # one byte more shows a file that grew since fstat
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks), info.st_size
    finally:
        os.close(fd)


def read_secret_file(path: str, label: str, max_size: int) -> bytes:
    """Read a regular file of at most `max_size` bytes; precise errors for every failure."""
    try:
        # `path` is already resolved: a symlink swapped in since then is refused.
        data, size = read_regular_file(path, max_size, follow_symlinks=False)
    except FileNotFoundError:
        raise SecretError(f"secret file '{label}' does not exist ({path})")
    except PermissionError:
        raise SecretError(
            f"secret file '{label}' is not readable by this user ({path}): "
            "grant the Agent user read access"
        )
    except NotRegularFileError as exc:
        what = "a directory, not a file" if exc.is_directory else "not a regular file"
        raise SecretError(f"secret file '{label}' is {what} ({path})")
    except OSError as exc:
        raise SecretError(f"cannot read secret file '{label}' ({path}): {exc.strerror}")
    if size > max_size or len(data) > max_size:  # len: the file grew after fstat
        actual = f"{size} bytes" if size > max_size else f"more than {max_size} bytes"
        raise SecretError(
            f"secret file '{label}' exceeds maximum size limit of {max_size} bytes "
            f"(actual: {actual})"
        )
    if not data:
        raise SecretError(f"secret file '{label}' is empty ({path}): an empty secret is an error")
    return data


def decode_text(data: bytes, label: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SecretError(f"secret file '{label}' is not UTF-8 text (invalid byte at {exc.start})")
