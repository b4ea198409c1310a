"""Leak canaries: unique strings as secret values and credentials, every backend, --debug on.

Each canary starts with CANARY_MARK. A run may show a secret value only as the value of its
own handle; a credential never. No canary may appear on stderr (debug log included), in any
error string, or in another handle's value; their base64 forms are checked too (HTTP basic
auth, JWT bodies). Success and error paths (wrong key, missing secret, wrong credential,
config error) run in the same request where possible, so an error sits next to values.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import test_akeyless, test_gcp
from tests.azure_server import TENANT, AzureServer, azure_server, clean_azure_env
from tests.helpers import Result, make_request, run_cli
from tests.k8s_server import KubeApi, k8s_api_fixture
from tests.moto_server import CountingProxy, moto_url
from tests.openbao_server import ApiError, OpenBao, openbao
from tests.test_akeyless import FakeAkeyless, akeyless_server
from tests.test_gcp import FakeGoogle, google_server
from tests.test_pass import Store, _pass, store

__all__ = [  # fixtures, used by name
    "akeyless_server",
    "azure_server",
    "clean_azure_env",
    "google_server",
    "k8s_api_fixture",
    "moto_url",
    "openbao",
    "store",
]

CANARY_MARK = "CNRY"


class Canaries:
    def __init__(self) -> None:
        self.all: list[str] = []

    def __call__(self, kind: str) -> str:
        canary = f"{CANARY_MARK}-{kind}-{uuid.uuid4().hex[:12]}"
        self.all.append(canary)
        return canary

    def forms(self) -> list[str]:
        found = [CANARY_MARK, CANARY_MARK.lower()]
        for canary in self.all:
            found.append(base64.b64encode(canary.encode()).decode().rstrip("="))
            found.append(base64.urlsafe_b64encode(canary.encode()).decode().rstrip("="))
        return found

    def check(self, result: Result, values: dict[str, str]) -> None:
        """`values`: the handles that must succeed, with their exact values. Every other
        handle must be an error. Nothing may carry a canary except those values."""
        assert result.returncode == 0, result.stderr
        answers = result.answers
        assert "DEBUG" in result.stderr  # --debug was on: the log is what we check
        for form in self.forms():
            assert form not in result.stderr, (form, result.stderr)
        for handle, entry in answers.items():
            if handle in values:
                assert entry == {"value": values[handle], "error": None}, (handle, entry)
                continue
            error = result.error(handle)
            for form in self.forms():
                assert form not in error, (handle, error)


@pytest.fixture
def canary() -> Canaries:
    return Canaries()


def run(kind: str, handles: list[str], config: Any, env: dict[str, str] | None = None) -> Result:
    request = make_request(handles, kind, config, timeout=20)
    return run_cli(request, args=["--debug"], env=env)


# -- local backends ------------------------------------------------------------------


def test_file_json_and_yaml(canary: Canaries, tmp_path: Path) -> None:
    data = {"api": canary("value"), "other": canary("value"), "n": {"deep": canary("value")}}
    json_file = tmp_path / "s.json"
    json_file.write_text(json.dumps(data))
    yaml_file = tmp_path / "s.yaml"
    yaml_file.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in data.items()))
    for kind, path in (("file.json", json_file), ("file.yaml", yaml_file)):
        result = run(kind, ["api", "missing", "n;deep", ""], {"file_path": str(path)})
        canary.check(result, {"api": data["api"]})
        tiny = run(kind, ["api"], {"file_path": str(path), "max_file_read_size": 8})
        canary.check(tiny, {})
    broken = tmp_path / "broken.json"
    broken.write_text('{"api": "' + canary("value") + '", oops}')
    canary.check(run("file.json", ["api"], {"file_path": str(broken)}), {})
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text(f"api: {canary('value')}\n  - bad: [\n")
    canary.check(run("file.yaml", ["api"], {"file_path": str(broken_yaml)}), {})


def test_file_text(canary: Canaries, tmp_path: Path) -> None:
    (tmp_path / "api").write_text(canary("value"))
    (tmp_path / "big").write_text(canary("value") * 10)
    (tmp_path / "empty").write_text("")
    (tmp_path.parent / f"outside-{uuid.uuid4().hex[:6]}").write_text(canary("value"))
    handles = [
        "api",
        "big",
        "empty",
        "missing",
        "../" + next(tmp_path.parent.glob("outside-*")).name,
    ]
    for kind in ("file.text", "k8s.file"):
        config = {"secrets_path": str(tmp_path), "max_file_read_size": 100}
        canary.check(run(kind, handles, config), {"api": (tmp_path / "api").read_text()})


def test_env(canary: Canaries) -> None:
    env = {"CANARY_OK": canary("value"), "CANARY_DENIED": canary("value"), "CANARY_EMPTY": ""}
    handles = ["CANARY_OK", "CANARY_DENIED", "CANARY_EMPTY", "CANARY_UNSET", "A=B"]
    config = {"allowed_keys": ["CANARY_OK", "CANARY_EMPTY", "CANARY_UNSET", "A=B"]}
    canary.check(run("env", handles, config, env), {"CANARY_OK": env["CANARY_OK"]})


def test_pass(canary: Canaries, store: Store) -> None:
    entry = f"canary/{uuid.uuid4().hex[:8]}"
    value = canary("value")
    _pass(store.gnupghome, store.path, "insert", "--multiline", entry, stdin=value.encode())
    config = {"store_path": str(store.path)}
    canary.check(run("pass", [entry, "canary/missing"], config, store.env), {entry: value})
    # An entry encrypted for someone else's key: decryption fails, with a canary around.
    foreign = {"store_path": str(store.foreign)}
    canary.check(run("pass", ["theirs"], foreign, store.env), {})


# -- AWS ---------------------------------------------------------------------------------


@pytest.fixture
def aws(moto_url: str, tmp_path: Path) -> Iterator[tuple[Any, Any, CountingProxy, dict[str, str]]]:
    import boto3

    kw = {
        "region_name": "us-east-1",
        "endpoint_url": moto_url,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    with CountingProxy(moto_url) as proxy:
        env = {
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_ENDPOINT_URL": proxy.url,
            "AWS_ACCESS_KEY_ID": "",
            "AWS_SECRET_ACCESS_KEY": "",
        }
        yield boto3.client("secretsmanager", **kw), boto3.client("ssm", **kw), proxy, env


def aws_session(canary: Canaries) -> dict[str, str]:
    return {
        "aws_access_key_id": "AKIA" + uuid.uuid4().hex[:16].upper(),
        "aws_secret_access_key": canary("awssecretkey"),
    }


def test_aws_secrets(canary: Canaries, aws: Any) -> None:
    sm, _, proxy, env = aws
    prefix = f"canary/{uuid.uuid4().hex[:8]}"
    body = {"password": canary("value"), "user": canary("value")}
    sm.create_secret(Name=f"{prefix}/db", SecretString=json.dumps(body))
    sm.create_secret(Name=f"{prefix}/bin", SecretBinary=b"\xff" + canary("value").encode())
    handles = [f"{prefix}/db;password", f"{prefix}/db;nope", f"{prefix}/gone;x", f"{prefix}/bin;x"]
    for config in ({}, {"batch": False}):
        result = run("aws.secrets", handles, {"aws_session": aws_session(canary), **config}, env)
        canary.check(result, {handles[0]: body["password"]})
    for code in ("ExpiredTokenException", "AccessDeniedException", "InternalServiceError"):
        proxy.fail("BatchGetSecretValue", code, times=1, message=f"injected {code}")
        proxy.fail("GetSecretValue", code, times=None, message=f"injected {code}")
        result = run("aws.secrets", handles[:3], {"aws_session": aws_session(canary)}, env)
        canary.check(result, {})
        proxy._faults.clear()
    role = {**aws_session(canary), "aws_role_arn": "arn:aws:iam::123456789012:role/x"}
    role["aws_external_id"] = canary("externalid")
    proxy.fail("AssumeRole", "AccessDenied", status=403, times=1)
    canary.check(run("aws.secrets", handles[:1], {"aws_session": role}, env), {})


def test_aws_ssm(canary: Canaries, aws: Any) -> None:
    _, ssm, proxy, env = aws
    name = f"/canary/{uuid.uuid4().hex[:8]}"
    value = canary("value")
    ssm.put_parameter(Name=f"{name}/secure", Value=value, Type="SecureString")
    ssm.put_parameter(Name=f"{name}/plain", Value=canary("value"), Type="String")
    handles = [f"{name}/secure", f"{name}/missing", "not a name"]
    result = run("aws.ssm", handles, {"aws_session": aws_session(canary)}, env)
    canary.check(result, {handles[0]: value})
    proxy.fail("GetParameters", "UnrecognizedClientException", times=None)
    canary.check(run("aws.ssm", handles, {"aws_session": aws_session(canary)}, env), {})


# -- Vault -------------------------------------------------------------------------------

VAULT_ENV = {"VAULT_ADDR": "", "VAULT_TOKEN": "", "DD_SECRETS_IMPLICIT_AUTH": ""}


def enable(server: OpenBao, path: str, kind: str) -> None:
    with contextlib.suppress(ApiError):  # already enabled by another test of this worker
        server.write(f"sys/auth/{path}", {"type": kind})


def test_vault(canary: Canaries, openbao: OpenBao) -> None:
    mount = f"canary{uuid.uuid4().hex[:8]}"
    openbao.mount_kv(mount, 2)
    data = {"password": canary("value"), "user": canary("value")}
    openbao.write(f"{mount}/data/db", {"data": data})
    policy = f"p-{mount}"
    openbao.put_policy(policy, f'path "{mount}/data/*" {{ capabilities = ["read"] }}')
    # A token that is itself a canary, with the right policy.
    token = canary("vaulttoken")
    openbao.write("auth/token/create", {"id": token, "policies": [policy]})
    handles = [
        f"{mount}/db;password",
        f"{mount}/db;nope",
        f"{mount}/gone;x",
        f"vault://{mount}/data/db#/data",
    ]
    good = {"vault_address": openbao.url, "vault_token": token}
    canary.check(
        run("hashicorp.vault", handles, good, VAULT_ENV),
        {handles[0]: data["password"], handles[3]: json.dumps(data, separators=(",", ":"))},
    )
    bad_token = {"vault_address": openbao.url, "vault_token": canary("vaulttoken")}
    canary.check(run("hashicorp.vault", handles, bad_token, VAULT_ENV), {})

    enable(openbao, "approle", "approle")
    openbao.write(f"auth/approle/role/{mount}", {"token_policies": [policy]})
    role_id = openbao.api("GET", f"auth/approle/role/{mount}/role-id")["data"]["role_id"]
    secret_id = canary("secretid")
    openbao.write(f"auth/approle/role/{mount}/custom-secret-id", {"secret_id": secret_id})
    for sid, values in ((secret_id, {handles[0]: data["password"]}), (canary("secretid"), {})):
        session = {"vault_role_id": role_id, "vault_secret_id": sid}
        config = {"vault_address": openbao.url, "vault_session": session}
        canary.check(run("hashicorp.vault", handles[:3], config, VAULT_ENV), values)

    enable(openbao, "userpass", "userpass")
    password = canary("password")
    openbao.write(
        f"auth/userpass/users/{mount}", {"password": password, "token_policies": [policy]}
    )
    for pw, values in ((password, {handles[0]: data["password"]}), (canary("password"), {})):
        session = {"vault_username": mount, "vault_password": pw}
        config = {"vault_address": openbao.url, "vault_session": session}
        canary.check(run("hashicorp.vault", handles[:3], config, VAULT_ENV), values)


# -- Azure, GCP, Kubernetes, Akeyless ----------------------------------------------------


def test_azure(canary: Canaries, azure_server: AzureServer, clean_azure_env: None) -> None:
    vault = azure_server.new_vault()
    plain, inner = canary("value"), canary("value")
    vault.put("plain", plain)
    vault.put("db", json.dumps({"user": inner, "password": canary("value")}))
    vault.put("off", canary("value"), enabled=False)
    vault.put("denied", canary("value"), denied="ForbiddenByRbac")
    client_id = str(uuid.uuid4())
    secret = canary("clientsecret")
    azure_server.client_secrets[client_id] = secret
    session = {"azure_tenant_id": TENANT, "azure_client_id": client_id}
    handles = ["plain", "db;user", "db;nope", "off", "denied", "missing"]
    config = {"keyvaulturl": vault.url, "azure_session": {**session, "azure_client_secret": secret}}
    result = run("azure.keyvault", handles, config, azure_server.env())
    canary.check(result, {"plain": plain, "db;user": inner})
    wrong = {**session, "azure_client_secret": canary("clientsecret")}
    bad = run(
        "azure.keyvault",
        handles,
        {"keyvaulturl": vault.url, "azure_session": wrong},
        azure_server.env(),
    )
    canary.check(bad, {})


def test_gcp_secretmanager(canary: Canaries, google_server: FakeGoogle, tmp_path: Path) -> None:
    name = f"canary-{uuid.uuid4().hex[:8]}"
    value, inner = canary("value"), canary("value")
    test_gcp.SECRETS[name] = {1: value.encode()}
    test_gcp.SECRETS[f"{name}-db"] = {1: json.dumps({"k": inner, "o": canary("value")}).encode()}
    # The private key material itself: its PEM body lines are the canaries.
    info = json.loads(google_server.key_file.read_text())
    key_lines = [line for line in info["private_key"].splitlines() if "PRIVATE KEY" not in line]
    canary.all.extend(key_lines)
    handles = [name, f"{name}-db;k", f"{name}-db;nope", "nosuch", "forbidden"]
    config = {
        "gcp_session": {"project_id": test_gcp.PROJECT},
        "endpoint": google_server.server.url + "/",
    }
    env = {
        "GOOGLE_APPLICATION_CREDENTIALS": str(google_server.key_file),
        "REQUESTS_CA_BUNDLE": google_server.server.ca_path,
    }
    canary.check(
        run("gcp.secretmanager", handles, config, env), {name: value, f"{name}-db;k": inner}
    )
    # A key unknown to the token endpoint: the login fails, and says so without the key.
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = google_server.key_info(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    canary.all.extend(
        line for line in other["private_key"].splitlines() if "PRIVATE KEY" not in line
    )
    other["private_key_id"] = canary("keyid")
    key_file = tmp_path / "other.json"
    key_file.write_text(json.dumps(other))
    canary.check(
        run(
            "gcp.secretmanager",
            handles,
            config,
            {**env, "GOOGLE_APPLICATION_CREDENTIALS": str(key_file)},
        ),
        {},
    )


def test_k8s(canary: Canaries, k8s_api: KubeApi, tmp_path: Path) -> None:
    user, token_path = k8s_api.new_user(tmp_path)
    canary.all.append(token_path.read_text().strip())  # the service-account token
    ns = f"canary-{uuid.uuid4().hex[:8]}"
    k8s_api.grant(user, "secrets", ns)
    value = canary("value")
    k8s_api.add_secret(ns, "db", {"password": value, "user": canary("value")})
    k8s_api.add_secret(f"{ns}-x", "hidden", {"k": canary("value")})
    handles = [
        f"{ns}/db;password",
        f"{ns}/db;nope",
        f"{ns}/gone;x",
        f"{ns}-x/hidden;k",
        "bad handle",
    ]
    config = {"api_server": k8s_api.url, "token_path": str(token_path), "ca_path": k8s_api.ca_path}
    canary.check(run("k8s.secrets", handles, config), {handles[0]: value})
    wrong = tmp_path / "wrong-token"
    wrong.write_text(canary("k8stoken"))
    canary.check(run("k8s.secrets", handles, {**config, "token_path": str(wrong)}), {})
    binary = tmp_path / "binary-token"
    binary.write_bytes(canary("k8stoken").encode() + b"\x00\xff")
    canary.check(run("k8s.secrets", handles, {**config, "token_path": str(binary)}), {})


def test_akeyless_backend(canary: Canaries, akeyless_server: FakeAkeyless) -> None:
    name = f"/canary/{uuid.uuid4().hex[:8]}"
    value = canary("value")
    test_akeyless.ITEMS[name] = value
    canary.all.append(test_akeyless.ACCESS_KEY)  # the real access key of the test server
    session = {
        "akeyless_access_id": test_akeyless.ACCESS_ID,
        "akeyless_access_key": test_akeyless.ACCESS_KEY,
    }
    config = {"akeyless_url": akeyless_server.server.url, "akeyless_session": session}
    env = {"REQUESTS_CA_BUNDLE": akeyless_server.server.ca_path}
    canary.check(run("akeyless", [name], config, env), {name: value})
    # Items that fail next to one that does not: each answered on its own.
    mixed = run("akeyless", [name, "/forbidden/x", "/missing"], config, env)
    canary.check(mixed, {name: value})
    wrong = {**session, "akeyless_access_key": canary("accesskey")}
    canary.check(run("akeyless", [name], {**config, "akeyless_session": wrong}, env), {})


def test_the_checker_catches_leaks(canary: Canaries, tmp_path: Path) -> None:
    """Control: the checker itself catches a leak (the value as its own handle is allowed,
    and would be caught anywhere else)."""
    path = tmp_path / "s.json"
    value = canary("value")
    path.write_text(json.dumps({"a": value}))
    result = run("file.json", ["a"], {"file_path": str(path)})
    canary.check(result, {"a": value})
    with pytest.raises(AssertionError):
        canary.check(result, {})  # the value where only errors are allowed: caught
    leaky = Result(0, result.stdout, result.stderr + value, result.seconds)
    with pytest.raises(AssertionError):
        canary.check(leaky, {"a": value})  # a canary on stderr: caught
