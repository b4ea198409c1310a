"""file.text, k8s.file, docker.secrets: one secret per file inside a directory.

A handle is a file name relative to `secrets_path` (or an absolute path inside it). The
value is the file's content, verbatim (the Agent strips a trailing line break only when
secret_backend_remove_trailing_line_break is set).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, ClassVar

from secret_backend import files
from secret_backend.backend import Backend, CommonConfig, Ref
from secret_backend.deadline import Deadline
from secret_backend.errors import ConfigError, SecretError


@dataclasses.dataclass(frozen=True, kw_only=True)
class SecretsDirConfig(CommonConfig):
    secrets_path: str
    max_file_read_size: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class DockerSecretsConfig(CommonConfig):
    secrets_path: str = "/run/secrets"
    max_file_read_size: int = 0


class TextFileBackend(Backend):
    type_name = "file.text"
    Config: ClassVar[type[CommonConfig]] = SecretsDirConfig
    max_batch = 64
    default_concurrency = 4

    def __init__(self, config: Any, deadline: Deadline) -> None:
        super().__init__(config, deadline)
        root = config.secrets_path
        if not os.path.isabs(root):
            raise ConfigError(
                f'config.secrets_path: must be an absolute directory path, got "{root}"'
            )
        if not os.path.isdir(root):
            raise ConfigError(f"config.secrets_path: directory {root} does not exist")
        self.root = root
        self.max_size = files.effective_max_size(config.max_file_read_size)

    def parse(self, handle: str) -> Ref:
        if not handle:
            raise SecretError("empty handle: expected a file name")
        return Ref(handle)

    def fetch(self, keys: Sequence[Hashable], deadline: Deadline) -> Mapping[Hashable, Any]:
        results: dict[Hashable, Any] = {}
        for key in keys:
            name = str(key)
            try:
                path = files.resolve_inside(self.root, name)
                self.count_call()
                data = files.read_secret_file(path, name, self.max_size)
                results[key] = files.decode_text(data, name)
            except SecretError as exc:
                results[key] = exc
        return results


class KubernetesFileBackend(TextFileBackend):
    """Secrets mounted as files by Kubernetes (a Secret volume)."""

    type_name = "k8s.file"


class DockerSecretsBackend(TextFileBackend):
    """Docker (Swarm/Compose) secrets, mounted under /run/secrets by default."""

    type_name = "docker.secrets"
    Config = DockerSecretsConfig
