"""Fault injection: every backend that talks to a network, in front of its real test server.

Faults: a port nobody listens on; a server that accepts then closes; one that accepts and
never answers; one that answers, but only after the deadline; 429 with a short
`Retry-After` (forever) and 503 with a long one; TLS with a certificate the client must not
trust; wrong or expired credentials. In every case the run must exit 0, answer every handle
with an error that names the cause, and finish before `secret_backend_timeout` (measured
for timeouts of 1 and 5 s here, 30 s in the `slow` tests).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.azure_server import TENANT, AzureServer, azure_server, clean_azure_env
from tests.helpers import Result, free_port, make_request, run_cli
from tests.k8s_server import KubeApi, k8s_api_fixture
from tests.moto_server import CountingProxy, moto_url
from tests.openbao_server import OpenBao, openbao
from tests.proxy import HttpFaultServer, TcpProxy
from tests.test_akeyless import ACCESS_ID, ACCESS_KEY, FakeAkeyless, akeyless_server
from tests.test_gcp import PROJECT, FakeGoogle, google_server

__all__ = [  # session fixtures, used by name through request.getfixturevalue
    "akeyless_server",
    "azure_server",
    "clean_azure_env",
    "google_server",
    "k8s_api_fixture",
    "moto_url",
    "openbao",
]

FAULTS = ["refused", "closed", "blackhole", "slow", "429", "503", "untrusted-tls", "credentials"]
# What an error must say, per fault (any of these words, case-insensitive).
CAUSE = {
    "refused": ["refused", "could not connect", "cannot connect"],
    "closed": ["closed", "reset", "aborted", "disconnected", "no answer"],
    "blackhole": ["timed out"],
    "slow": ["timed out"],
    "429": ["429", "throttl", "rate"],
    "503": ["503", "unavailable"],
    "untrusted-tls": ["certificate", "CERTIFICATE_VERIFY_FAILED"],
}


@dataclasses.dataclass
class Case:
    """One request against one fault: what to send, in which environment, what to expect."""

    handles: tuple[str, ...]
    config: Any
    env: dict[str, str]
    cause: list[str]
    # For TLS faults: how many requests reached the server (must stay 0: no insecure retry).
    reached: Callable[[], int] | None = None


class Target:
    """How one backend is pointed at an endpoint; subclasses describe each backend."""

    type: str
    scheme = "https"
    handles: tuple[str, ...] = ()

    def __init__(self, request: pytest.FixtureRequest, tmp: Path) -> None:
        self.request = request
        self.tmp = tmp

    def upstream_port(self) -> int:
        raise NotImplementedError

    def point_at(self, url: str, trust: list[str]) -> tuple[Any, dict[str, str]]:
        """Config and environment that send this backend's calls to `url`, trusting `trust`."""
        raise NotImplementedError

    def fault_body(self, status: int) -> bytes:
        return json.dumps({"errors": [f"injected HTTP {status}"]}).encode()

    def bad_credentials(self) -> Case:
        raise NotImplementedError

    def bundle(self, *paths: str) -> str:
        """One CA bundle file holding several CAs (for clients that take one path)."""
        path = self.tmp / f"bundle-{uuid.uuid4().hex[:6]}.pem"
        path.write_text("".join(Path(p).read_text() for p in paths))
        return str(path)


class AwsSecrets(Target):
    type = "aws.secrets"
    scheme = "http"
    handles = ("prod/db;user", "prod/db;password", "prod/api;key")

    def upstream_port(self) -> int:
        return int(self.request.getfixturevalue("moto_url").rsplit(":", 1)[1])

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "AKIAFAULTTEST0000000",
            "AWS_SECRET_ACCESS_KEY": "fault-test-secret-key",
            "AWS_SESSION_TOKEN": "",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(self.tmp / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.tmp / "none"),
        }

    def point_at(self, url: str, trust: list[str]) -> tuple[Any, dict[str, str]]:
        env = {**self.env(), "AWS_ENDPOINT_URL": url}
        if trust:
            env["AWS_CA_BUNDLE"] = self.bundle(*trust)
        return {}, env

    def fault_body(self, status: int) -> bytes:
        code = "ThrottlingException" if status == 429 else "ServiceUnavailableException"
        return json.dumps({"__type": code, "message": f"injected {status}"}).encode()

    def bad_credentials(self) -> Case:
        # moto accepts any key, so the proxy answers what AWS says to an expired session.
        proxy = CountingProxy(self.request.getfixturevalue("moto_url"))
        self.request.addfinalizer(proxy.close)
        for operation in ("GetSecretValue", "BatchGetSecretValue"):
            proxy.fail(
                operation,
                "ExpiredTokenException",
                times=None,
                message="The security token included in the request is expired",
            )
        config, env = self.point_at(proxy.url, [])
        return Case(self.handles, config, env, ["expired", "credentials"])


class AwsSsm(AwsSecrets):
    type = "aws.ssm"
    handles = ("/prod/api_key", "/prod/app_key")

    def bad_credentials(self) -> Case:
        proxy = CountingProxy(self.request.getfixturevalue("moto_url"))
        self.request.addfinalizer(proxy.close)
        proxy.fail(
            "GetParameters",
            "UnrecognizedClientException",
            times=None,
            message="The security token included in the request is invalid.",
        )
        config, env = self.point_at(proxy.url, [])
        return Case(self.handles, config, env, ["credentials", "invalid"])


class Vault(Target):
    type = "hashicorp.vault"
    scheme = "http"
    handles = ("kv/app;user", "kv/app;password", "vault://kv/other#/key")
    base_env: ClassVar[dict[str, str]] = {
        "VAULT_ADDR": "",
        "VAULT_TOKEN": "",
        "VAULT_NAMESPACE": "",
        "DD_SECRETS_IMPLICIT_AUTH": "",
    }

    def upstream_port(self) -> int:
        server: OpenBao = self.request.getfixturevalue("openbao")
        return server.port

    def point_at(self, url: str, trust: list[str]) -> tuple[Any, dict[str, str]]:
        config: dict[str, Any] = {"vault_address": url, "vault_token": "fault-test-token"}
        if trust:
            config["vault_tls_config"] = {"ca_cert": self.bundle(*trust)}
        return config, dict(self.base_env)

    def bad_credentials(self) -> Case:
        server: OpenBao = self.request.getfixturevalue("openbao")
        with contextlib.suppress(Exception):
            server.write("sys/auth/approle", {"type": "approle"})
        server.write("auth/approle/role/faults", {"token_policies": ["default"]})
        role_id = server.api("GET", "auth/approle/role/faults/role-id")["data"]["role_id"]
        session = {"vault_role_id": role_id, "vault_secret_id": str(uuid.uuid4())}
        config = {"vault_address": server.url, "vault_session": session}
        return Case(self.handles, config, dict(self.base_env), ["approle", "login"])


class Gcp(Target):
    type = "gcp.secretmanager"
    handles = ("plain", "db;user", "db;password")

    @property
    def google(self) -> FakeGoogle:
        return self.request.getfixturevalue("google_server")  # type: ignore[no-any-return]

    def upstream_port(self) -> int:
        return self.google.server.port

    def point_at(self, url: str, trust: list[str]) -> tuple[Any, dict[str, str]]:
        env = {
            "GOOGLE_APPLICATION_CREDENTIALS": str(self.google.key_file),
            # The token endpoint stays the real test server: trust its CA too.
            "REQUESTS_CA_BUNDLE": self.bundle(self.google.server.ca_path, *trust),
        }
        return {"gcp_session": {"project_id": PROJECT}, "endpoint": url + "/"}, env

    def fault_body(self, status: int) -> bytes:
        state = "RESOURCE_EXHAUSTED" if status == 429 else "UNAVAILABLE"
        error = {"code": status, "message": f"injected {status}", "status": state}
        return json.dumps({"error": error}).encode()

    def bad_credentials(self) -> Case:
        # The access endpoint rejects the (expired) access token.
        body = json.dumps(
            {
                "error": {
                    "code": 401,
                    "message": "Request had invalid authentication credentials.",
                    "status": "UNAUTHENTICATED",
                }
            }
        ).encode()
        server = HttpFaultServer(401, {"Content-Type": "application/json"}, body, tls=True)
        self.request.addfinalizer(server.close)
        config, env = self.point_at(server.url, [server.ca_path])
        return Case(self.handles, config, env, ["unauthenticated", "credentials"])


class K8s(Target):
    type = "k8s.secrets"

    def __init__(self, request: pytest.FixtureRequest, tmp: Path) -> None:
        super().__init__(request, tmp)
        self.api: KubeApi = request.getfixturevalue("k8s_api")
        self.user, self.token = self.api.new_user(tmp)
        ns = f"faults-{uuid.uuid4().hex[:8]}"
        self.api.grant(self.user, "secrets", ns)
        self.api.add_secret(ns, "db", {"user": "dd", "password": "pw"})
        self.handles = (f"{ns}/db;user", f"{ns}/db;password", f"{ns}/other;key")

    def upstream_port(self) -> int:
        return self.api.port

    def point_at(self, url: str, trust: list[str]) -> tuple[Any, dict[str, str]]:
        ca = self.bundle(*trust) if trust else self.api.ca_path
        return {"api_server": url, "token_path": str(self.token), "ca_path": ca}, {}

    def fault_body(self, status: int) -> bytes:
        reason = "TooManyRequests" if status == 429 else "ServiceUnavailable"
        body = {"kind": "Status", "status": "Failure", "reason": reason, "code": status}
        return json.dumps({**body, "message": f"injected {status}"}).encode()

    def bad_credentials(self) -> Case:
        expired = self.tmp / "expired-token"
        expired.write_text("tok-expired-" + uuid.uuid4().hex)
        config = {
            "api_server": self.api.url,
            "token_path": str(expired),
            "ca_path": self.api.ca_path,
        }
        return Case(self.handles, config, {}, ["401", "unauthorized", "token"])


class Akeyless(Target):
    type = "akeyless"
    handles = ("/prod/datadog/api_key", "/prod/db")

    @property
    def fake(self) -> FakeAkeyless:
        return self.request.getfixturevalue("akeyless_server")  # type: ignore[no-any-return]

    def upstream_port(self) -> int:
        return self.fake.server.port

    def point_at(
        self, url: str, trust: list[str], key: str = ACCESS_KEY
    ) -> tuple[Any, dict[str, str]]:
        session = {"akeyless_access_id": ACCESS_ID, "akeyless_access_key": key}
        env = {"REQUESTS_CA_BUNDLE": self.bundle(self.fake.server.ca_path, *trust)}
        return {"akeyless_url": url, "akeyless_session": session}, env

    def fault_body(self, status: int) -> bytes:
        return json.dumps({"error": f"injected {status}"}).encode()

    def bad_credentials(self) -> Case:
        config, env = self.point_at(self.fake.server.url, [], key="AKwrongAccessKey=")
        return Case(self.handles, config, env, ["authenticat", "401"])


class Azure(Target):
    """Azure is reached under its real host names through a CONNECT proxy (HTTPS_PROXY), so
    network faults sit between the client and that proxy, and HTTP faults come from the test
    server itself (its throttling knobs)."""

    type = "azure.keyvault"
    handles = ("plain", "db;user")

    def __init__(self, request: pytest.FixtureRequest, tmp: Path) -> None:
        super().__init__(request, tmp)
        request.getfixturevalue("clean_azure_env")
        self.server: AzureServer = request.getfixturevalue("azure_server")
        self.vault = self.server.new_vault()
        self.vault.put("plain", "plain-value")
        self.vault.put("db", '{"user": "dd"}')
        client_id, secret = self.server.new_service_principal()
        self.session = {
            "azure_tenant_id": TENANT,
            "azure_client_id": client_id,
            "azure_client_secret": secret,
        }

    def config(self) -> dict[str, Any]:
        return {"keyvaulturl": self.vault.url, "azure_session": dict(self.session)}

    def upstream_port(self) -> int:
        return int(self.server.proxy.url.rsplit(":", 1)[1])

    def case(self, fault: str, timeout: float, stack: contextlib.ExitStack) -> Case:
        cause = CAUSE.get(fault, [])
        if fault in ("429", "503"):
            retry_after = "1" if fault == "429" else "120"
            # The test server only throttles with 429: both Retry-After shapes on it.
            for name in ("plain", "db"):
                self.vault.put(name, "never", throttle=10_000, retry_after=retry_after)
            return Case(self.handles, self.config(), self.server.env(), CAUSE["429"])
        if fault == "untrusted-tls":
            # The client trusts another CA than the one that signed the server's certificate.
            other = stack.enter_context(HttpFaultServer(200, tls=True)).ca_path
            env = self.server.env(REQUESTS_CA_BUNDLE=other, SSL_CERT_FILE=other)
            client_id = self.session["azure_client_id"]

            def reached() -> int:
                return sum(self.vault.gets.values()) + self.server.token_requests[client_id]

            return Case(self.handles, self.config(), env, cause, reached)
        if fault == "credentials":
            config = self.config()
            config["azure_session"]["azure_client_secret"] = "wrong-" + uuid.uuid4().hex
            return Case(self.handles, config, self.server.env(), ["AADSTS7000215", "secret"])
        url = network_fault(fault, self.upstream_port(), "http", timeout, stack)
        return Case(
            self.handles, self.config(), self.server.env(HTTPS_PROXY=url, https_proxy=url), cause
        )


TARGETS: dict[str, type[Target]] = {
    t.type: t for t in (AwsSecrets, AwsSsm, Vault, Gcp, K8s, Akeyless, Azure)
}


def network_fault(
    fault: str, upstream_port: int, scheme: str, timeout: float, stack: contextlib.ExitStack
) -> str:
    """URL of an endpoint showing `fault` (refused, closed, blackhole, slow)."""
    if fault == "refused":
        return f"{scheme}://127.0.0.1:{free_port()}"
    if fault == "slow":
        # Forwards to the real server, but every chunk waits past the whole deadline.
        proxy = stack.enter_context(TcpProxy(upstream_port, delay=timeout + 2))
    else:
        proxy = stack.enter_context(TcpProxy(upstream_port))
        proxy.mode = "refuse" if fault == "closed" else "blackhole"
    return f"{scheme}://127.0.0.1:{proxy.port}"


def build_case(target: Target, fault: str, timeout: float, stack: contextlib.ExitStack) -> Case:
    if isinstance(target, Azure):
        return target.case(fault, timeout, stack)
    if fault == "credentials":
        return target.bad_credentials()
    cause = CAUSE[fault]
    if fault in ("429", "503"):
        retry_after = "1" if fault == "429" else "120"
        server = stack.enter_context(
            HttpFaultServer(
                int(fault),
                {"Retry-After": retry_after, "Content-Type": "application/json"},
                target.fault_body(int(fault)),
                tls=target.scheme == "https",
            )
        )
        config, env = target.point_at(server.url, [server.ca_path] if server.tls else [])
        return Case(target.handles, config, env, cause)
    if fault == "untrusted-tls":
        server = stack.enter_context(HttpFaultServer(200, tls=True))
        config, env = target.point_at(server.url, [])  # its CA is not trusted
        return Case(target.handles, config, env, cause, lambda: len(server.requests))
    url = network_fault(fault, target.upstream_port(), target.scheme, timeout, stack)
    config, env = target.point_at(url, [])
    return Case(target.handles, config, env, cause)


def run_fault(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, fault: str, timeout: float
) -> Result:
    target = TARGETS[backend](request, tmp_path)
    with contextlib.ExitStack() as stack:
        case = build_case(target, fault, timeout, stack)
        payload = make_request(list(case.handles), backend, case.config, timeout=timeout)
        result = run_cli(payload, env=case.env, timeout=timeout + 30)
        if case.reached is not None:
            # Never a silent fallback to an unverified connection: nothing got through.
            assert case.reached() == 0
    assert result.returncode == 0, result.stderr
    assert result.seconds < timeout, f"answered after {result.seconds:.2f}s"
    # At 1 s the deadline (0.8 s after process start) may pass before the fault is even
    # reached (interpreter and SDK start-up): then the deadline is the cause to name.
    cause = [*case.cause, "timed out"] if timeout <= 1 else case.cause
    for handle in case.handles:
        error = result.error(handle)
        print(f"{backend} {fault} {timeout}s {result.seconds:.2f}s: {error}")
        assert any(word.lower() in error.lower() for word in cause), (fault, error)
    return result


@pytest.mark.parametrize("timeout", [1, 5])
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("backend", list(TARGETS))
def test_fault_is_answered_with_its_cause_before_the_timeout(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, fault: str, timeout: int
) -> None:
    run_fault(request, tmp_path, backend, fault, timeout)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["blackhole", "429"])
@pytest.mark.parametrize("backend", ["aws.secrets", "hashicorp.vault"])
def test_fault_with_the_default_30s_timeout(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, fault: str
) -> None:
    run_fault(request, tmp_path, backend, fault, 30)
