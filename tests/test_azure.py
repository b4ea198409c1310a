"""azure.keyvault end to end: the real executable, the real Azure SDK, over HTTPS to the local
Key Vault / Entra ID server of tests/azure_server.py (reached through a CONNECT proxy under
the real host names, so TLS and Key Vault's challenge-resource check stay on)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.azure_server import (
    IDENTITY_HEADER,
    TENANT,
    AzureServer,
    Vault,
    azure_server,
    clean_azure_env,
)
from tests.helpers import Result, make_request, run_cli
from tests.proxy import TcpProxy

__all__ = ["azure_server", "clean_azure_env"]  # fixtures, used by name below
pytestmark = pytest.mark.usefixtures("clean_azure_env")

TYPE = "azure.keyvault"


def sp_config(server: AzureServer, vault: Vault) -> tuple[dict[str, Any], str, str]:
    client_id, secret = server.new_service_principal()
    config = {
        "keyvaulturl": vault.url,
        "azure_session": {
            "azure_tenant_id": TENANT,
            "azure_client_id": client_id,
            "azure_client_secret": secret,
        },
    }
    return config, client_id, secret


def resolve(
    server: AzureServer, config: dict[str, Any], handles: list[str], timeout: float = 20, **env: str
) -> Result:
    result = run_cli(
        make_request(handles, type=TYPE, config=config, timeout=timeout), env=server.env(**env)
    )
    assert result.returncode == 0, result.stderr
    return result


def test_names_and_json_keys_with_a_service_principal(azure_server: AzureServer) -> None:
    vault = azure_server.new_vault()
    vault.put("plain", "s3cret value")
    vault.put("not-json", "just text")
    vault.put(
        "db",
        '{"user":"admin","port":3306,"ratio":1.50,"big":12345678901234567890,'
        '"tls":true,"nested":{"a":[1,2.0]},"gone":null}',
    )
    vault.put("escaped", '{\\"foo\\":\\"bar\\",\\"n\\":7}')
    config, client_id, client_secret = sp_config(azure_server, vault)
    handles = [
        "plain",
        "db",
        "db;user",
        "db;port",
        "db;ratio",
        "db;big",
        "db;tls",
        "db;nested",
        "db;gone",
        "db;nope",
        "escaped",
        "escaped;foo",
        "escaped;n",
        "escaped;nope",
        "not-json;anything",
    ]
    result = resolve(azure_server, config, handles)
    assert result.value("plain") == "s3cret value"
    assert result.value("db").startswith('{"user":"admin"')  # `name`: raw, never parsed
    assert result.value("db;user") == "admin"
    assert result.value("db;port") == "3306"
    assert result.value("db;ratio") == "1.50"
    assert result.value("db;big") == "12345678901234567890"
    assert result.value("db;tls") == "true"
    assert result.value("db;nested") == '{"a":[1,2.0]}'
    assert "is null" in result.error("db;gone")
    missing = result.error("db;nope")
    assert missing.startswith('value does not contain secret key "nope"')
    assert '"user"' in missing and vault.url in missing
    assert result.value("escaped") == '{\\"foo\\":\\"bar\\",\\"n\\":7}'
    assert result.value("escaped;foo") == "bar"
    assert result.value("escaped;n") == "7"
    assert result.error("escaped;nope").startswith('value does not contain secret key "nope"')
    assert result.value("not-json;anything") == "just text"
    # Each distinct secret read once, one challenge, one token for the whole run.
    assert dict(vault.gets) == {"plain": 1, "db": 1, "escaped": 1, "not-json": 1}
    assert vault.challenges == 1
    assert azure_server.token_requests[client_id] == 1
    # Nothing secret leaks into the answer's errors or stderr.
    output = result.stdout.decode() + result.stderr
    for leak in (client_secret, *azure_server.tokens):
        assert leak not in output
    assert "s3cret value" not in result.stderr


def test_one_token_for_many_concurrent_reads(azure_server: AzureServer) -> None:
    vault = azure_server.new_vault()
    names = [f"secret-{i}" for i in range(24)]
    for name in names:
        vault.put(name, f"value-{name}")
    config, client_id, _ = sp_config(azure_server, vault)
    config["concurrency"] = 8
    result = resolve(azure_server, config, names + [f"{n};k" for n in names[:5]])
    assert all(result.value(n) == f"value-{n}" for n in names)
    assert azure_server.token_requests[client_id] == 1
    assert vault.challenges == 1
    assert sum(vault.gets.values()) == len(names)


@pytest.mark.parametrize(
    ("fmt", "password", "v0_spelling"),
    [
        ("pem", None, False),
        ("pem", "pem-pass", False),
        ("pfx", "pfx-pass", True),
        ("pfx", None, False),
    ],
)
def test_certificate_credential(
    azure_server: AzureServer, fmt: str, password: str | None, v0_spelling: bool
) -> None:
    vault = azure_server.new_vault()
    vault.put("api-key", "from-cert")
    client_id, path = azure_server.new_certificate_principal(fmt, password)
    prefix = "azure_certificate" if v0_spelling else "azure_client_certificate"
    session = {"azure_tenant_id": TENANT, "azure_client_id": client_id, f"{prefix}_path": str(path)}
    if password:
        session[f"{prefix}_password"] = password
    result = resolve(
        azure_server, {"keyvaulturl": vault.url, "azure_session": session}, ["api-key"]
    )
    assert result.value("api-key") == "from-cert"
    assert azure_server.token_requests[client_id] == 1


def test_certificate_with_wrong_password_is_a_config_error(azure_server: AzureServer) -> None:
    vault = azure_server.new_vault()
    client_id, path = azure_server.new_certificate_principal("pfx", "right")
    session = {
        "azure_tenant_id": TENANT,
        "azure_client_id": client_id,
        "azure_client_certificate_path": str(path),
        "azure_client_certificate_password": "wrong-password",
    }
    result = resolve(azure_server, {"keyvaulturl": vault.url, "azure_session": session}, ["x"])
    error = result.error("x")
    assert "azure_client_certificate_path" in error and str(path) in error
    assert "wrong-password" not in error + result.stderr


@pytest.mark.parametrize("where", ["clientid", "azure_session"])
def test_user_assigned_managed_identity(azure_server: AzureServer, where: str) -> None:
    vault = azure_server.new_vault()
    vault.put("api-key", "from-mi")
    client_id = azure_server.new_managed_identity()
    config: dict[str, Any] = {"keyvaulturl": vault.url}
    if where == "clientid":
        config["clientid"] = client_id
    else:
        config["azure_session"] = {"azure_client_id": client_id}
    env = {"IDENTITY_ENDPOINT": azure_server.identity_endpoint, "IDENTITY_HEADER": IDENTITY_HEADER}
    result = resolve(azure_server, config, ["api-key", "api-key;k"], **env)
    assert result.value("api-key") == "from-mi"
    assert azure_server.token_requests[client_id] == 1


def test_managed_identity_unknown_to_the_endpoint(azure_server: AzureServer) -> None:
    vault = azure_server.new_vault()
    env = {"IDENTITY_ENDPOINT": azure_server.identity_endpoint, "IDENTITY_HEADER": IDENTITY_HEADER}
    config = {"keyvaulturl": vault.url, "clientid": "00000000-1111-2222-3333-444444444444"}
    error = resolve(azure_server, config, ["x"], **env).error("x")
    assert "user-assigned managed identity 00000000-1111-2222-3333-444444444444" in error
    assert "Identity not found" in error and vault.url in error


@pytest.mark.parametrize("source", ["environment", "workload", "managed"])
def test_default_chain_sources(azure_server: AzureServer, source: str) -> None:
    vault = azure_server.new_vault()
    vault.put("api-key", f"via-{source}")
    if source == "environment":
        client_id, secret = azure_server.new_service_principal()
        env = {
            "AZURE_TENANT_ID": TENANT,
            "AZURE_CLIENT_ID": client_id,
            "AZURE_CLIENT_SECRET": secret,
        }
    elif source == "workload":
        client_id, token_file = azure_server.new_workload_identity()
        env = {
            "AZURE_TENANT_ID": TENANT,
            "AZURE_CLIENT_ID": client_id,
            "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        }
    else:
        client_id = azure_server.new_managed_identity()
        env = {
            "AZURE_CLIENT_ID": client_id,
            "IDENTITY_ENDPOINT": azure_server.identity_endpoint,
            "IDENTITY_HEADER": IDENTITY_HEADER,
        }
    result = resolve(azure_server, {"keyvaulturl": vault.url}, ["api-key"], **env)
    assert result.value("api-key") == f"via-{source}"
    assert azure_server.token_requests[client_id] == 1


def test_default_chain_with_nothing_available_says_what_it_tried(azure_server: AzureServer) -> None:
    vault = azure_server.new_vault()
    vault.put("a", "1")
    vault.put("b", "2")
    # An instance metadata service that knows no identity for this host.
    env = {"AZURE_POD_IDENTITY_AUTHORITY_HOST": azure_server.imds_host}
    result = resolve(azure_server, {"keyvaulturl": vault.url}, ["a", "b"], **env)
    for handle in ("a", "b"):
        error = result.error(handle)
        assert error.startswith("no Azure credential could get a token for key vault " + vault.url)
        for source in ("environment", "workload identity", "managed identity", "clientid"):
            assert source in error
    assert vault.gets == {}  # never authorised, never read


def test_default_chain_hung_identity_endpoint_is_bounded(azure_server: AzureServer) -> None:
    vault = azure_server.new_vault()
    hung = TcpProxy(azure_server.port)
    hung.mode = "blackhole"
    try:
        env = {"AZURE_POD_IDENTITY_AUTHORITY_HOST": f"https://127.0.0.1:{hung.port}"}
        result = resolve(azure_server, {"keyvaulturl": vault.url}, ["a"], timeout=4, **env)
    finally:
        hung.close()
    error = result.error("a")
    assert "getting a token for key vault" in error and "managed identity" in error, error
    assert result.seconds < 4 + 2  # answered before the Agent's kill, with margin


def test_wrong_client_secret(azure_server: AzureServer) -> None:
    vault = azure_server.new_vault()
    config, client_id, _ = sp_config(azure_server, vault)
    config["azure_session"]["azure_client_secret"] = "not-the-secret"
    result = resolve(azure_server, config, ["a", "b"])
    error = result.error("a")
    assert f"as service principal {client_id}" in error and "AADSTS7000215" in error
    assert "not-the-secret" not in result.stdout.decode() + result.stderr
    assert azure_server.token_requests[client_id] == 0
    assert result.error("b") == error


def test_distinct_actionable_errors(azure_server: AzureServer) -> None:
    vault = azure_server.new_vault()
    vault.put("denied", "x", denied="ForbiddenByRbac")
    vault.put("disabled", "x", enabled=False)
    vault.put("novalue", None)
    vault.put("firewalled", "x", denied="ForbiddenByFirewall")
    config, client_id, _ = sp_config(azure_server, vault)
    result = resolve(
        azure_server, config, ["missing", "denied", "disabled", "novalue", "firewalled", "bad/name"]
    )
    errors = {h: result.error(h) for h in result.answers}
    assert len(set(errors.values())) == len(errors)
    for handle, error in errors.items():
        if handle != "bad/name":
            assert f'secret "{handle}" in key vault {vault.url}' in error
    assert "not found (404 SecretNotFound)" in errors["missing"]
    assert "access denied" in errors["denied"] and "ForbiddenByRbac" in errors["denied"]
    assert '"Key Vault Secrets User" role' in errors["denied"]
    assert 'secret "Get" permission' in errors["denied"]
    assert f"service principal {client_id}" in errors["denied"]
    assert "is disabled (403 SecretDisabled)" in errors["disabled"]
    assert "has no value" in errors["novalue"]
    assert "network rules" in errors["firewalled"]
    assert "invalid Key Vault secret name" in errors["bad/name"]


def test_throttled_then_success(azure_server: AzureServer) -> None:
    vault = azure_server.new_vault()
    vault.put("busy", "finally", throttle=2, retry_after="1")
    config, _, _ = sp_config(azure_server, vault)
    result = resolve(azure_server, config, ["busy"])
    assert result.value("busy") == "finally"
    assert vault.gets["busy"] == 3
    assert result.seconds >= 2  # it honoured Retry-After twice


def test_throttled_beyond_the_deadline_fails_fast(azure_server: AzureServer) -> None:
    vault = azure_server.new_vault()
    vault.put("busy", "never", throttle=100, retry_after="120")
    config, _, _ = sp_config(azure_server, vault)
    result = resolve(azure_server, config, ["busy"], timeout=10)
    error = result.error("busy")
    assert "throttled" in error and "429 Throttled" in error and "120s" in error
    assert vault.gets["busy"] == 1
    assert result.seconds < 10


def test_unknown_vault_host(azure_server: AzureServer) -> None:
    # The proxy answers 502 for names that do not exist, as a real one would.
    config = {"keyvaulturl": "https://no-such-vault.vault.azure.net", "clientid": "x"}
    error = resolve(azure_server, config, ["a"]).error("a")
    assert error.startswith("cannot reach key vault https://no-such-vault.vault.azure.net")
    assert "HTTPS_PROXY" in error


def test_unreachable_and_hung_vaults(azure_server: AzureServer) -> None:
    refused = TcpProxy(azure_server.port)
    refused.mode = "refuse"
    hung = TcpProxy(azure_server.port)
    hung.mode = "blackhole"
    try:
        config = {"keyvaulturl": f"https://127.0.0.1:{refused.port}", "clientid": "x"}
        error = resolve(azure_server, config, ["a"]).error("a")
        assert error.startswith(
            f'cannot reach key vault https://127.0.0.1:{refused.port} for secret "a"'
        )
        config = {"keyvaulturl": f"https://127.0.0.1:{hung.port}", "clientid": "x"}
        result = resolve(azure_server, config, ["a"], timeout=3)
        assert "timed out" in result.error("a") and "secret_backend_timeout" in result.error("a")
        assert result.seconds < 3 + 2
    finally:
        refused.close()
        hung.close()


def test_force_string(azure_server: AzureServer) -> None:
    vault = azure_server.new_vault()
    vault.put("db", '{"user":"admin"}')
    config, _, _ = sp_config(azure_server, vault)
    config["force_string"] = True
    result = resolve(azure_server, config, ["db;user", "db"])
    assert result.value("db;user") == '{"user":"admin"}'


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"keyvaulturl": "http://kv.vault.azure.net"},
            "keyvaulturl: expected the vault's https URL",
        ),
        ({"keyvaulturl": "https://kv.vault.azure.net/secrets"}, "without a path"),
        ({}, "config.keyvaulturl: required setting is missing"),
        (
            {
                "keyvaulturl": "https://kv.vault.azure.net",
                "azure_session": {"azure_client_secret": "s"},
            },
            "missing: azure_tenant_id, azure_client_id",
        ),
        (
            {
                "keyvaulturl": "https://kv.vault.azure.net",
                "azure_session": {
                    "azure_tenant_id": TENANT,
                    "azure_client_id": "c",
                    "azure_client_certificate_path": "/nonexistent/cert.pem",
                },
            },
            "cannot read /nonexistent/cert.pem",
        ),
        (
            {"keyvaulturl": "https://kv.vault.azure.net", "azure_sesion": {}},
            'did you mean "azure_session"',
        ),
    ],
)
def test_config_errors(azure_server: AzureServer, config: dict[str, Any], expected: str) -> None:
    error = resolve(azure_server, config, ["a"]).error("a")
    assert expected in error


def test_v0_file_mode(azure_server: AzureServer, tmp_path: Path) -> None:
    vault = azure_server.new_vault()
    vault.put("agent-secrets", '{"api_key":"k1","app_key":"k2"}')
    vault.put("plain-secret", "whole text")
    client_id, path = azure_server.new_certificate_principal("pem")
    config_file = tmp_path / "datadog-secret-backend.yaml"
    config_file.write_text(
        textwrap.dedent(
            f"""\
            backends:
              kv:
                backend_type: azure.keyvault
                keyvaulturl: {vault.url}
                secret_id: agent-secrets
                azure_session:
                  azure_tenant_id: {TENANT}
                  azure_client_id: {client_id}
                  azure_certificate_path: {path}
              text:
                backend_type: azure.keyvault
                keyvaulturl: {vault.url}
                secret_id: plain-secret
                force_string: true
                azure_session:
                  azure_tenant_id: {TENANT}
                  azure_client_id: {client_id}
                  azure_certificate_path: {path}
            """
        )
    )
    handles = ["kv:api_key", "kv:app_key", "kv:nope", "kv:_", "text:_"]
    result = run_cli(
        make_request(handles), args=["--config", str(config_file)], env=azure_server.env()
    )
    assert result.returncode == 0, result.stderr
    assert result.value("kv:api_key") == "k1"
    assert result.value("kv:app_key") == "k2"
    assert result.error("kv:nope").startswith('value does not contain secret key "nope"')
    assert json.loads(result.value("kv:_")) == {"api_key": "k1", "app_key": "k2"}
    assert result.value("text:_") == "whole text"
    assert vault.gets == {"agent-secrets": 1, "plain-secret": 1}
