"""The three ways of choosing backends for a request (CONTRACT section 2).

Each mode turns the request's handles into routes (handle -> slot + inner handle) and slots
(lazily constructed backends). Slots are only constructed when a handle uses them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from secret_backend import files
from secret_backend.config import describe
from secret_backend.deadline import Deadline
from secret_backend.errors import ConfigError
from secret_backend.registry import create_backend
from secret_backend.resolver import Route, Slot

CONFIG_FILE_NAME = "datadog-secret-backend.yaml"
MAX_CONFIG_BYTES = 1024 * 1024

Plan = tuple[dict[str, Route], dict[str, Slot]]


def _factory(type_name: Any, raw_config: Any, path: str) -> Any:
    def construct(deadline: Deadline) -> Any:
        return create_backend(type_name, raw_config, deadline, path)

    return construct


def typed_mode(handles: list[str], type_name: Any, raw_config: Any) -> Plan:
    """`type` + `config` in the payload: one backend for every handle."""
    label = str(type_name)
    slots = {label: Slot(label=label, factory=_factory(type_name, raw_config, "config"))}
    return {h: Route(slot=label, inner=h) for h in handles}, slots


def default_config_path() -> str:
    """datadog-secret-backend.yaml next to the executable (as the v0 implementation looks)."""
    executable = sys.executable if getattr(sys, "frozen", False) else sys.argv[0]
    return os.path.join(os.path.dirname(os.path.realpath(executable)), CONFIG_FILE_NAME)


def load_backends_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The `backends` mapping of a multi-backend YAML file; ConfigError says what is wrong."""
    try:
        data, size = files.read_regular_file(os.fspath(path), MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError(
            f"no backend configured: the request has no backend type (set secret_backend_type "
            f"in datadog.yaml) and the multi-backend file {path} does not exist"
        )
    except files.NotRegularFileError:
        raise ConfigError(f"multi-backend config {path} is not a regular file")
    except OSError as exc:
        raise ConfigError(f"cannot read multi-backend config {path}: {exc.strerror}")
    if max(size, len(data)) > MAX_CONFIG_BYTES:  # len: the file grew after fstat
        raise ConfigError(f"multi-backend config {path} is larger than {MAX_CONFIG_BYTES} bytes")
    import yaml  # imported here: typed mode requests do not pay for it

    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(f"multi-backend config {path} is not valid YAML{where}")
    if not isinstance(doc, dict) or not isinstance(doc.get("backends"), dict):
        raise ConfigError(
            f"multi-backend config {path} must contain a 'backends' mapping "
            "(backends: {<backend_id>: {backend_type: ..., ...}})"
        )
    return doc["backends"]


def file_mode(handles: list[str], path: str | os.PathLike[str]) -> Plan:
    """v0 multi-backend mode: handles `<backend_id>:<secret_key>`."""
    try:
        backends = load_backends_file(path)
    except ConfigError as exc:
        return {h: Route(error=str(exc)) for h in handles}, {}
    defined = ", ".join(sorted(str(k) for k in backends)) or "none"
    routes: dict[str, Route] = {}
    slots: dict[str, Slot] = {}
    for handle in handles:
        backend_id, sep, key = handle.partition(":")
        if not sep:
            routes[handle] = Route(
                error=f'invalid handle "{handle}": expected "<backend_id>:<secret_key>" '
                f"(backends defined in {path}: {defined})"
            )
            continue
        if backend_id not in backends:
            routes[handle] = Route(
                error=f'undefined backend "{backend_id}": {path} defines {defined}'
            )
            continue
        if backend_id not in slots:
            slots[backend_id] = _file_mode_slot(backend_id, backends[backend_id], path)
        routes[handle] = Route(slot=backend_id, inner=key)
    return routes, slots


def _file_mode_slot(backend_id: str, entry: Any, path: str | os.PathLike[str]) -> Slot:
    where = f"backends.{backend_id}"
    if not isinstance(entry, Mapping):
        error = ConfigError(f"{path}: {where}: expected a mapping, got {describe(entry)}")
        return Slot(label=f"backend '{backend_id}'", factory=_raiser(error))
    settings = dict(entry)
    type_name = settings.pop("backend_type", None)
    if type_name is None:
        error = ConfigError(f"{path}: {where}.backend_type: required setting is missing")
        return Slot(label=f"backend '{backend_id}'", factory=_raiser(error))
    label = f"backend '{backend_id}' ({type_name})"
    return Slot(label=label, factory=_factory(type_name, settings, where))


def _raiser(error: Exception) -> Any:
    def construct(deadline: Deadline) -> Any:
        raise error

    return construct


def prefix_mode(handles: list[str], root_dir: str | None) -> Plan:
    """Handles like readsecret_multiple_providers.sh: `file@/abs`, `k8s_secret@ns/name/key`,
    or a bare file name under ROOT_DIR."""
    routes: dict[str, Route] = {}
    slots: dict[str, Slot] = {}

    def use(name: str, type_name: str, config: dict[str, Any]) -> None:
        if name not in slots:
            slots[name] = Slot(label=name, factory=_factory(type_name, config, name))

    for handle in handles:
        prefix, sep, rest = handle.partition("@")
        if not sep:
            if not root_dir:
                routes[handle] = Route(
                    error=f'handle "{handle}" has no provider prefix and no root directory was '
                    "given: use file@/absolute/path or pass --with-provider-prefixes ROOT_DIR"
                )
                continue
            use("files under root", "file.text", {"secrets_path": root_dir})
            routes[handle] = Route(slot="files under root", inner=handle)
        elif prefix == "file":
            if not os.path.isabs(rest):
                routes[handle] = Route(
                    error=f'file@ needs an absolute path, got "{rest}" (e.g. file@/etc/secret)'
                )
                continue
            use("file@", "file.text", {"secrets_path": "/"})
            routes[handle] = Route(slot="file@", inner=rest)
        elif prefix == "k8s_secret":
            parts = rest.split("/")
            if len(parts) != 3 or not all(parts):
                routes[handle] = Route(
                    error=f'invalid k8s_secret handle "{handle}": '
                    "expected k8s_secret@<namespace>/<secret name>/<key>"
                )
                continue
            use("k8s_secret@", "k8s.secrets", {})
            routes[handle] = Route(slot="k8s_secret@", inner=f"{parts[0]}/{parts[1]};{parts[2]}")
        else:
            routes[handle] = Route(error=f"provider not supported: {prefix}")
    return routes, slots
