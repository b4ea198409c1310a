"""pass through the real executable, with the real `pass` and `gpg` and a throwaway key.

`pass` and `gpg` come from Debian packages. When they are missing, the session fixture
installs them with apt-get if it runs as root (CI, containers); otherwise every test here is
skipped with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import make_request, run_cli

APT_LOCK = Path(tempfile.gettempdir()) / "datadog-secret-backend-apt.lock"


def _missing_tools() -> list[str]:
    return [tool for tool in ("pass", "gpg", "gpgconf") if shutil.which(tool) is None]


def ensure_pass_installed() -> str | None:
    """Install pass and gnupg with apt-get when needed and allowed; the skip reason if not."""
    if not _missing_tools():
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"{', '.join(_missing_tools())} not installed (apt-get install pass gnupg as root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [
        "apt-get",
        "-o",
        "DPkg::Lock::Timeout=300",
        "install",
        "-y",
        "--no-install-recommends",
        "pass",
        "gnupg",
    ]
    with open(APT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers: one apt-get at a time
        if not _missing_tools():
            return None
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:  # the package lists may be missing or stale
            subprocess.run(
                ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update"],
                env=env,
                capture_output=True,
                timeout=900,
            )
            result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    if _missing_tools():
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"could not install pass/gnupg with apt-get: {last}"
    return None


@dataclasses.dataclass
class Store:
    gnupghome: str  # holds the Agent user's key
    path: Path  # a store encrypted for that key
    foreign: Path  # a store encrypted for another key only

    @property
    def env(self) -> dict[str, str]:
        return {"GNUPGHOME": self.gnupghome}


GPG_BATCH = ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]


def _gpg_home() -> str:
    # Short path: gpg-agent's socket path must fit in 108 bytes.
    home = tempfile.mkdtemp(prefix="g", dir="/tmp")
    os.chmod(home, 0o700)
    return home


def _new_key(home: str, uid: str) -> str:
    env = {**os.environ, "GNUPGHOME": home}
    subprocess.run(
        [*GPG_BATCH, "--quick-gen-key", uid, "default", "default", "never"],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-secret-keys", uid],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def _pass(home: str, store: Path, *args: str, stdin: bytes = b"") -> None:
    env = {**os.environ, "GNUPGHOME": home, "PASSWORD_STORE_DIR": str(store)}
    subprocess.run(["pass", *args], env=env, input=stdin, check=True, capture_output=True)


ENTRIES = {
    "datadog/api_key": b"0123456789abcdef\n",
    "datadog/app_key": b"fedcba9876543210\n",
    "multi": b"line 1\nline 2\n\n",
    "no-newline": b"exact",
    "unicode": "pässwörd ✓\n".encode(),
    "blank": b"\n",
}


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    reason = ensure_pass_installed()
    if reason:
        pytest.skip(reason)
    home, other_home = _gpg_home(), _gpg_home()
    try:
        key = _new_key(home, "Datadog Agent <agent@example.invalid>")
        other_key = _new_key(other_home, "Someone Else <else@example.invalid>")
        root = tmp_path_factory.mktemp("pass")
        path, foreign = root / "store", root / "foreign"
        _pass(home, path, "init", key)
        for entry, value in ENTRIES.items():
            _pass(home, path, "insert", "--multiline", entry, stdin=value)
        _pass(other_home, foreign, "init", other_key)
        _pass(other_home, foreign, "insert", "--multiline", "theirs", stdin=b"not yours\n")
        yield Store(home, path, foreign)
    finally:
        for h in (home, other_home):
            subprocess.run(
                ["gpgconf", "--kill", "gpg-agent"],
                env={**os.environ, "GNUPGHOME": h},
                capture_output=True,
            )
            shutil.rmtree(h, ignore_errors=True)


def test_values_trailing_newline_removed_once(store: Store) -> None:
    handles = ["datadog/api_key", "datadog/app_key", "multi", "no-newline", "unicode"]
    result = run_cli(make_request(handles, "pass", {"store_path": str(store.path)}), env=store.env)
    assert result.returncode == 0, result.stderr
    assert result.value("datadog/api_key") == "0123456789abcdef"
    assert result.value("datadog/app_key") == "fedcba9876543210"
    assert result.value("multi") == "line 1\nline 2\n"  # only the final newline goes
    assert result.value("no-newline") == "exact"
    assert result.value("unicode") == "pässwörd ✓"


def test_prefix_and_store_from_environment(store: Store) -> None:
    # Without store_path, the child inherits PASSWORD_STORE_DIR, as pass itself would.
    env = {**store.env, "PASSWORD_STORE_DIR": str(store.path)}
    result = run_cli(make_request(["api_key", "nope"], "pass", {"prefix": "datadog/"}), env=env)
    assert result.value("api_key") == "0123456789abcdef"
    error = result.error("nope")
    assert 'pass entry "datadog/nope" is not in the password store' in error
    assert str(store.path) in error


def test_missing_entry_folder_and_empty_value(store: Store) -> None:
    handles = ["missing/entry", "datadog", "blank"]
    result = run_cli(make_request(handles, "pass", {"store_path": str(store.path)}), env=store.env)
    assert 'pass entry "missing/entry" is not in the password store' in result.error(
        "missing/entry"
    )
    assert "is a folder of the password store, not an entry" in result.error("datadog")
    assert "the secret is empty" in result.error("blank")


@pytest.mark.parametrize(
    ("handle", "expected"),
    [
        ("-c", 'must not start with "-"'),
        ("--help", 'must not start with "-"'),
        ("../outside", "'..' path segments are not allowed"),
        ("datadog/../../x", "'..' path segments are not allowed"),
        ("a\0b", "NUL characters"),
    ],
)
def test_handles_never_parsed_as_options_or_paths_out(
    store: Store, tmp_path: Path, handle: str, expected: str
) -> None:
    # A pass_binary that records being run: a rejected handle must never reach it.
    marker = tmp_path / "ran"
    spy = tmp_path / "spy-pass"
    spy.write_text(f'#!/bin/sh\necho "$@" > {marker}\necho value\n')
    spy.chmod(0o700)
    cfg = {"store_path": str(store.path), "pass_binary": str(spy)}
    result = run_cli(make_request([handle, "ok"], "pass", cfg), env=store.env)
    assert expected in result.error(handle)
    assert result.value("ok") == "value"
    assert marker.read_text() == "show -- ok\n"  # `--`: the entry is never an option


def test_undecryptable_entry_names_the_gpg_key(store: Store) -> None:
    result = run_cli(
        make_request(["theirs"], "pass", {"store_path": str(store.foreign)}), env=store.env
    )
    error = result.error("theirs")
    assert "gpg cannot decrypt it with the Agent user's keys" in error
    assert store.gnupghome in error
    assert "not yours" not in result.stdout.decode() + result.stderr


def test_config_errors(store: Store, tmp_path: Path) -> None:
    result = run_cli(make_request(["x"], "pass", {"pass_binary": str(tmp_path / "absent")}))
    assert "not found or not executable" in result.error("x")
    result = run_cli(make_request(["x"], "pass", {"store_path": str(tmp_path / "absent")}))
    assert "is not a directory" in result.error("x")


def test_hanging_pass_is_killed_at_the_deadline(store: Store, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    slow = tmp_path / "slow-pass"
    # The sleep is a grandchild of ours: the whole process group must be killed.
    slow.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nsleep 1000\n")
    slow.chmod(0o700)
    cfg = {"store_path": str(store.path), "pass_binary": str(slow)}
    result = run_cli(make_request(["datadog/api_key"], "pass", cfg, timeout=2), env=store.env)
    assert result.returncode == 0, result.stderr
    error = result.error("datadog/api_key")
    assert "timed out" in error and "secret_backend_timeout (2s)" in error
    assert result.seconds < 2 + 5  # answered before the Agent's kill (generous margin)
    group = int(pid_file.read_text())
    for _ in range(50):  # the kill is asynchronous: allow it a moment
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        pytest.fail("the pass child's process group outlived the run")
