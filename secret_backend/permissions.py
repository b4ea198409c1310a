"""`datadog-secret-backend check-permissions [PATH]`: the Agent's rights check, and more.

Before every run the Agent checks the executable (Linux, pkg/util/filesystem/rights_nix.go):
stat it, refuse any right for group or others (with allow_group_exec: group may read and
execute, never write; others nothing), then access(X_OK) as the Agent user. We apply exactly
those rules, with the Agent's wording, to the executable, and, because an attacker who can
swap a library under `_internal/` owns the process just as well, to the bundle directory and
everything under `_internal/` (same owner, same group/other rule, owner can read).

The Agent user is `--owner USER`, or else the user running this command: run it as the Agent
does (`sudo -u dd-agent datadog-secret-backend check-permissions`, or as root in containers).
"""

from __future__ import annotations

import argparse
import dataclasses
import grp
import hashlib
import os
import pwd
import stat
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from secret_backend.errors import ExitCode

PROG = "datadog-secret-backend check-permissions"
INTERNAL_DIR = "_internal"
MAX_LISTED = 10  # bundle problems listed one by one; the rest are counted


@dataclasses.dataclass(frozen=True)
class AgentUser:
    name: str
    uid: int
    groups: frozenset[int]

    @classmethod
    def lookup(cls, name: str | None) -> AgentUser:
        """`name`, or the current effective user; raises KeyError for an unknown user."""
        entry = pwd.getpwnam(name) if name is not None else pwd.getpwuid(os.geteuid())
        groups = frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return cls(entry.pw_name, entry.pw_uid, groups)


@dataclasses.dataclass
class Finding:
    path: str
    problem: str | None  # None: the entry passed
    mode: str = "?"
    owner: str = "?"
    group: str = "?"

    def line(self) -> str:
        status = "ok  " if self.problem is None else "FAIL"
        detail = f"mode {self.mode}, owner {self.owner}, group {self.group}"
        what = self.problem if self.problem is not None else f"'{self.path}'"
        return f"{status} {what} ({detail})"


def _names(st: os.stat_result) -> tuple[str, str]:
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return owner, group


def _reason(exc: OSError) -> str:
    # Go prints errno texts in lower case ("no such file or directory"); so do we.
    return (exc.strerror or str(exc)).lower()


def _can(user: AgentUser, st: os.stat_result, want: int) -> bool:
    """access(2) for `user` (want: a mask of R_OK/W_OK/X_OK), from the mode bits alone."""
    mode = stat.S_IMODE(st.st_mode)
    if user.uid == 0:
        # root may read and write anything; it may execute if any execute bit is set.
        return not (want & os.X_OK) or bool(mode & 0o111) or stat.S_ISDIR(st.st_mode)
    if st.st_uid == user.uid:
        bits = mode >> 6
    elif st.st_gid in user.groups:
        bits = mode >> 3
    else:
        bits = mode
    return (bits & want) == want


def rights_problem(st: os.stat_result, allow_group_exec: bool) -> bool:
    """The Agent's mode rule: True when group/others have rights they must not have."""
    if allow_group_exec:
        return bool(st.st_mode & (stat.S_IWGRP | stat.S_IRWXO))
    return bool(st.st_mode & (stat.S_IRWXG | stat.S_IRWXO))


def rights_message(kind: str, path: str, allow_group_exec: bool) -> str:
    if allow_group_exec:
        return (
            f"invalid {kind} '{path}', 'others' have rights on it or 'group' has write "
            "permissions on it"
        )
    return f"invalid {kind} '{path}', 'group' or 'others' have rights on it"


def check_executable(path: str, user: AgentUser, allow_group_exec: bool) -> Finding:
    """Exactly the Agent's checks, in its order and wording, plus the owner."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return Finding(path, f"invalid executable '{path}': can't stat it: {_reason(exc)}")
    owner, group = _names(st)
    found = Finding(path, None, f"{stat.S_IMODE(st.st_mode):04o}", owner, group)
    if rights_problem(st, allow_group_exec):
        found.problem = rights_message("executable", path, allow_group_exec)
    elif not stat.S_ISREG(st.st_mode):
        found.problem = f"invalid executable '{path}': not a regular file"
    elif not _can(user, st, os.X_OK):
        found.problem = (
            f"invalid executable '{path}': can't access it: permission denied "
            f"(the Agent user '{user.name}' cannot execute it)"
        )
    elif st.st_uid != user.uid:
        found.problem = (
            f"invalid executable '{path}': owned by '{owner}', not by the Agent user "
            f"'{user.name}' (chown {user.name} '{path}')"
        )
    return found


def _bundle_entries(root: Path) -> Iterator[Path]:
    yield root
    internal = root / INTERNAL_DIR
    if not internal.is_dir() or internal.is_symlink():
        if internal.exists() or internal.is_symlink():
            yield internal
        return
    yield internal
    for dirpath, dirnames, filenames in os.walk(internal):
        dirnames.sort()
        for name in [*sorted(dirnames), *sorted(filenames)]:
            yield Path(dirpath, name)


def check_bundle_entry(
    path: Path, root: Path, user: AgentUser, allow_group_exec: bool
) -> Finding | None:
    """The executable's rule applied to a bundle directory or a file under _internal/."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return Finding(str(path), f"invalid bundle file '{path}': can't stat it: {_reason(exc)}")
    owner, group = _names(st)
    found = Finding(str(path), None, f"{stat.S_IMODE(st.st_mode):04o}", owner, group)
    if st.st_uid != user.uid:
        found.problem = (
            f"invalid bundle file '{path}': owned by '{owner}', not by the Agent user "
            f"'{user.name}' (chown -R {user.name} '{root}')"
        )
    elif stat.S_ISLNK(st.st_mode):
        # A link's own mode means nothing; its target must stay inside the bundle (the
        # target itself is checked as an entry of the bundle).
        target = path.resolve()
        if not target.is_relative_to(root.resolve()):
            found.problem = f"invalid bundle file '{path}': symbolic link out of the bundle"
            return found
        return None
    elif rights_problem(st, allow_group_exec):
        found.problem = rights_message("bundle file", str(path), allow_group_exec)
    elif stat.S_ISDIR(st.st_mode) and not _can(user, st, os.R_OK | os.X_OK):
        found.problem = f"invalid bundle file '{path}': the owner cannot list it (chmod u+rx)"
    elif not stat.S_ISDIR(st.st_mode) and not _can(user, st, os.R_OK):
        found.problem = f"invalid bundle file '{path}': the owner cannot read it (chmod u+r)"
    return found


def check(path: str, user: AgentUser, allow_group_exec: bool) -> list[Finding]:
    """Every finding (ok and failed), the executable first."""
    findings = [check_executable(path, user, allow_group_exec)]
    root = Path(path).absolute().parent
    if not (root / INTERNAL_DIR).exists():
        return findings
    for entry in _bundle_entries(root):
        found = check_bundle_entry(entry, root, user, allow_group_exec)
        if found is not None:
            findings.append(found)
    return findings


def default_path() -> str | None:
    if getattr(sys, "frozen", False):
        return sys.executable
    return None


def sha256_of(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def report(path: str, user: AgentUser, allow_group_exec: bool, out: list[str]) -> bool:
    """Run the checks, append the report lines to `out`; True when everything passed."""
    findings = check(path, user, allow_group_exec)
    failed = [f for f in findings if f.problem is not None]
    out.append(findings[0].line())
    bundle_failed = [f for f in failed if f is not findings[0]]
    out.extend(f.line() for f in bundle_failed[:MAX_LISTED])
    if len(bundle_failed) > MAX_LISTED:
        out.append(f"FAIL ... and {len(bundle_failed) - MAX_LISTED} more entries of the bundle")
    bundle = len(findings) - 1
    if bundle:
        bad = len(failed) - (findings[0].problem is not None)
        out.append(
            f"{'ok  ' if not bad else 'FAIL'} bundle: {bundle} entries checked "
            f"(the directory and {INTERNAL_DIR}/), {bad} with a problem"
        )
    else:
        out.append(f"note: no {INTERNAL_DIR}/ next to '{path}': only the executable was checked")
    digest = sha256_of(path)
    if digest:
        out.append(f"sha256 {digest} (secret_backend_command_sha256)")
    if failed:
        modes = "0750/0550/0440" if allow_group_exec else "0700/0500/0400"
        out.append(
            f"fix: chown -R {user.name} '{Path(path).absolute().parent}'; chmod directories, "
            f"the executable and other files to {modes} (packaging/install.sh does both)"
        )
    return not failed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Check the executable and its _internal/ folder with the Agent's rules "
        "(owner, no rights for group/others, executable by the owner).",
    )
    parser.add_argument(
        "path", nargs="?", help="the executable (default: this executable, when frozen)"
    )
    parser.add_argument(
        "--allow-group-exec",
        action="store_true",
        help="as secret_backend_command_allow_group_exec_perm: true (group may read/execute)",
    )
    parser.add_argument(
        "--owner",
        metavar="USER",
        help="the user the Agent runs as (default: the user running this command)",
    )
    return parser


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    path = args.path or default_path()
    if path is None:
        sys.stderr.write(f"{PROG}: give the PATH of the executable to check\n")
        return ExitCode.USAGE
    try:
        user = AgentUser.lookup(args.owner)
    except KeyError:
        sys.stderr.write(f"{PROG}: unknown user '{args.owner}'\n")
        return ExitCode.USAGE
    lines: list[str] = [f"checking '{path}' for the Agent user '{user.name}'"]
    ok = report(path, user, args.allow_group_exec, lines)
    sys.stdout.write("\n".join(lines) + "\n")
    return ExitCode.OK if ok else ExitCode.CHECK_FAILED
