"""`datadog-secret-backend check --datadog-yaml PATH [--confd DIR]`: troubleshoot a setup.

For when the Agent says "an error occurred while resolving": find every `ENC[...]` handle in
datadog.yaml and conf.d/**/*.yaml (as the Agent does: a string value that is `ENC[...]` once
spaces and tabs are trimmed), read the backend settings of datadog.yaml, resolve every handle
through the same modes/resolver code as a real run, and print one line per handle: where it
was found, ok or the error, the time taken, and the value's length and a short SHA-256 prefix
(to compare two hosts), never the value. Also checks the configured command's rights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from secret_backend.errors import ExitCode, SecretError

PROG = "datadog-secret-backend check"
MAX_YAML_BYTES = 16 * 1024 * 1024


class CheckError(Exception):
    """The setup cannot be checked at all (unreadable datadog.yaml...)."""


def enc_handle(value: str) -> str | None:
    """The handle of an `ENC[...]` value, as the Agent's isEnc() sees it."""
    trimmed = value.strip(" \t")
    if trimmed.startswith("ENC[") and trimmed.endswith("]"):
        return trimmed[4:-1]
    return None


def load_yaml_nodes(path: Path) -> Any:
    """The YAML node tree (kept as nodes for line numbers), or None for an empty file."""
    import yaml

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise CheckError(f"cannot read {path}: {exc.strerror}")
    if len(data) > MAX_YAML_BYTES:
        raise CheckError(f"{path} is larger than {MAX_YAML_BYTES} bytes")
    try:
        return yaml.compose(data, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise CheckError(f"{path} is not valid YAML{where}")


def find_handles(node: Any, key_path: str = "") -> Iterator[tuple[str, int, str]]:
    """(key path, line, handle) for every ENC[] string value under `node`."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            yield from find_handles(value, f"{key_path}.{name}" if key_path else str(name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from find_handles(item, f"{key_path}[{index}]")
    elif isinstance(node, yaml.ScalarNode) and isinstance(node.value, str):
        handle = enc_handle(node.value)
        if handle is not None:
            yield key_path, node.start_mark.line + 1, handle


def agent_settings(path: Path) -> dict[str, Any]:
    """datadog.yaml as the Agent reads it (DD_SECRET_BACKEND_* environment variables win)."""
    import yaml

    try:
        with open(path, "rb") as f:
            doc = yaml.safe_load(f.read(MAX_YAML_BYTES))
    except OSError as exc:
        raise CheckError(f"cannot read {path}: {exc.strerror}")
    except yaml.YAMLError:
        raise CheckError(f"{path} is not valid YAML")
    settings = dict(doc) if isinstance(doc, dict) else {}
    for key in ("type", "command", "timeout"):
        env = os.environ.get(f"DD_SECRET_BACKEND_{key.upper()}")
        if env:
            settings[f"secret_backend_{key}"] = env
    env_config = os.environ.get("DD_SECRET_BACKEND_CONFIG")
    if env_config:
        try:
            settings["secret_backend_config"] = json.loads(env_config)
        except json.JSONDecodeError:
            raise CheckError("DD_SECRET_BACKEND_CONFIG is not valid JSON")
    return settings


def yaml_files(datadog_yaml: Path, confd: Path | None) -> list[Path]:
    files = [datadog_yaml]
    if confd is not None:
        found = [*confd.rglob("*.yaml"), *confd.rglob("*.yml")]
        files += sorted(p for p in found if p.is_file())
    return files


def short_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


def plan_for(settings: dict[str, Any], handles: list[str]) -> tuple[str, Any, Any]:
    """(mode description, routes, slots): the mode the Agent's run would use."""
    from secret_backend import cli, modes

    arguments = settings.get("secret_backend_arguments") or []
    if not isinstance(arguments, list):
        raise CheckError("secret_backend_arguments must be a list of strings")
    try:
        args = cli.build_parser().parse_args([str(a) for a in arguments])
    except SystemExit:
        raise CheckError(f"secret_backend_arguments {arguments} are not valid (see above)")
    command = settings.get("secret_backend_command")
    type_name = settings.get("secret_backend_type")
    if args.with_provider_prefixes is not None:
        routes, slots = modes.prefix_mode(handles, args.with_provider_prefixes or None)
        return "provider-prefix", routes, slots
    if args.config is not None:
        routes, slots = modes.file_mode(handles, Path(args.config))
        return f"multi-backend ({args.config})", routes, slots
    if type_name:
        config = settings.get("secret_backend_config") or {}
        routes, slots = modes.typed_mode(handles, type_name, config)
        return f"typed ({type_name})", routes, slots
    if command:
        path = str(Path(str(command)).parent / modes.CONFIG_FILE_NAME)
    else:
        path = modes.default_config_path()
    routes, slots = modes.file_mode(handles, path)
    return f"multi-backend ({path})", routes, slots


def memoized(factory: Any, label: str, setup: dict[str, float]) -> Any:
    """Construct a backend once for the whole check, recording how long it took."""
    built: list[Any] = []

    def construct(deadline: Any) -> Any:
        if not built:
            started = time.monotonic()
            try:
                built.append(factory(deadline))
            finally:
                setup[label] = time.monotonic() - started
        return built[0]

    return construct


def resolve_each(
    handles: list[str], routes: Any, slots: Any, timeout: float
) -> dict[str, tuple[str | SecretError, float]]:
    """Resolve handles one at a time (same resolver, backends built once) to time each."""
    from secret_backend.deadline import Deadline
    from secret_backend.resolver import Slot, resolve

    setup: dict[str, float] = {}
    factories = {name: memoized(s.factory, name, setup) for name, s in slots.items()}
    results: dict[str, tuple[str | SecretError, float]] = {}
    for handle in handles:
        fresh = {name: Slot(label=s.label, factory=factories[name]) for name, s in slots.items()}
        started = time.monotonic()
        answer = resolve([handle], {handle: routes[handle]}, fresh, Deadline.after(timeout))
        results[handle] = (answer[handle], time.monotonic() - started)
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Resolve every ENC[] handle of an Agent configuration and report, per "
        "handle, where it is, ok or the error, the time, and the value's length and hash "
        "(never the value).",
    )
    parser.add_argument("--datadog-yaml", required=True, metavar="PATH", type=Path)
    parser.add_argument(
        "--confd", metavar="DIR", type=Path, help="also scan DIR/**/*.yaml (the Agent's conf.d)"
    )
    parser.add_argument(
        "--owner",
        metavar="USER",
        help="the Agent user for the permission check (default: the user running this)",
    )
    return parser


def run_check(args: argparse.Namespace, out: list[str]) -> bool:
    settings = agent_settings(args.datadog_yaml)
    found: dict[str, list[str]] = {}
    for path in yaml_files(args.datadog_yaml, args.confd):
        node = load_yaml_nodes(path)
        if node is None:
            continue
        for key_path, line, handle in find_handles(node):
            found.setdefault(handle, []).append(f"{path}:{line} {key_path}")
    ok = True
    command = settings.get("secret_backend_command")
    if command:
        ok = check_command(str(command), settings, args.owner, out)
    else:
        out.append("note: secret_backend_command is not set in datadog.yaml")
    if not found:
        scanned = f"{args.datadog_yaml}" + (f" and {args.confd}" if args.confd else "")
        out.append(f"no ENC[] handle found in {scanned}")
        return ok

    try:
        timeout = float(settings.get("secret_backend_timeout") or 30)
    except (TypeError, ValueError):
        raise CheckError("secret_backend_timeout must be a number of seconds")
    strip = bool(settings.get("secret_backend_remove_trailing_line_break"))
    handles = list(found)
    mode, routes, slots = plan_for(settings, handles)
    out.append(f"mode {mode}, {len(handles)} distinct handles, secret_backend_timeout {timeout:g}s")
    started = time.monotonic()
    results = resolve_each(handles, routes, slots, timeout)
    total = time.monotonic() - started
    failed = 0
    for handle in handles:
        answer, seconds = results[handle]
        where = "; ".join(found[handle])
        took = f"{seconds * 1000:.0f} ms"
        if isinstance(answer, SecretError):
            failed += 1
            out.append(f"FAIL ENC[{handle}] at {where}: {took}: {answer}")
            continue
        value = answer.rstrip("\r\n") if strip else answer
        if not value:
            failed += 1
            out.append(f"FAIL ENC[{handle}] at {where}: {took}: empty once the line break is cut")
            continue
        out.append(
            f"ok   ENC[{handle}] at {where}: {took}, length {len(value)}, "
            f"sha256 {short_hash(value)}..."
        )
    out.append(
        f"{len(handles)} handles: {len(handles) - failed} ok, {failed} failed, "
        f"{total * 1000:.0f} ms in all (one at a time; the Agent resolves them together)"
    )
    return ok and not failed


def check_command(
    command: str, settings: dict[str, Any], owner: str | None, out: list[str]
) -> bool:
    from secret_backend import permissions

    try:
        user = permissions.AgentUser.lookup(owner)
    except KeyError:
        raise CheckError(f"unknown user '{owner}'")
    allow_group = bool(settings.get("secret_backend_command_allow_group_exec_perm"))
    out.append(f"secret_backend_command '{command}', Agent user '{user.name}':")
    ok = permissions.report(command, user, allow_group, out)
    pinned = settings.get("secret_backend_command_sha256")
    if pinned is not None and pinned != "":
        actual = permissions.sha256_of(command)
        if actual != str(pinned).strip().lower():
            ok = False
            out.append(
                f"FAIL secret_backend_command_sha256 is {pinned} but the file's SHA-256 is "
                f"{actual}: the Agent will refuse to run it"
            )
    return ok


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    out: list[str] = []
    try:
        ok = run_check(args, out)
    except CheckError as exc:
        out.append(f"FAIL {exc}")
        ok = False
    sys.stdout.write("\n".join(out) + "\n")
    return ExitCode.OK if ok else ExitCode.CHECK_FAILED
