"""`check-permissions`: the Agent's rights rules (CONTRACT section 1) on the executable and
the bundle, through the real command line."""

from __future__ import annotations

import os
import pwd
import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli

ME = pwd.getpwuid(os.geteuid()).pw_name
AS_ROOT = os.geteuid() == 0
GROUP_WORDING = "'group' or 'others' have rights on it"
GROUP_EXEC_WORDING = "'others' have rights on it or 'group' has write permissions on it"

# CONTRACT section 1: (mode, allow_group_exec) -> accepted by the Agent
MATRIX = [
    (0o700, False, True),
    (0o100, False, True),
    (0o500, False, True),
    (0o600, False, False),
    (0o710, False, False),
    (0o701, False, False),
    (0o750, False, False),
    (0o704, False, False),
    (0o750, True, True),
    (0o770, True, False),
    (0o701, True, False),
    (0o702, True, False),
]


def check_permissions(*args: str) -> tuple[int, str]:
    result = run_cli(b"", args=["check-permissions", *args])
    return result.returncode, result.stdout.decode()


def make_exe(tmp_path: Path, mode: int) -> Path:
    exe = tmp_path / "datadog-secret-backend"
    exe.write_text("#!/bin/sh\necho hi\n")
    exe.chmod(mode)
    return exe


@pytest.mark.parametrize(("mode", "group_exec", "accepted"), MATRIX)
def test_agent_mode_matrix(tmp_path: Path, mode: int, group_exec: bool, accepted: bool) -> None:
    exe = make_exe(tmp_path, mode)
    code, out = check_permissions(str(exe), "--owner", ME, *(["--allow-group-exec"] * group_exec))
    first = out.splitlines()[1]  # line 0 says what is checked
    assert f"mode {mode:04o}, owner {ME}" in first
    if accepted:
        assert code == 0, out
        assert first.startswith(f"ok   '{exe}'")
    else:
        assert code == 5, out
        if mode & 0o077 and not (group_exec and not mode & 0o027):
            wording = GROUP_EXEC_WORDING if group_exec else GROUP_WORDING
            assert f"FAIL invalid executable '{exe}', {wording}" in first
        else:  # 0600: no execute bit
            assert f"FAIL invalid executable '{exe}': can't access it: permission denied" in first


def test_missing_executable(tmp_path: Path) -> None:
    code, out = check_permissions(str(tmp_path / "nope"))
    assert code == 5
    missing = tmp_path / "nope"
    assert f"invalid executable '{missing}': can't stat it: no such file or directory" in out


def test_directory_is_not_an_executable(tmp_path: Path) -> None:
    code, out = check_permissions(str(tmp_path), "--owner", ME)
    assert code == 5
    assert f"invalid executable '{tmp_path}': not a regular file" in out


@pytest.mark.skipif(not AS_ROOT, reason="changing a file's owner needs root")
def test_owner_must_be_the_agent_user(tmp_path: Path) -> None:
    exe = make_exe(tmp_path, 0o700)
    shutil.chown(exe, user="nobody")
    code, out = check_permissions(str(exe), "--owner", "root")
    assert code == 5
    assert f"'{exe}': owned by 'nobody', not by the Agent user 'root'" in out
    # As the Agent user `nobody`, the same file is fine.
    code, out = check_permissions(str(exe), "--owner", "nobody")
    assert code == 0, out


@pytest.mark.skipif(not AS_ROOT, reason="needs a second user: run as root")
def test_another_agent_user_cannot_execute(tmp_path: Path) -> None:
    exe = make_exe(tmp_path, 0o700)  # owned by root
    code, out = check_permissions(str(exe), "--owner", "nobody")
    assert code == 5
    assert "can't access it: permission denied (the Agent user 'nobody' cannot execute it)" in out


def test_unknown_owner(tmp_path: Path) -> None:
    result = run_cli(b"", args=["check-permissions", str(tmp_path), "--owner", "no-such-user-x"])
    assert result.returncode == 2
    assert "unknown user 'no-such-user-x'" in result.stderr


def make_bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    (root / "_internal" / "lib").mkdir(parents=True)
    exe = make_exe(root, 0o500)
    (root / "_internal" / "libpython.so").write_bytes(b"\x7fELF")
    (root / "_internal" / "lib" / "data.json").write_text("{}")
    for path in [root, root / "_internal", root / "_internal" / "lib"]:
        path.chmod(0o700)
    for path in (root / "_internal").rglob("*"):
        if path.is_file():
            path.chmod(0o400)
    return exe


def test_bundle_ok(tmp_path: Path) -> None:
    exe = make_bundle(tmp_path)
    code, out = check_permissions(str(exe), "--owner", ME)
    assert code == 0, out
    assert "ok   bundle: 5 entries checked" in out  # root dir, _internal, lib, 2 files


@pytest.mark.parametrize(
    ("relative", "mode"),
    [("_internal/libpython.so", 0o420), ("_internal/lib", 0o755), ("", 0o770)],
)
def test_bundle_entry_with_group_rights(tmp_path: Path, relative: str, mode: int) -> None:
    exe = make_bundle(tmp_path)
    target = exe.parent / relative if relative else exe.parent
    target.chmod(mode)
    code, out = check_permissions(str(exe), "--owner", ME)
    assert code == 5
    assert f"FAIL invalid bundle file '{str(target).rstrip('/')}', {GROUP_WORDING}" in out
    assert f"mode {mode:04o}" in out
    assert "FAIL bundle: 5 entries checked (the directory and _internal/), 1 with a problem" in out


def test_bundle_group_exec(tmp_path: Path) -> None:
    exe = make_bundle(tmp_path)
    for path in [exe.parent, *exe.parent.rglob("*")]:
        path.chmod(0o750 if path.is_dir() else 0o440)
    exe.chmod(0o550)
    assert check_permissions(str(exe), "--owner", ME, "--allow-group-exec")[0] == 0
    (exe.parent / "_internal" / "libpython.so").chmod(0o460)  # group may write: never
    code, out = check_permissions(str(exe), "--owner", ME, "--allow-group-exec")
    assert code == 5
    assert GROUP_EXEC_WORDING in out


def test_symlink_out_of_the_bundle(tmp_path: Path) -> None:
    exe = make_bundle(tmp_path)
    outside = tmp_path / "evil.so"
    outside.write_bytes(b"x")
    (exe.parent / "_internal" / "libssl.so").symlink_to(outside)
    (exe.parent / "_internal" / "lib.so").symlink_to(exe.parent / "_internal" / "libpython.so")
    code, out = check_permissions(str(exe), "--owner", ME)
    assert code == 5
    assert "libssl.so': symbolic link out of the bundle" in out
    assert "lib.so'" not in out.replace("libssl.so'", "")  # the inside link is fine


def test_default_path_needs_the_frozen_executable() -> None:
    if getattr(sys, "frozen", False) or os.environ.get("SECRET_BACKEND_EXE"):
        pytest.skip("runs from source only")
    result = run_cli(b"", args=["check-permissions"])
    assert result.returncode == 2
    assert "give the PATH of the executable" in result.stderr
