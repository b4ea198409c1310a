"""A local stand-in for Azure Key Vault and Microsoft Entra ID, over real HTTPS.

Nothing can run Azure locally, so this server implements the documented REST contract the
real `azure-keyvault-secrets` and `azure-identity` packages rely on:

* Key Vault `GET /secrets/{name}[/{version}]?api-version=...` on `<vault>.vault.azure.net`,
  with the bearer challenge (a request without a valid token gets 401 and
  `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
  resource="https://vault.azure.net"`) and error bodies `{"error": {"code", "message"}}`;
* Entra ID on `login.microsoftonline.com`: the OpenID discovery document MSAL reads and the
  client-credentials token endpoint `/{tenant}/oauth2/v2.0/token` (client secret, or a client
  assertion signed with a registered certificate, or a workload-identity federated token);
* the App Service managed-identity endpoint (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`) and an
  IMDS-style endpoint (`AZURE_POD_IDENTITY_AUTHORITY_HOST`), on 127.0.0.1.

The SDK talks to the real host names: an HTTP CONNECT proxy (given to the client with
`HTTPS_PROXY`, as a corporate proxy would be) tunnels them to this server, whose certificate
(from `trustme`) names those hosts. So the client verifies TLS and Key Vault's
challenge-resource check stays on, exactly as in production.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import json
import secrets as pysecrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt  # PyJWT, a dependency of msal
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

LOGIN_HOST = "login.microsoftonline.com"
VAULT_SUFFIX = ".vault.azure.net"
VAULT_RESOURCE = "https://vault.azure.net"
TENANT = "72f988bf-0000-4000-8000-00000000d0d0"
IDENTITY_HEADER = "identity-header-for-tests"
API_VERSION_REQUIRED = "api-version"


@dataclasses.dataclass
class StoredSecret:
    value: str | None
    enabled: bool = True
    denied: str | None = None  # inner error code of a 403: AccessDenied, ForbiddenByRbac, ...
    throttle: int = 0  # answer 429 this many times first
    retry_after: str = "1"


@dataclasses.dataclass
class Vault:
    """One vault on the fake service; tests create their own so their counters are theirs."""

    name: str
    secrets: dict[str, StoredSecret] = dataclasses.field(default_factory=dict)
    gets: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    challenges: int = 0

    @property
    def url(self) -> str:
        return f"https://{self.name}{VAULT_SUFFIX}"

    def put(self, name: str, value: str | None, **options: Any) -> None:
        self.secrets[name.lower()] = StoredSecret(value, **options)


class AzureServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ca = trustme.CA()
        cert = self.ca.issue_cert(f"*{VAULT_SUFFIX}", LOGIN_HOST, "127.0.0.1", "localhost")
        self.ca_path = workdir / "azure-test-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        self.vaults: dict[str, Vault] = {}
        self.client_secrets: dict[str, str] = {}  # service principal client id -> secret
        self.client_certs: dict[str, Any] = {}  # client id -> public key of its certificate
        self.federated_tokens: dict[str, str] = {}  # client id -> accepted federated token
        self.managed_identities: set[str] = set()  # user-assigned client ids ("" = system)
        self.token_requests: collections.Counter[str] = collections.Counter()  # per client id
        self.tokens: dict[str, str] = {}  # access token -> audience
        self.lock = threading.Lock()

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        self.httpd = _TlsServer(("127.0.0.1", 0), _Handler, context)
        self.httpd.app = self
        self.port: int = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.proxy = ConnectProxy(self.port, self.resolvable)

    def resolvable(self, host: str) -> bool:
        """Host names that exist: the login host and the vaults created by tests."""
        vault = host[: -len(VAULT_SUFFIX)] if host.endswith(VAULT_SUFFIX) else None
        return host == LOGIN_HOST or vault in self.vaults

    # --- set-up helpers for tests -------------------------------------------------------
    def new_vault(self) -> Vault:
        vault = Vault(name=f"kv-{uuid.uuid4().hex[:12]}")
        self.vaults[vault.name] = vault
        return vault

    def new_service_principal(self) -> tuple[str, str]:
        client_id, secret = str(uuid.uuid4()), "sp~" + pysecrets.token_urlsafe(24)
        self.client_secrets[client_id] = secret
        return client_id, secret

    def new_certificate_principal(
        self, fmt: str = "pem", password: str | None = None
    ) -> tuple[str, Path]:
        """A service principal with a certificate; returns its client id and a PEM or PFX file."""
        client_id = str(uuid.uuid4())
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"sp-{client_id[:8]}")])
        now = time.time()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime.fromtimestamp(now - 60, dt.UTC))
            .not_valid_after(dt.datetime.fromtimestamp(now + 86400, dt.UTC))
            .sign(key, hashes.SHA256())
        )
        self.client_certs[client_id] = key.public_key()
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password.encode())
            if password
            else serialization.NoEncryption()
        )
        if fmt == "pem":
            data = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
            ) + cert.public_bytes(serialization.Encoding.PEM)
            path = self.workdir / f"{client_id}.pem"
        else:
            data = pkcs12.serialize_key_and_certificates(b"sp", key, cert, None, enc)
            path = self.workdir / f"{client_id}.pfx"
        path.write_bytes(data)
        path.chmod(0o600)
        return client_id, path

    def new_workload_identity(self) -> tuple[str, Path]:
        client_id, token = str(uuid.uuid4()), "federated." + pysecrets.token_urlsafe(24)
        self.federated_tokens[client_id] = token
        path = self.workdir / f"{client_id}.jwt"
        path.write_text(token)
        return client_id, path

    def new_managed_identity(self) -> str:
        client_id = str(uuid.uuid4())
        self.managed_identities.add(client_id)
        return client_id

    @property
    def identity_endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}/msi/token"

    @property
    def imds_host(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for the executable: trust the test CA and reach Azure hosts through the
        proxy. (Tests remove the machine's own Azure settings: see `clean_azure_env`.)"""
        env = {
            "REQUESTS_CA_BUNDLE": str(self.ca_path),
            "SSL_CERT_FILE": str(self.ca_path),
            "HTTPS_PROXY": self.proxy.url,
            "https_proxy": self.proxy.url,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "AZURE_AUTHORITY_HOST": f"https://{LOGIN_HOST}",
        }
        env.update(extra)
        return env

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.proxy.close()

    # --- tokens -------------------------------------------------------------------------
    def issue(self, client_id: str, audience: str) -> str:
        token = "at." + pysecrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = audience
            self.token_requests[client_id] += 1
        return token


# Variables azure-identity reads to pick a credential; azure-identity treats some of them as
# set even when empty, so tests remove them (clean_azure_env) rather than blank them.
AZURE_ENV = (
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_TOKEN_CREDENTIALS",
    "AZURE_AUTHORITY_HOST",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True
    app: AzureServer

    def __init__(self, address: Any, handler: Any, context: ssl.SSLContext) -> None:
        super().__init__(address, handler)
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshake on the connection's own thread, so a slow client blocks nobody.
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        self.RequestHandlerClass(tls, client_address, self)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-request are expected in fault tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _TlsServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def app(self) -> AzureServer:
        return self.server.app

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def kv_error(self, status: int, code: str, message: str, **extra: Any) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        inner = extra.pop("inner", None)
        if inner:
            error["innererror"] = {"code": inner}
        self.send_json(status, {"error": error}, **extra)

    def do_GET(self) -> None:
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if host.endswith(VAULT_SUFFIX):
            self.vault_get(host[: -len(VAULT_SUFFIX)], url.path, query)
        elif host == LOGIN_HOST and url.path.endswith("/v2.0/.well-known/openid-configuration"):
            tenant = url.path.split("/")[1]
            base = f"https://{LOGIN_HOST}/{tenant}"
            self.send_json(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "issuer": f"https://{LOGIN_HOST}/{tenant}/v2.0",
                    "jwks_uri": f"https://{LOGIN_HOST}/{tenant}/discovery/v2.0/keys",
                },
            )
        elif host == LOGIN_HOST and url.path == "/common/discovery/instance":
            self.send_json(
                200,
                {
                    "tenant_discovery_endpoint": f"https://{LOGIN_HOST}/{TENANT}/v2.0/.well-known/openid-configuration",
                    "metadata": [
                        {
                            "preferred_network": LOGIN_HOST,
                            "preferred_cache": LOGIN_HOST,
                            "aliases": [LOGIN_HOST],
                        }
                    ],
                },
            )
        elif url.path == "/msi/token":
            self.app_service_token(query)
        elif url.path == "/metadata/identity/oauth2/token":
            self.imds_token(query)
        else:
            self.send_json(404, {"error": "not_found", "error_description": self.path})

    def do_POST(self) -> None:
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        length = int(self.headers.get("Content-Length") or 0)
        body = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        path = urlsplit(self.path).path
        if host == LOGIN_HOST and path.endswith("/oauth2/v2.0/token"):
            self.client_credentials_token(path.split("/")[1], body)
        else:
            self.send_json(404, {"error": "not_found", "error_description": self.path})

    # --- Entra ID ------------------------------------------------------------------------
    def token_error(self, error: str, description: str, status: int = 401) -> None:
        self.send_json(status, {"error": error, "error_description": description})

    def client_credentials_token(self, tenant: str, body: dict[str, str]) -> None:
        app = self.app
        client_id = body.get("client_id", "")
        scope = body.get("scope", "")
        if body.get("grant_type") != "client_credentials" or not scope.endswith("/.default"):
            return self.token_error("invalid_request", "AADSTS900144: bad grant or scope", 400)
        if tenant != TENANT:
            return self.token_error(
                "invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found.", 400
            )
        assertion = body.get("client_assertion")
        if "client_secret" in body:
            if app.client_secrets.get(client_id) != body["client_secret"]:
                return self.token_error(
                    "invalid_client",
                    f"AADSTS7000215: Invalid client secret provided for app '{client_id}'.",
                )
        elif assertion and client_id in app.federated_tokens:
            if app.federated_tokens[client_id] != assertion:
                return self.token_error("invalid_client", "AADSTS700211: bad federated token")
        elif assertion and client_id in app.client_certs:
            audience = f"https://{LOGIN_HOST}/{tenant}/oauth2/v2.0/token"
            try:
                claims = jwt.decode(
                    assertion,
                    app.client_certs[client_id],
                    algorithms=["PS256", "RS256"],
                    audience=audience,
                )
            except jwt.PyJWTError as exc:
                return self.token_error("invalid_client", f"AADSTS700027: {exc}")
            if claims.get("iss") != client_id or claims.get("sub") != client_id:
                return self.token_error("invalid_client", "AADSTS700027: wrong iss/sub")
        else:
            return self.token_error(
                "unauthorized_client",
                f"AADSTS700016: Application with identifier '{client_id}' was not found.",
                400,
            )
        resource = scope[: -len("/.default")]
        token = app.issue(client_id, resource)
        self.send_json(
            200,
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            },
        )

    def app_service_token(self, query: dict[str, str]) -> None:
        if self.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            return self.send_json(401, {"statusCode": 401, "message": "bad X-IDENTITY-HEADER"})
        if query.get("client_id", "") not in self.app.managed_identities:
            # App Service's error format
            return self.send_json(400, {"statusCode": 400, "message": "Identity not found"})
        self.managed_identity_token(query)

    def imds_token(self, query: dict[str, str]) -> None:
        if self.headers.get("Metadata") != "true":
            return self.send_json(
                400, {"error": "invalid_request", "error_description": "Metadata"}
            )
        if query.get("client_id", "") not in self.app.managed_identities:
            return self.send_json(
                400, {"error": "invalid_request", "error_description": "Identity not found"}
            )
        self.managed_identity_token(query)

    def managed_identity_token(self, query: dict[str, str]) -> None:
        client_id = query.get("client_id", "")
        resource = query.get("resource", "")
        token = self.app.issue(client_id or "system", resource)
        self.send_json(
            200,
            {
                "access_token": token,
                "expires_on": str(int(time.time()) + 3600),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id,
            },
        )

    # --- Key Vault -----------------------------------------------------------------------
    def vault_get(self, vault_name: str, path: str, query: dict[str, str]) -> None:
        vault = self.app.vaults.get(vault_name)
        if vault is None:  # the real service has no such DNS name; the proxy refuses it
            return self.kv_error(404, "VaultNotFound", "unknown vault")
        if API_VERSION_REQUIRED not in query:
            return self.kv_error(400, "BadParameter", "The 'api-version' parameter is missing.")
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if self.app.tokens.get(token) != VAULT_RESOURCE:
            with self.app.lock:
                vault.challenges += 1
            challenge = (
                f'Bearer authorization="https://{LOGIN_HOST}/{TENANT}", resource="{VAULT_RESOURCE}"'
            )
            return self.kv_error(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
                headers={"WWW-Authenticate": challenge},
            )
        parts = [p for p in path.split("/") if p]
        if len(parts) not in (2, 3) or parts[0] != "secrets":
            return self.kv_error(400, "BadParameter", f"unsupported path {path}")
        name = parts[1]
        with self.app.lock:
            vault.gets[name] += 1
            stored = vault.secrets.get(name.lower())
            throttled = stored is not None and stored.throttle > 0
            if throttled and stored is not None:
                stored.throttle -= 1
        if stored is None:
            return self.kv_error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {name} was not found in this key vault. If you recently "
                "deleted this secret you may be able to recover it using the correct recovery "
                "command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182",
            )
        if throttled:
            return self.kv_error(
                429,
                "Throttled",
                "Request was not processed because too many requests were received. "
                "Reason: Vault ServiceRequests Limit Reached",
                headers={"Retry-After": stored.retry_after},
            )
        if stored.denied:
            return self.kv_error(
                403,
                "Forbidden",
                "Caller is not authorized to perform action on resource. "
                "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'",
                inner=stored.denied,
            )
        if not stored.enabled:
            return self.kv_error(
                403,
                "Forbidden",
                "Operation get is not allowed on a disabled secret.",
                inner="SecretDisabled",
            )
        version = parts[2] if len(parts) == 3 else "0123456789abcdef0123456789abcdef"
        bundle: dict[str, Any] = {
            "id": f"{vault.url}/secrets/{name}/{version}",
            "attributes": {
                "enabled": True,
                "created": 1700000000,
                "updated": 1700000000,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": {},
        }
        if stored.value is not None:
            bundle["value"] = stored.value
        self.send_json(200, bundle)


class ConnectProxy:
    """An HTTP CONNECT proxy that tunnels Azure host names to the local TLS server."""

    def __init__(self, upstream_port: int, resolvable: Callable[[str], bool]) -> None:
        self.upstream_port = upstream_port
        self.resolvable = resolvable
        self.tunnels: collections.Counter[str] = collections.Counter()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._listener.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
        with contextlib.closing(client):
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 16384:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            host, _, port = target.rpartition(":")
            if method != "CONNECT" or port != "443" or not self.resolvable(host):
                # What a proxy answers when the name does not resolve.
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            self.tunnels[host] += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with contextlib.closing(upstream):
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                pump = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
                pump.start()
                _pump(client, upstream)
                pump.join(timeout=5)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[AzureServer]:
    server = AzureServer(workdir)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def clean_azure_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The executable inherits the test process's environment: drop its Azure settings."""
    for name in AZURE_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def azure_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureServer]:
    """One fake Azure per xdist worker; tests isolate themselves with their own vault and
    identities (new_vault(), new_service_principal(), ...)."""
    with running(tmp_path_factory.mktemp("azure")) as server:
        yield server
