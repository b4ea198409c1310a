"""k8s.secrets through the real executable, against an HTTPS server speaking the Kubernetes API."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.helpers import make_request, run_cli
from tests.k8s_server import (  # noqa: F401  (fixtures)
    KubeApi,
    k8s_api_fixture,
    k8s_api_v6_fixture,
)


def unique_ns(prefix: str = "ns") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def config(api: KubeApi, token_path: Path, **extra: Any) -> dict[str, Any]:
    return {"api_server": api.url, "token_path": str(token_path), "ca_path": api.ca_path, **extra}


def secret_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/secrets/{name}"


def test_keys_of_one_secret_cost_one_get(k8s_api: KubeApi, tmp_path: Path) -> None:
    user, token = k8s_api.new_user(tmp_path)
    ns = unique_ns()
    k8s_api.grant(user, "secrets", ns)
    k8s_api.add_secret(ns, "db", {"user": "admin", "password": "p@ss w0rd", "cert": "a\nb\n"})
    k8s_api.add_secret(ns, "api.keys", {"dd": "0123456789abcdef"})
    handles = [f"{ns}/db;user", f"{ns}/db;password", f"{ns}/db;cert", f"{ns}/api.keys;dd"]
    result = run_cli(make_request(handles, "k8s.secrets", config(k8s_api, token)))
    assert result.returncode == 0, result.stderr
    assert result.value(f"{ns}/db;user") == "admin"
    assert result.value(f"{ns}/db;password") == "p@ss w0rd"
    assert result.value(f"{ns}/db;cert") == "a\nb\n"  # verbatim, newlines kept
    assert result.value(f"{ns}/api.keys;dd") == "0123456789abcdef"
    assert k8s_api.count(secret_path(ns, "db")) == 1
    assert k8s_api.count(secret_path(ns, "api.keys")) == 1


def test_missing_key_lists_the_keys_present(k8s_api: KubeApi, tmp_path: Path) -> None:
    user, token = k8s_api.new_user(tmp_path)
    ns = unique_ns()
    k8s_api.grant(user, "secrets", ns)
    k8s_api.add_secret(ns, "db", {"user": "admin", "password": "s3cret-value"})
    k8s_api.add_secret(ns, "empty", {})
    handles = [f"{ns}/db;pasword", f"{ns}/empty;x"]
    result = run_cli(make_request(handles, "k8s.secrets", config(k8s_api, token)))
    error = result.error(f"{ns}/db;pasword")
    assert f'Secret {ns}/db has no key "pasword" (keys present: password, user)' in error
    assert "s3cret-value" not in result.stdout.decode() + result.stderr
    assert "(keys present: none)" in result.error(f"{ns}/empty;x")


def test_missing_secret_and_missing_namespace(k8s_api: KubeApi, tmp_path: Path) -> None:
    user, token = k8s_api.new_user(tmp_path)
    ns, gone = unique_ns(), unique_ns("gone")
    k8s_api.grant(user, "secrets")  # every namespace, as a ClusterRoleBinding would
    k8s_api.grant(user, "namespaces")
    k8s_api.add_secret(ns, "db", {"user": "admin"})
    handles = [f"{ns}/nope;user", f"{gone}/db;user", f"{gone}/other;user"]
    result = run_cli(make_request(handles, "k8s.secrets", config(k8s_api, token)))
    assert result.error(f"{ns}/nope;user") == (
        f'Secret "nope" not found in namespace "{ns}"; check the handle or create the Secret'
    )
    assert f'namespace "{gone}" does not exist' in result.error(f"{gone}/db;user")
    assert f'namespace "{gone}" does not exist' in result.error(f"{gone}/other;user")
    # The namespace is looked up once, however many of its Secrets are missing.
    assert k8s_api.count(f"/api/v1/namespaces/{gone}") == 1


def test_missing_secret_when_namespaces_cannot_be_read(k8s_api: KubeApi, tmp_path: Path) -> None:
    user, token = k8s_api.new_user(tmp_path)
    ns = unique_ns()
    k8s_api.grant(user, "secrets", ns)
    result = run_cli(make_request([f"{ns}/nope;k"], "k8s.secrets", config(k8s_api, token)))
    error = result.error(f"{ns}/nope;k")
    assert f'Secret "nope" not found in namespace "{ns}"' in error
    assert "or the namespace does not exist" in error


def test_rbac_forbidden_names_verb_resource_namespace_and_account(
    k8s_api: KubeApi, tmp_path: Path
) -> None:
    user, token = k8s_api.new_user(tmp_path, "dd-agent-sa")
    ns = unique_ns("database")
    k8s_api.add_secret(ns, "database-secret", {"password": "x"})
    handle = f"{ns}/database-secret;password"
    result = run_cli(make_request([handle], "k8s.secrets", config(k8s_api, token)))
    error = result.error(handle)
    assert "forbidden (403)" in error
    assert 'grant a Role with verb "get" on resource "secrets"' in error
    assert f'in namespace "{ns}"' in error
    assert f"{user} may not get secrets" in error
    assert f"kubectl auth can-i get secret/database-secret -n {ns} --as {user}" in error


def test_invalid_token_is_401(k8s_api: KubeApi, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("expired-token-value\n")
    ns = unique_ns()
    result = run_cli(
        make_request([f"{ns}/db;k"], "k8s.secrets", config(k8s_api, token)), args=["--debug"]
    )
    error = result.error(f"{ns}/db;k")
    assert "401 Unauthorized" in error and "invalid or expired" in error
    assert "expired-token-value" not in result.stdout.decode() + result.stderr


def test_token_never_printed_and_trimmed(k8s_api: KubeApi, tmp_path: Path) -> None:
    user, token_file = k8s_api.new_user(tmp_path)
    token = token_file.read_text().strip()
    ns = unique_ns()
    k8s_api.grant(user, "secrets", ns)
    k8s_api.add_secret(ns, "s", {"k": "value-1"})
    result = run_cli(
        make_request([f"{ns}/s;k", f"{ns}/s;missing"], "k8s.secrets", config(k8s_api, token_file)),
        args=["--debug"],
    )
    assert result.value(f"{ns}/s;k") == "value-1"  # the file has whitespace around the token
    assert token not in result.stdout.decode() + result.stderr


def test_binary_and_empty_values(k8s_api: KubeApi, tmp_path: Path) -> None:
    user, token = k8s_api.new_user(tmp_path)
    ns = unique_ns()
    k8s_api.grant(user, "secrets", ns)
    k8s_api.add_secret(ns, "s", {"bin": b"\xff\xfe\x00", "empty": "", "utf8": "héllo ✓"})
    handles = [f"{ns}/s;bin", f"{ns}/s;empty", f"{ns}/s;utf8"]
    result = run_cli(make_request(handles, "k8s.secrets", config(k8s_api, token)))
    assert "binary data, not UTF-8 text" in result.error(f"{ns}/s;bin")
    assert "the secret is empty" in result.error(f"{ns}/s;empty")
    assert result.value(f"{ns}/s;utf8") == "héllo ✓"


@pytest.mark.parametrize(
    ("handle", "expected"),
    [
        ("ns/name", "expected 'namespace/name;key'"),
        ("name;key", "expected 'namespace/name;key'"),
        ("Bad_NS/name;key", 'namespace "Bad_NS" is not a valid Kubernetes namespace'),
        ("ns/../other;key", '"../other" is not a valid Secret name'),
        ("ns/name/extra;key", '"name/extra" is not a valid Secret name'),
        ("ns/name;", '"" is not a valid Secret key'),
        ("ns/name;a/b", '"a/b" is not a valid Secret key'),
    ],
)
def test_malformed_handles(k8s_api: KubeApi, tmp_path: Path, handle: str, expected: str) -> None:
    _, token = k8s_api.new_user(tmp_path)
    before = len(k8s_api.requests)
    result = run_cli(make_request([handle], "k8s.secrets", config(k8s_api, token)))
    assert expected in result.error(handle)
    assert len(k8s_api.requests) == before  # rejected before any request


def test_provider_prefix_mode_uses_pod_environment(k8s_api: KubeApi, tmp_path: Path) -> None:
    user, token = k8s_api.new_user(tmp_path)
    ns = unique_ns("database")
    k8s_api.grant(user, "secrets", ns)
    k8s_api.add_secret(ns, "database-secret", {"password": "pw-1", "user": "dd"})
    handles = [
        f"k8s_secret@{ns}/database-secret/password",
        f"k8s_secret@{ns}/database-secret/user",
        f"k8s_secret@{ns}/database-secret/nokey",
    ]
    env = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(k8s_api.port),
        "DD_SECRET_BACKEND_K8S_TOKEN_PATH": str(token),
        "DD_SECRET_BACKEND_K8S_CA_PATH": k8s_api.ca_path,
    }
    result = run_cli(make_request(handles), args=["--with-provider-prefixes"], env=env)
    assert result.returncode == 0, result.stderr
    assert result.value(handles[0]) == "pw-1"
    assert result.value(handles[1]) == "dd"
    assert 'has no key "nokey" (keys present: password, user)' in result.error(handles[2])
    assert k8s_api.count(secret_path(ns, "database-secret")) == 1


def test_ipv6_service_host(k8s_api_v6: KubeApi, tmp_path: Path) -> None:
    user, token = k8s_api_v6.new_user(tmp_path)
    ns = unique_ns()
    k8s_api_v6.grant(user, "secrets", ns)
    k8s_api_v6.add_secret(ns, "s", {"k": "over-ipv6"})
    env = {
        "KUBERNETES_SERVICE_HOST": "::1",
        "KUBERNETES_SERVICE_PORT": str(k8s_api_v6.port),
    }
    cfg = {"token_path": str(token), "ca_path": k8s_api_v6.ca_path}
    result = run_cli(make_request([f"{ns}/s;k"], "k8s.secrets", cfg), env=env)
    assert result.value(f"{ns}/s;k") == "over-ipv6"


def test_no_api_server_configured(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": ""}
    result = run_cli(make_request(["ns/s;k"], "k8s.secrets", {}), env=env)
    error = result.error("ns/s;k")
    assert "no Kubernetes API server" in error and "KUBERNETES_SERVICE_HOST" in error


def test_missing_token_file(k8s_api: KubeApi, tmp_path: Path) -> None:
    cfg = config(k8s_api, tmp_path / "absent")
    result = run_cli(make_request(["ns/s;k"], "k8s.secrets", cfg))
    error = result.error("ns/s;k")
    assert f"cannot read the service-account token {tmp_path / 'absent'}" in error


def test_untrusted_server_certificate(k8s_api: KubeApi, tmp_path: Path) -> None:
    _, token = k8s_api.new_user(tmp_path)
    other_ca = tmp_path / "other-ca.crt"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    cfg = config(k8s_api, token, ca_path=str(other_ca))
    result = run_cli(make_request(["ns/s;k"], "k8s.secrets", cfg))
    assert "TLS verification" in result.error("ns/s;k")


def test_hanging_api_server_times_out_within_the_deadline(k8s_api: KubeApi, tmp_path: Path) -> None:
    user, token = k8s_api.new_user(tmp_path)
    ns = unique_ns()
    k8s_api.grant(user, "secrets", ns)
    k8s_api.add_secret(ns, "slow", {"k": "v"})
    k8s_api.add_secret(ns, "fast", {"k": "quick"})
    k8s_api.hang.add((ns, "slow"))
    handles = [f"{ns}/slow;k", f"{ns}/fast;k"]
    result = run_cli(make_request(handles, "k8s.secrets", config(k8s_api, token), timeout=3))
    assert result.returncode == 0, result.stderr
    assert "timed out" in result.error(f"{ns}/slow;k")
    assert result.value(f"{ns}/fast;k") == "quick"
    assert result.seconds < 3 + 5  # answered before the Agent's kill (generous margin)
