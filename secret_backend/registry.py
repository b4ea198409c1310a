"""Backend type name -> lazily imported class.

The packaging spec derives PyInstaller's hidden imports from `BACKENDS`, so a backend
added here is automatically frozen into the executable.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

from secret_backend import config as config_mod
from secret_backend.backend import Backend
from secret_backend.deadline import Deadline
from secret_backend.errors import ConfigError, SecretError


class Entry(NamedTuple):
    target: str  # "module:Class"
    extra: str | None  # pip extra providing the SDK, None when the stdlib is enough


BACKENDS: dict[str, Entry] = {
    "aws.secrets": Entry("backends.aws_secrets:SecretsManagerBackend", "aws"),
    "aws.ssm": Entry("backends.aws_ssm:ParameterStoreBackend", "aws"),
    "azure.keyvault": Entry("backends.azure_keyvault:KeyVaultBackend", "azure"),
    "gcp.secretmanager": Entry("backends.gcp_secretmanager:SecretManagerBackend", "gcp"),
    "hashicorp.vault": Entry("backends.hashicorp_vault:VaultBackend", "vault"),
    "k8s.secrets": Entry("backends.k8s_secrets:KubernetesSecretsBackend", "k8s"),
    "akeyless": Entry("backends.akeyless:AkeylessBackend", "akeyless"),
    "pass": Entry("backends.pass_store:PassBackend", None),
    "file.json": Entry("backends.file_json:JsonFileBackend", None),
    "file.yaml": Entry("backends.file_yaml:YamlFileBackend", None),
    "file.text": Entry("backends.file_text:TextFileBackend", None),
    "k8s.file": Entry("backends.file_text:KubernetesFileBackend", None),
    "docker.secrets": Entry("backends.file_text:DockerSecretsBackend", None),
    "env": Entry("backends.env:EnvBackend", None),
}

_SDK_MODULES = ("boto3", "botocore", "azure", "hvac", "google", "requests", "urllib3")


def unsupported(type_name: Any) -> SecretError:
    known = ", ".join(sorted(BACKENDS))
    return ConfigError(f"unsupported backend type: {type_name} (supported: {known})")


def load_backend(type_name: str) -> type[Backend]:
    """The backend class for `type_name`, imported now; errors say how to fix the install."""
    entry = BACKENDS.get(type_name) if isinstance(type_name, str) else None
    if entry is None:
        raise unsupported(type_name)
    module_name, _, class_name = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if entry.extra and missing in _SDK_MODULES:
            raise ConfigError(
                f"backend {type_name} needs the Python package '{missing}', which is not "
                f"installed: pip install 'datadog-secret-backend[{entry.extra}]'"
            )
        raise ConfigError(f"backend {type_name} is not available in this build ({exc.name})")
    cls: type[Backend] = getattr(module, class_name)
    return cls


def create_backend(
    type_name: str, raw_config: Any, deadline: Deadline, path: str = "config"
) -> Backend:
    """Import, configure and construct a backend. Raises SecretError/ConfigError."""
    cls = load_backend(type_name)
    cfg = config_mod.build(cls.Config, raw_config, path)
    return cls(cfg, deadline)
