"""hashicorp.vault against a real OpenBao dev server, through the real executable."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from secret_backend.deadline import Deadline
from secret_backend.errors import SecretError
from tests.helpers import make_request, run_cli
from tests.moto_server import start_moto_server, stop_moto_server
from tests.openbao_server import OpenBao, openbao
from tests.proxy import HttpReverseProxy

__all__ = ["openbao"]  # the session fixture, re-exported for pytest

TYPE = "hashicorp.vault"
READER_POLICY = """
path "kv1/*" { capabilities = ["read"] }
path "kv2/data/*" { capabilities = ["read"] }
path "kv1/forbidden" { capabilities = ["deny"] }
path "kv2/data/forbidden" { capabilities = ["deny"] }
"""
# Raw JSON so numbers keep their exact text on the way in.
KV1_APP = (
    '{"user":"dd-user","password":"s3cr3t-kv1","port":3306,"ratio":1.50,'
    '"big":12345678901234567890,"flag":true,"obj":{"a":1,"b":[1,2]},"arr":["x","y","z"],'
    '"nested":{"sub":"deep"},"nothing":null}'
)
KV2_APP = {
    "user": "dd-user-v2",
    "password": "s3cr3t-kv2",
    "port": 5432,
    "flag": False,
    "obj": {"a": "b"},
    "arr": ["i0", "i1", "i2"],
    "nested": {"sub": "deep2"},
}


@dataclasses.dataclass
class Vault:
    server: OpenBao
    role_id: str
    secret_id: str
    username: str
    password: str
    jwt_key: rsa.RSAPrivateKey
    jwt_mount: str = "k8s-jwt"
    jwt_role: str = "dd-agent"

    @property
    def url(self) -> str:
        return self.server.url

    def token_config(self, **extra: Any) -> dict[str, Any]:
        return {"vault_address": self.url, "vault_token": self.server.root_token, **extra}

    def jwt(self, **claims: Any) -> str:
        return sign_jwt(
            self.jwt_key,
            {
                "sub": "system:serviceaccount:datadog:agent",
                "aud": "vault",
                "iat": int(time.time()) - 5,
                "exp": int(time.time()) + 600,
                **claims,
            },
        )

    def approle(self, name: str, policy_hcl: str) -> tuple[str, str]:
        """A fresh AppRole role with its own policy: (role_id, secret_id)."""
        self.server.put_policy(name, policy_hcl)
        self.server.write(f"auth/approle/role/{name}", {"token_policies": [name]})
        role_id = self.server.api("GET", f"auth/approle/role/{name}/role-id")["data"]["role_id"]
        secret = self.server.api("POST", f"auth/approle/role/{name}/secret-id")
        return role_id, secret["data"]["secret_id"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(key: rsa.RSAPrivateKey, claims: dict[str, Any]) -> str:
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{b64url(signature)}"


@pytest.fixture(scope="session")
def vault(openbao: OpenBao) -> Vault:
    b = openbao
    b.mount_kv("kv1", 1)
    b.mount_kv("kv2", 2)
    b.api("POST", "kv1/app", raw_body=KV1_APP)
    b.write("kv1/simple", {"key1": "simple_value1", "key2": "simple_value2"})
    b.write("kv1/forbidden", {"key": "hidden"})
    b.write("kv2/data/app", {"data": KV2_APP})
    b.write("kv2/data/team/db", {"data": {"password": "team-pass"}})
    b.write("kv2/data/forbidden", {"data": {"key": "hidden"}})
    b.put_policy("reader", READER_POLICY)

    b.write("sys/auth/approle", {"type": "approle"})
    b.write("auth/approle/role/agent", {"token_policies": ["reader"]})
    role_id = b.api("GET", "auth/approle/role/agent/role-id")["data"]["role_id"]
    secret_id = b.api("POST", "auth/approle/role/agent/secret-id")["data"]["secret_id"]

    b.write("sys/auth/userpass", {"type": "userpass"})
    b.write("auth/userpass/users/agent", {"password": "userpass-pw", "token_policies": ["reader"]})
    # OpenBao's build has no LDAP plugin; LDAP's login request is userpass's (POST
    # auth/ldap/login/<user> {"password"}), so userpass mounted at ldap/ answers it for real.
    b.write("sys/auth/ldap", {"type": "userpass"})
    b.write("auth/ldap/users/ldap-agent", {"password": "ldap-pw-1", "token_policies": ["reader"]})

    # A JWT auth method stands in for Kubernetes: same login request shape {"jwt", "role"}.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    b.write("sys/auth/k8s-jwt", {"type": "jwt"})
    b.write("auth/k8s-jwt/config", {"jwt_validation_pubkeys": [pem]})
    b.write(
        "auth/k8s-jwt/role/dd-agent",
        {
            "role_type": "jwt",
            "bound_audiences": ["vault"],
            "user_claim": "sub",
            "token_policies": ["reader"],
        },
    )

    return Vault(b, role_id, secret_id, "agent", "userpass-pw", key)


def resolve(
    handles: list[str], config: dict[str, Any], env: dict[str, str] | None = None, **kwargs: Any
) -> Any:
    env = {
        "VAULT_ADDR": "",
        "VAULT_TOKEN": "",
        "VAULT_NAMESPACE": "",
        "DD_SECRETS_IMPLICIT_AUTH": "",
        "DD_SECRETS_VAULT_ROLE": "",
        "DD_SECRETS_SA_TOKEN_PATH": "",
        "DD_SECRETS_VAULT_AUTH_PATH": "",
        **(env or {}),
    }
    return run_cli(make_request(handles, TYPE, config, **kwargs), env=env)


# ------------------------------------------------------------------ KV v1 / v2, path;key
def test_kv1_path_key_values_render_as_json_text(vault: Vault) -> None:
    expected = {
        "kv1/app;user": "dd-user",
        "kv1/app;password": "s3cr3t-kv1",
        "kv1/app;port": "3306",
        "kv1/app;ratio": "1.50",
        "kv1/app;big": "12345678901234567890",
        "kv1/app;flag": "true",
        "kv1/app;obj": '{"a":1,"b":[1,2]}',
        "kv1/app;arr": '["x","y","z"]',
        "/kv1/simple;key1": "simple_value1",
    }
    result = resolve(list(expected), vault.token_config())
    assert result.returncode == 0
    assert {h: result.value(h) for h in expected} == expected


def test_kv2_path_key_reads_data_path(vault: Vault) -> None:
    expected = {
        "kv2/app;user": "dd-user-v2",
        "kv2/app;port": "5432",
        "kv2/app;flag": "false",
        "kv2/app;obj": '{"a":"b"}',
        "kv2/app;arr": '["i0","i1","i2"]',
        "kv2/team/db;password": "team-pass",
    }
    result = resolve(list(expected), vault.token_config())
    assert {h: result.value(h) for h in expected} == expected


def test_missing_key_uses_contract_wording(vault: Vault) -> None:
    result = resolve(["kv1/app;nope", "kv2/app;nope", "kv1/app;nothing"], vault.token_config())
    for handle in ("kv1/app;nope", "kv2/app;nope"):
        error = result.error(handle)
        assert error.startswith('backend does not provide secret key "nope"'), error
        assert '"user"' in error and "dd-user" not in error  # key names, never values
    assert "null" in result.error("kv1/app;nothing")


def test_missing_secret_mount_and_permission_are_distinct(vault: Vault) -> None:
    config = {
        "vault_address": vault.url,
        "vault_session": {"vault_role_id": vault.role_id, "vault_secret_id": vault.secret_id},
    }
    handles = [
        "kv1/missing;k",
        "kv2/missing;k",
        "nomount/x;k",
        "kv1/forbidden;key",
        "kv2/forbidden;key",
        "vault://kv1/forbidden#/key",
        "kv1/app;user",
    ]
    result = resolve(handles, config)
    assert result.value("kv1/app;user") == "dd-user"
    assert result.error("kv1/missing;k").startswith("secret not found")
    assert '"kv2/data/missing"' in result.error("kv2/missing;k")
    # Only a token allowed to see a path learns that no mount is there.
    no_mount = resolve(["nomount/x;k"], vault.token_config()).error("nomount/x;k")
    assert "no secrets engine is mounted" in no_mount
    for handle, path in (
        ("kv1/forbidden;key", "kv1/forbidden"),
        ("kv2/forbidden;key", "kv2/data/forbidden"),
        ("vault://kv1/forbidden#/key", "kv1/forbidden"),
    ):
        error = result.error(handle)
        assert error.startswith("permission denied"), error
        assert f'"{path}"' in error and '"read"' in error
        assert "hidden" not in error


# ------------------------------------------------------------------ vault:// pointers
def test_vault_uri_on_kv1(vault: Vault) -> None:
    expected = {
        "vault://kv1/app#/user": "dd-user",
        "vault://kv1/app#/nested/sub": "deep",
        "vault://kv1/app#/arr/0": "x",
        "vault://kv1/app#/arr/2": "z",
        "vault://kv1/app#/obj": '{"a":1,"b":[1,2]}',
        "vault://kv1/app#/obj/b/1": "2",
        "vault://kv1/app#/ratio": "1.50",
        "vault://kv1/simple#/data/key1": "simple_value1",
        "vault://kv1/simple#/data": '{"key1":"simple_value1","key2":"simple_value2"}',
        "vault://kv1/simple#/lease_duration": "2764800",
        "vault://kv1/simple#/renewable": "false",
    }
    result = resolve([*expected, "vault://kv1/simple#/request_id"], vault.token_config())
    assert {h: result.value(h) for h in expected} == expected
    uuid.UUID(result.value("vault://kv1/simple#/request_id"))


def test_vault_uri_on_kv2(vault: Vault) -> None:
    expected = {
        "vault://kv2/data/app#/data/user": "dd-user-v2",
        "vault://kv2/data/app#/data/nested/sub": "deep2",
        "vault://kv2/data/app#/data/arr/0": "i0",
        "vault://kv2/data/app#/data/port": "5432",
        "vault://kv2/data/app#/metadata/version": "1",
        "vault://kv2/data/team/db#/data": '{"password":"team-pass"}',
        "vault://kv2/data/app#/renewable": "false",
    }
    result = resolve(list(expected), vault.token_config())
    assert {h: result.value(h) for h in expected} == expected


def test_vault_uri_errors(vault: Vault) -> None:
    handles = {
        "vault://kv1/simple#/data/nonexistent": "no value found for pointer /data/nonexistent",
        "vault://kv1/simple#/unsupported_field": "no value found for pointer /unsupported_field",
        "vault://kv1/app#/arr/10": "no value found for pointer /arr/10",
        "vault://kv1/app#/arr/01": "no value found for pointer /arr/01",
        "vault://kv1/simple#/warnings": "no value found for pointer /warnings",
        "vault://kv1/nonexistent#/data/key1": "secret not found",
        "vault://kv2/data/app/data#/value": "secret not found",
    }
    result = resolve(list(handles), vault.token_config())
    for handle, expected in handles.items():
        assert expected in result.error(handle), (handle, result.error(handle))
    # An empty metadata field (no lease on KV) is never returned as "".
    result = resolve(["vault://kv1/simple#/lease_id"], vault.token_config())
    assert "empty" in result.error("vault://kv1/simple#/lease_id")


MALFORMED = {
    "secret/test": "invalid secret format, expected 'secret_path;key' or "
    "'vault://path#/json/pointer'",
    ";key1": "has no path",
    "kv1/simple;": "has no key",
    "vault://kv1/simple": "invalid vault:// format, expected 'vault://path#/json/pointer'",
    "vault://#/key1": "the path is empty",
    "vault://kv1/simple#": "invalid JSON pointer",
    "vault://kv1/simple#key1": "invalid JSON pointer",
    "vault://kv1/simple#/data#/key1": "invalid JSON pointer",
    "vault://kv1/simple#/a~2b": "invalid JSON pointer",
}


def test_every_malformed_handle_gets_a_precise_error(vault: Vault) -> None:
    result = resolve([*MALFORMED, "kv1/simple;key1"], vault.token_config())
    assert result.value("kv1/simple;key1") == "simple_value1"
    for handle, expected in MALFORMED.items():
        assert expected in result.error(handle), (handle, result.error(handle))


def test_pointer_escapes_follow_rfc6901(vault: Vault) -> None:
    vault.server.write("kv1/escapes", {"a/b": "slash", "m~n": "tilde"})
    result = resolve(
        ["vault://kv1/escapes#/a~1b", "vault://kv1/escapes#/m~0n"], vault.token_config()
    )
    assert result.value("vault://kv1/escapes#/a~1b") == "slash"
    assert result.value("vault://kv1/escapes#/m~0n") == "tilde"


# ------------------------------------------------------------------ authentication
def test_approle_login(vault: Vault) -> None:
    config = {
        "vault_address": vault.url,
        "vault_session": {"vault_role_id": vault.role_id, "vault_secret_id": vault.secret_id},
    }
    result = resolve(["kv2/app;password", "kv1/app;password"], config)
    assert result.value("kv2/app;password") == "s3cr3t-kv2"
    assert result.value("kv1/app;password") == "s3cr3t-kv1"


def test_approle_failure_names_method_not_credentials(vault: Vault) -> None:
    wrong = "00000000-1111-2222-3333-444444444444"
    config = {
        "vault_address": vault.url,
        "vault_session": {"vault_role_id": vault.role_id, "vault_secret_id": wrong},
    }
    result = resolve(["kv1/app;user"], config)
    error = result.error("kv1/app;user")
    assert "AppRole login" in error and "auth/approle/login" in error
    assert wrong not in error and vault.role_id not in error
    assert wrong not in result.stderr


def test_approle_half_configured(vault: Vault) -> None:
    config = {"vault_address": vault.url, "vault_session": {"vault_role_id": vault.role_id}}
    error = resolve(["kv1/app;user"], config).error("kv1/app;user")
    assert "vault_secret_id is missing" in error


def test_userpass_login(vault: Vault) -> None:
    config = {
        "vault_address": vault.url,
        "vault_session": {"vault_username": vault.username, "vault_password": vault.password},
    }
    assert resolve(["kv1/app;user"], config).value("kv1/app;user") == "dd-user"
    bad = {
        "vault_address": vault.url,
        "vault_session": {"vault_username": vault.username, "vault_password": "wrong-pw-123"},
    }
    result = resolve(["kv1/app;user"], bad)
    error = result.error("kv1/app;user")
    assert "userpass login" in error and "wrong-pw-123" not in error + result.stderr


def test_ldap_login(vault: Vault) -> None:
    def config(password: str) -> dict[str, Any]:
        session = {"vault_ldap_username": "ldap-agent", "vault_ldap_password": password}
        return {"vault_address": vault.url, "vault_session": session}

    assert resolve(["kv1/app;user"], config("ldap-pw-1")).value("kv1/app;user") == "dd-user"
    result = resolve(["kv1/app;user"], config("wrong-ldap-pw"))
    error = result.error("kv1/app;user")
    assert "LDAP login" in error and "auth/ldap/login/ldap-agent" in error
    assert "wrong-ldap-pw" not in error + result.stderr


def k8s_config(vault: Vault, **session: Any) -> dict[str, Any]:
    return {
        "vault_address": vault.url,
        "vault_session": {
            "vault_auth_type": "kubernetes",
            "vault_kubernetes_mount_path": vault.jwt_mount,
            **session,
        },
    }


def test_kubernetes_login_with_inline_jwt(vault: Vault) -> None:
    config = k8s_config(
        vault, vault_kubernetes_role=vault.jwt_role, vault_kubernetes_jwt=vault.jwt()
    )
    assert resolve(["kv2/app;user"], config).value("kv2/app;user") == "dd-user-v2"


def test_kubernetes_login_with_jwt_file_trimmed(vault: Vault, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(f"  {vault.jwt()}  \n")
    config = k8s_config(
        vault, vault_kubernetes_role=vault.jwt_role, vault_kubernetes_jwt_path=str(token)
    )
    assert resolve(["kv1/app;user"], config).value("kv1/app;user") == "dd-user"


def test_kubernetes_login_from_environment(vault: Vault, tmp_path: Path) -> None:
    token = tmp_path / "sa-token"
    token.write_text(vault.jwt())
    config = {"vault_address": vault.url, "vault_session": {"vault_auth_type": "kubernetes"}}
    env = {
        "DD_SECRETS_SA_TOKEN_PATH": str(token),
        "DD_SECRETS_VAULT_ROLE": vault.jwt_role,
        "DD_SECRETS_VAULT_AUTH_PATH": f"auth/{vault.jwt_mount}/login",
    }
    assert resolve(["kv1/app;user"], config, env=env).value("kv1/app;user") == "dd-user"


def test_kubernetes_login_errors(vault: Vault, tmp_path: Path) -> None:
    no_role = k8s_config(vault, vault_kubernetes_jwt=vault.jwt())
    assert "no role" in resolve(["a;b"], no_role).error("a;b")
    missing = k8s_config(
        vault,
        vault_kubernetes_role=vault.jwt_role,
        vault_kubernetes_jwt_path=str(tmp_path / "absent"),
    )
    assert "cannot read the service account token" in resolve(["a;b"], missing).error("a;b")
    bad_jwt = vault.jwt(aud="someone-else")
    rejected = k8s_config(vault, vault_kubernetes_role=vault.jwt_role, vault_kubernetes_jwt=bad_jwt)
    result = resolve(["a;b"], rejected)
    assert "Kubernetes login" in result.error("a;b")
    assert bad_jwt not in result.error("a;b") + result.stderr


def test_implicit_auth_uses_vault_token(vault: Vault) -> None:
    env = {"VAULT_TOKEN": vault.server.root_token}
    for env_value, config_value in (("TRUE", None), ("1", None), ("", "t"), ("", True)):
        config: dict[str, Any] = {"vault_address": vault.url}
        if config_value is not None:
            config["vault_session"] = {"implicit_auth": config_value}
        result = resolve(
            ["kv1/app;user"], config, env={**env, "DD_SECRETS_IMPLICIT_AUTH": env_value}
        )
        assert result.value("kv1/app;user") == "dd-user", (env_value, config_value)


def test_vault_token_env_ignored_without_implicit_auth(vault: Vault) -> None:
    result = resolve(
        ["kv1/app;user"], {"vault_address": vault.url}, env={"VAULT_TOKEN": vault.server.root_token}
    )
    assert "no Vault authentication configured" in result.error("kv1/app;user")


def test_vault_addr_env_wins_over_config(vault: Vault) -> None:
    config = vault.token_config(vault_address="http://127.0.0.1:9")  # nothing listens there
    result = resolve(["kv1/app;user"], config, env={"VAULT_ADDR": vault.url})
    assert result.value("kv1/app;user") == "dd-user"
    result = resolve(["kv1/app;user"], config)
    assert "cannot connect to Vault at http://127.0.0.1:9" in result.error("kv1/app;user")


def test_missing_address_and_bad_auth_type(vault: Vault) -> None:
    result = resolve(["kv1/app;user"], {"vault_token": "x"})
    assert "no Vault address" in result.error("kv1/app;user")
    config = {"vault_address": vault.url, "vault_session": {"vault_auth_type": "gcp"}}
    assert "unsupported value 'gcp'" in resolve(["a;b"], config).error("a;b")


# ------------------------------------------------------------------ namespaces, sealed, TLS
def test_namespace_from_config_and_environment(vault: Vault) -> None:
    b = vault.server
    ns = f"ns{uuid.uuid4().hex[:8]}"
    b.write(f"sys/namespaces/{ns}", {})
    b.mount_kv("nskv", 2, namespace=ns)
    b.write("nskv/data/app", {"data": {"key": "in-namespace"}}, namespace=ns)
    result = resolve(["nskv/app;key"], vault.token_config(vault_namespace=ns))
    assert result.value("nskv/app;key") == "in-namespace"
    result = resolve(["nskv/app;key"], vault.token_config(), env={"VAULT_NAMESPACE": ns})
    assert result.value("nskv/app;key") == "in-namespace"
    result = resolve(["nskv/app;key"], vault.token_config())  # root namespace: no such mount
    assert "no secrets engine is mounted" in result.error("nskv/app;key")


def test_sealed_vault_is_reported_as_sealed() -> None:
    with OpenBao() as server:
        server.mount_kv("kv", 1)
        server.write("kv/app", {"key": "v"})
        server.seal()
        config = {"vault_address": server.url, "vault_token": server.root_token}
        result = resolve(["kv/app;key", "vault://kv/app#/key"], config)
        for handle in ("kv/app;key", "vault://kv/app#/key"):
            assert "is sealed" in result.error(handle), result.error(handle)


@pytest.fixture(scope="module")
def tls_vault() -> Any:
    with OpenBao(tls=True) as server:
        server.mount_kv("kv", 1)
        server.write("kv/app", {"key": "over-tls"})
        yield server


def test_tls_verification_is_on_by_default(tls_vault: OpenBao, tmp_path: Path) -> None:
    base = {"vault_address": tls_vault.url, "vault_token": tls_vault.root_token}
    result = resolve(["kv/app;key"], base)
    assert "TLS error" in result.error("kv/app;key")
    ca_dir = tmp_path / "cas"
    ca_dir.mkdir()
    (ca_dir / "vault-ca.pem").write_bytes(tls_vault.ca_cert.read_bytes())
    (ca_dir / "README").write_text("not a certificate")
    for tls in (
        {"ca_cert": str(tls_vault.ca_cert)},
        {"ca_path": str(ca_dir)},
        {"insecure": True},
        {"ca_cert": str(tls_vault.ca_cert), "tls_server": "localhost"},
    ):
        result = resolve(["kv/app;key"], {**base, "vault_tls_config": tls})
        assert result.value("kv/app;key") == "over-tls", tls
    wrong_name = {
        **base,
        "vault_tls_config": {"ca_cert": str(tls_vault.ca_cert), "tls_server": "wrong.example"},
    }
    assert "TLS error" in resolve(["kv/app;key"], wrong_name).error("kv/app;key")


# ------------------------------------------------------------------ requests, modes
def test_fifty_handles_ten_paths_cost_one_login_one_lookup_ten_reads(vault: Vault) -> None:
    b = vault.server
    mount = f"count{uuid.uuid4().hex[:8]}"
    b.mount_kv(mount, 2)
    for i in range(10):
        b.write(f"{mount}/data/p{i}", {"data": {f"k{j}": f"v{i}-{j}" for j in range(5)}})
    role_id, secret_id = vault.approle(
        mount, f'path "{mount}/data/*" {{ capabilities = ["read"] }}'
    )
    handles = [f"{mount}/p{i};k{j}" for i in range(10) for j in range(5)]
    config = {
        "vault_address": vault.url,
        "vault_session": {"vault_role_id": role_id, "vault_secret_id": secret_id},
    }
    before = len(b.audit_entries())  # this worker's server: only our run writes from here on
    result = resolve(handles, config)
    assert all(
        result.value(f"{mount}/p{i};k{j}") == f"v{i}-{j}" for i in range(10) for j in range(5)
    )

    run = b.audit_entries()[before:]
    entries = [e for e in run if e.get("type") == "request"]
    ours = [e for e in entries if mount in e["request"].get("path", "")]
    accessors = {e["auth"]["accessor"] for e in ours}
    assert len(accessors) == 1, "every request used the token of one login"
    (accessor,) = accessors
    logins = [
        e
        for e in b.audit_entries()
        if e.get("type") == "response"
        and e["request"].get("path") == "auth/approle/login"
        and (e.get("auth") or {}).get("accessor") == accessor
    ]
    assert len(logins) == 1
    lookups = [e for e in ours if e["request"]["path"].startswith("sys/")]
    reads = [e for e in ours if e["request"]["path"].startswith(f"{mount}/data/")]
    assert len(lookups) <= 1, [e["request"]["path"] for e in lookups]
    assert sorted(e["request"]["path"] for e in reads) == sorted(
        f"{mount}/data/p{i}" for i in range(10)
    )
    assert len(ours) == len(lookups) + len(reads)
    assert len(entries) == len(ours) + 1, "nothing else than the login, the lookup and the reads"


def test_v0_file_mode_secret_path_and_secrets(vault: Vault, tmp_path: Path) -> None:
    config_file = tmp_path / "datadog-secret-backend.yaml"
    config_file.write_text(
        json.dumps(
            {
                "backends": {
                    "vault": {
                        "backend_type": "hashicorp.vault",
                        "vault_address": vault.url,
                        "vault_session": {
                            "vault_role_id": vault.role_id,
                            "vault_secret_id": vault.secret_id,
                        },
                        "secret_path": "kv2/app",
                        "secrets": ["user", "password"],
                    }
                }
            }
        )
    )
    request = make_request(["vault:user", "vault:password", "vault:port"])
    result = run_cli(request, args=["--config", str(config_file)], env={"VAULT_ADDR": ""})
    assert result.value("vault:user") == "dd-user-v2"
    assert result.value("vault:password") == "s3cr3t-kv2"
    assert "not listed in this backend's secrets" in result.error("vault:port")


def test_sequential_concurrency_one_gives_same_answers(vault: Vault) -> None:
    handles = ["kv1/app;user", "kv2/app;user", "vault://kv2/data/app#/data/port"]
    result = resolve(handles, vault.token_config(concurrency=1))
    assert [result.value(h) for h in handles] == ["dd-user", "dd-user-v2", "5432"]


def test_unreachable_vault_is_bounded_by_the_deadline() -> None:
    from tests.proxy import TcpProxy

    with TcpProxy(9) as proxy:
        proxy.mode = "blackhole"
        config = {"vault_address": proxy.url, "vault_token": "t"}
        result = resolve(["kv1/app;user"], config, timeout=3)
        assert result.seconds < 10
        assert "timed out" in result.error("kv1/app;user")


def test_config_repr_hides_credentials() -> None:
    from backends.hashicorp_vault import VaultBackend
    from secret_backend import config as config_mod

    cfg = config_mod.build(
        VaultBackend.Config,
        {
            "vault_token": "tok-123",
            "vault_session": {
                "vault_secret_id": "sid-123",
                "vault_password": "pw-123",
                "vault_ldap_password": "lpw-123",
                "vault_kubernetes_jwt": "jwt-123",
            },
        },
    )
    text = repr(cfg)
    for secret in ("tok-123", "sid-123", "pw-123", "lpw-123", "jwt-123"):
        assert secret not in text


def test_in_process_fetch_dedupes_mount_lookups_under_concurrency(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many threads fetching paths of one mount at once still cause one mount lookup."""
    for name in ("VAULT_ADDR", "VAULT_NAMESPACE", "DD_SECRETS_IMPLICIT_AUTH"):
        monkeypatch.delenv(name, raising=False)
    from concurrent.futures import ThreadPoolExecutor

    from backends.hashicorp_vault import VaultBackend
    from secret_backend import config as config_mod

    cfg = config_mod.build(VaultBackend.Config, vault.token_config())
    backend = VaultBackend(cfg, Deadline.after(20))
    refs = [backend.parse("kv2/app;user"), backend.parse("kv2/team/db;password")] * 4
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda r: backend.fetch([r.fetch_key], Deadline.after(20)), refs))
    assert all(not isinstance(v, SecretError) for r in results for v in r.values())
    assert backend.calls == 1 + len(refs)  # one mount lookup, then one read per fetch call


def _aws_login(env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """Run an AWS IAM login against OpenBao and return what it received (its raw audit log)
    and the handle's error. OpenBao ships no AWS auth plugin: the login itself fails."""
    with OpenBao(raw_audit=True) as server:
        config = {
            "vault_address": server.url,
            "vault_session": {
                "vault_auth_type": "aws",
                "vault_aws_role": "dd-role",
                "aws_region": "eu-west-3",
                "vault_aws_iam_server_id": "vault.example.com",
            },
        }
        result = resolve(["kv/app;key"], config, env=env)
        error = result.error("kv/app;key")
        for secret in filter(None, env.values()):
            assert secret not in error + result.stderr
        (login,) = [
            e["request"]
            for e in server.audit_entries()
            if e["type"] == "request" and e["request"]["path"] == "auth/aws/login"
        ]
    return login["data"], error


def test_aws_iam_login_sends_a_signed_regional_get_caller_identity() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_SESSION_TOKEN": "session-token-example",
    }
    data, error = _aws_login(env)
    assert "AWS IAM login" in error and "auth/aws/login" in error
    assert data["role"] == "dd-role"
    assert data["iam_http_request_method"] == "POST"
    assert base64.b64decode(data["iam_request_url"]) == b"https://sts.eu-west-3.amazonaws.com/"
    body = base64.b64decode(data["iam_request_body"]).decode()
    assert body == "Action=GetCallerIdentity&Version=2011-06-15"
    headers = json.loads(base64.b64decode(data["iam_request_headers"]))
    assert headers["Host"] == ["sts.eu-west-3.amazonaws.com"]
    assert headers["X-Vault-AWS-IAM-Server-ID"] == ["vault.example.com"]
    assert headers["X-Amz-Security-Token"] == ["session-token-example"]
    (authorization,) = headers["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/")
    assert "/eu-west-3/sts/aws4_request" in authorization
    assert "x-vault-aws-iam-server-id" in authorization  # the server id header is signed


def test_aws_iam_login_request_passes_sts_signature_checks() -> None:
    """What Vault's AWS auth does with the login: replay the signed GetCallerIdentity to STS.
    Here STS is moto with signature checks on, holding the IAM user whose keys we sign with."""
    proc, url = start_moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": "2"})
    try:
        iam = boto3.client(
            "iam",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="dd-agent")
        key = iam.create_access_key(UserName="dd-agent")["AccessKey"]
        env = {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_SESSION_TOKEN": "",
        }
        data, _ = _aws_login(env)
        body = base64.b64decode(data["iam_request_body"])
        headers = {
            k: v[0] for k, v in json.loads(base64.b64decode(data["iam_request_headers"])).items()
        }

        def replay(headers: dict[str, str]) -> tuple[int, str]:
            request = urllib.request.Request(  # noqa: S310 (moto on 127.0.0.1)
                url + "/", data=body, headers=headers, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                    return answer.status, answer.read().decode()
            except urllib.error.HTTPError as error:
                return error.code, error.read().decode()

        status, text = replay(headers)
        assert status == 200, text
        assert "<Arn>arn:aws:iam::123456789012:user/dd-agent</Arn>" in text
        # The server id header is under the signature: another Vault cannot replay the login.
        status, text = replay({**headers, "X-Vault-AWS-IAM-Server-ID": "other-vault"})
        assert status == 403 and "SignatureDoesNotMatch" in text
    finally:
        stop_moto_server(proc)


def _rate_limited(proxy: HttpReverseProxy, times: int, retry_after: str) -> None:
    """Answer reads of KV v2 secret data with 429 + Retry-After, as a Vault rate-limit quota
    does."""
    body = b'{"errors":["request path \\"kv2/data\\": rate limit quota exceeded"]}'
    headers = {"Retry-After": retry_after, "Content-Type": "application/json"}
    proxy.inject(lambda key: "/kv2/data/" in key, 429, body, headers, times)


def test_rate_limited_reads_are_retried_within_the_deadline(vault: Vault) -> None:
    with HttpReverseProxy(vault.url) as proxy:
        _rate_limited(proxy, times=2, retry_after="0.2")
        config = vault.token_config(vault_address=proxy.url)
        result = resolve(["kv2/app;user"], config)
        assert result.value("kv2/app;user") == "dd-user-v2"
        assert proxy.injected == 2


def test_endless_rate_limiting_is_named_in_the_error(vault: Vault) -> None:
    with HttpReverseProxy(vault.url) as proxy:
        _rate_limited(proxy, times=None, retry_after="0.1")
        config = vault.token_config(vault_address=proxy.url)
        result = resolve(["kv2/app;user"], config)
        error = result.error("kv2/app;user")
        assert "rate limit" in error and "429" in error
        assert proxy.injected == 3  # bounded retries, then a precise error
