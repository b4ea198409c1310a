"""gcp.secretmanager through the real executable, against an HTTPS server on 127.0.0.1.

The server speaks Secret Manager's REST contract (`v1/projects/{p}/secrets/{s}/versions/
{v}:access`, Google error bodies) and an OAuth token endpoint. The service-account key file's
`token_uri` points at it, so google-auth's real JWT-bearer flow runs: the server checks the
JWT's RS256 signature against the key it generated, then issues an access token.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.helpers import free_port, make_request, run_cli
from tests.https_server import HttpsServer, Request
from tests.proxy import TcpProxy

PROJECT = "test-project"
SA_EMAIL = "datadog-agent@test-project.iam.gserviceaccount.com"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
DB_JSON = '{"user": "dd", "password": "pa;ss", "port": 3306, "ratio": 1.50, "tls": true}'
SECRETS: dict[str, dict[int, bytes]] = {
    "plain": {1: b"old-value", 2: b"hunter2"},
    "db": {1: b'{"password": "v1-password"}', 2: DB_JSON.encode()},
    "odd name/../?#%": {1: b"odd-value"},
    "bad-crc": {1: b"tampered"},
    "binary": {1: b"\xff\xfe\x00"},
    "no-crc": {1: b"value-without-crc"},
    **{f"many-{i}": {1: f"value-{i}".encode()} for i in range(12)},
}
# Regional secrets live apart from the global ones, per location.
REGIONAL: dict[str, dict[str, dict[int, bytes]]] = {
    "europe-west1": {"db": {1: b'{"password": "eu-password"}'}, "eu-only": {1: b"eu-value"}},
}
FORBIDDEN = {"forbidden"}
ACCESS = re.compile(
    r"^/v1/projects/([^/]+)(?:/locations/([^/]+))?/secrets/([^/]+)/versions/([^/]+):access$"
)


def crc32c_bitwise(data: bytes) -> int:
    """Reference CRC-32C, bit by bit (independent of the backend's table-driven one)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return crc ^ 0xFFFFFFFF


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def google_error(code: int, status: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, {"error": {"code": code, "message": message, "status": status}}


class FakeGoogle:
    """Token endpoint + Secret Manager access endpoint."""

    def __init__(self, tmp: Path) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.tokens: set[str] = set()
        self._lock = threading.Lock()
        self.server = HttpsServer(self.handle, tmp)
        self.token_uri = f"{self.server.url}/token"
        self.key_file = tmp / "service-account.json"
        self.key_file.write_text(json.dumps(self.key_info(self.key)))

    def key_info(self, key: rsa.RSAPrivateKey) -> dict[str, str]:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        return {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "test-key-1",
            "private_key": pem,
            "client_email": SA_EMAIL,
            "client_id": "1234567890",
            "token_uri": self.token_uri,
        }

    def handle(self, request: Request) -> tuple[Any, ...]:
        if request.path == "/token" and request.method == "POST":
            return self.issue_token(request)
        match = ACCESS.match(request.path)
        if match and request.method == "GET":
            project, location, secret, version = (
                urllib.parse.unquote(g) if g is not None else None for g in match.groups()
            )
            assert project and secret and version
            return self.access(request, project, secret, version, location)
        return google_error(404, "NOT_FOUND", f"no route for {request.path}")

    def issue_token(self, request: Request) -> tuple[Any, ...]:
        form = request.form()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, {"error": "unsupported_grant_type"}
        try:
            header, claims, signature = form["assertion"].split(".")
            self.key.public_key().verify(
                b64url_decode(signature),
                f"{header}.{claims}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except Exception:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        payload = json.loads(b64url_decode(claims))
        # google-auth always signs for Google's token audience, whatever token_uri says.
        if payload.get("iss") != SA_EMAIL or payload.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT claims."}
        if SCOPE not in payload.get("scope", "").split():
            return 400, {"error": "invalid_scope", "error_description": "Missing scope."}
        with self._lock:
            token = f"ya29.test-token-{len(self.tokens)}"
            self.tokens.add(token)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def access(
        self, request: Request, project: str, secret: str, version: str, location: str | None
    ) -> tuple[Any, ...]:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return google_error(401, "UNAUTHENTICATED", "Request had invalid credentials.")
        resource = f"projects/{project}/secrets/{secret}/versions/{version}"
        if project != PROJECT or secret in FORBIDDEN:
            return google_error(
                403,
                "PERMISSION_DENIED",
                f"Permission 'secretmanager.versions.access' denied for resource '{resource}' "
                "(or it may not exist).",
            )
        versions = (REGIONAL.get(location, {}) if location else SECRETS).get(secret)
        if versions is None:
            return google_error(
                404, "NOT_FOUND", f"Secret [projects/{project}/secrets/{secret}] not found."
            )
        number = max(versions) if version == "latest" else int(version) if version.isdigit() else 0
        if number not in versions:
            return google_error(404, "NOT_FOUND", f"Secret Version [{resource}] not found.")
        data = versions[number]
        crc = crc32c_bitwise(data)
        payload: dict[str, Any] = {"data": base64.b64encode(data).decode()}
        if secret == "bad-crc":
            payload["dataCrc32c"] = str(crc ^ 1)
        elif secret != "no-crc":
            payload["dataCrc32c"] = str(crc)  # int64 fields are JSON strings in Google APIs
        return 200, {
            "name": f"projects/123456/secrets/{secret}/versions/{number}",
            "payload": payload,
        }

    def access_count(self, secret: str, version: str, location: str | None = None) -> int:
        quote = urllib.parse.quote
        parent = f"projects/{PROJECT}" + (f"/locations/{location}" if location else "")
        path = f"/v1/{parent}/secrets/{quote(secret, safe='')}/versions/{version}:access"
        return self.server.count(path, "GET")


@pytest.fixture(scope="session")
def google_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    fake = FakeGoogle(tmp_path_factory.mktemp("gcp"))
    yield fake
    fake.server.close()


@pytest.fixture
def google(google_server: FakeGoogle) -> FakeGoogle:
    google_server.server.reset()
    return google_server


def gcp_env(google: FakeGoogle, key_file: Path | None = None) -> dict[str, str]:
    return {
        "GOOGLE_APPLICATION_CREDENTIALS": str(key_file or google.key_file),
        "REQUESTS_CA_BUNDLE": google.server.ca_path,
    }


def gcp_config(google: FakeGoogle, **extra: Any) -> dict[str, Any]:
    return {"gcp_session": {"project_id": PROJECT}, "endpoint": google.server.url + "/", **extra}


def run_gcp(google: FakeGoogle, handles: list[str], **kw: Any) -> Any:
    config = kw.pop("config", None) or gcp_config(google)
    request = make_request(handles, "gcp.secretmanager", config, timeout=kw.pop("timeout", 20))
    result = run_cli(request, env=kw.pop("env", None) or gcp_env(google), **kw)
    assert result.returncode == 0, result.stderr
    return result


def test_every_handle_form_and_json_selection(google: FakeGoogle) -> None:
    handles = [
        "plain",
        "plain;;1",
        "plain;;latest",
        "db;password",
        "db;port",
        "db;ratio",
        "db;tls",
        "db",
        "db;password;1",
        "db;user;2",
        "db;missing",
        "plain;anykey",
    ]
    result = run_gcp(google, handles)
    assert result.value("plain") == "hunter2"  # latest = the highest version
    assert result.value("plain;;1") == "old-value"
    assert result.value("plain;;latest") == "hunter2"
    assert result.value("db;password") == "pa;ss"
    assert result.value("db;port") == "3306"
    assert result.value("db;ratio") == "1.50"  # numbers keep their exact text
    assert result.value("db;tls") == "true"
    assert result.value("db") == DB_JSON
    assert result.value("db;password;1") == "v1-password"
    assert result.value("db;user;2") == "dd"
    assert result.value("plain;anykey") == "hunter2"  # not a JSON object: the whole value
    error = result.error("db;missing")
    assert 'backend does not provide secret key "missing"' in error
    assert "pa;ss" not in error  # key names are listed, never values
    assert '"password"' in error


def test_each_secret_version_fetched_once_and_token_fetched_once(google: FakeGoogle) -> None:
    handles = [f"many-{i}" for i in range(12)]
    handles += ["db;user", "db;password", "db;port", "db", "db;;latest", "db;user;2", "db;;2"]
    result = run_gcp(google, handles, args=["--debug"])
    assert "provider calls" in result.stderr  # debug statistics, yet no value nor token
    assert "value-" not in result.stderr and "ya29." not in result.stderr
    for i in range(12):
        assert result.value(f"many-{i}") == f"value-{i}"
        assert google.access_count(f"many-{i}", "latest") == 1
    assert result.value("db;user;2") == "dd"
    # "db" at latest and at version 2 are distinct fetch keys (the server resolves the alias).
    assert google.access_count("db", "latest") == 1
    assert google.access_count("db", "2") == 1
    assert google.server.count("/token", "POST") == 1
    total = sum(n for (m, p), n in google.server.counts.items() if p.endswith(":access"))
    assert total == 14


def test_path_components_are_url_escaped(google: FakeGoogle) -> None:
    result = run_gcp(google, ["odd name/../?#%", "odd name/../?#%;;1"])
    assert result.value("odd name/../?#%") == "odd-value"
    assert result.value("odd name/../?#%;;1") == "odd-value"
    assert google.access_count("odd name/../?#%", "latest") == 1


def test_regional_secrets_with_location(google: FakeGoogle) -> None:
    config = gcp_config(google)
    config["gcp_session"]["location"] = "europe-west1"
    result = run_gcp(google, ["db;password", "eu-only", "plain"], config=config)
    assert result.value("db;password") == "eu-password"  # not the global "db"
    assert result.value("eu-only") == "eu-value"
    error = result.error("plain")  # a global secret: not in the location
    assert 'secret "plain" version "latest" in project "test-project", location "europe-west1"' in (
        error
    )
    assert "not found" in error and "gcp_session.location" in error
    assert google.access_count("db", "latest", "europe-west1") == 1
    assert google.access_count("db", "latest") == 0


def test_location_selects_the_regional_endpoint(google: FakeGoogle) -> None:
    # No endpoint in the config: the location's regional endpoint, here through a proxy that
    # refuses (the token endpoint on 127.0.0.1 is reached directly).
    config: dict[str, Any] = {"gcp_session": {"project_id": PROJECT, "location": "europe-west1"}}
    proxy = f"http://127.0.0.1:{free_port()}"
    env = {**gcp_env(google), "HTTPS_PROXY": proxy, "https_proxy": proxy}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    result = run_gcp(google, ["db"], config=config, env=env)
    error = result.error("db")
    assert "https://secretmanager.europe-west1.rep.googleapis.com" in error
    assert "connection refused" in error


@pytest.mark.parametrize("location", ["Europe West", "europe-west1/../x", "1abc"])
def test_invalid_location(google: FakeGoogle, location: str) -> None:
    config = gcp_config(google)
    config["gcp_session"]["location"] = location
    error = run_gcp(google, ["db"], config=config).error("db")
    assert "config.gcp_session.location must be a Google Cloud region" in error
    assert google.server.count("/token", "POST") == 0


def test_crc32c_mismatch_binary_payload_and_absent_crc(google: FakeGoogle) -> None:
    result = run_gcp(google, ["bad-crc", "binary", "no-crc"])
    error = result.error("bad-crc")
    assert "CRC32C" in error and '"bad-crc"' in error
    assert "tampered" not in error
    assert "binary data, not UTF-8 text" in result.error("binary")
    assert result.value("no-crc") == "value-without-crc"


def test_crc32c_matches_the_reference_check_value() -> None:
    from backends.gcp_secretmanager import crc32c

    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    for data in (b"", b"a", bytes(range(256)) * 3, DB_JSON.encode()):
        assert crc32c(data) == crc32c_bitwise(data)


def test_permission_denied_names_the_role(google: FakeGoogle) -> None:
    result = run_gcp(google, ["forbidden", "plain"])
    error = result.error("forbidden")
    assert "permission denied" in error
    assert "roles/secretmanager.secretAccessor" in error
    assert '"forbidden"' in error and PROJECT in error
    assert result.value("plain") == "hunter2"  # one failure does not spoil the others


def test_secret_or_version_not_found(google: FakeGoogle) -> None:
    result = run_gcp(google, ["nosuch", "plain;;7", "plain;;v9"])
    missing_secret = result.error("nosuch")
    assert 'secret "nosuch" version "latest"' in missing_secret and "not found" in missing_secret
    assert "Secret [projects/test-project/secrets/nosuch] not found" in missing_secret
    assert 'version "7"' in result.error("plain;;7") and "not found" in result.error("plain;;7")
    assert "not found" in result.error("plain;;v9")


@pytest.mark.parametrize("config", [{}, {"gcp_session": {}}, {"gcp_session": {"project_id": ""}}])
def test_project_id_is_required(google: FakeGoogle, config: dict[str, Any]) -> None:
    result = run_gcp(google, ["plain", "db;user"], config=config or {"endpoint": "https://x"})
    for handle in ("plain", "db;user"):
        assert "gcp_session.project_id is required" in result.error(handle)
    assert google.server.count("/token") == 0


def test_malformed_handles(google: FakeGoogle) -> None:
    result = run_gcp(google, ["a;b;c;d", ";key", "plain"])
    assert "invalid handle 'a;b;c;d'" in result.error("a;b;c;d")
    assert "secret name is empty" in result.error(";key")
    assert result.value("plain") == "hunter2"


def test_no_application_default_credentials(google: FakeGoogle, tmp_path: Path) -> None:
    env = {
        "GOOGLE_APPLICATION_CREDENTIALS": "",
        "HOME": str(tmp_path),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        # Point the metadata server at a closed port, so the check fails fast and offline.
        "GCE_METADATA_HOST": "127.0.0.1:9",
        "GCE_METADATA_IP": "127.0.0.1:9",
        "GCE_METADATA_DETECT_RETRIES": "1",
        "REQUESTS_CA_BUNDLE": google.server.ca_path,
    }
    result = run_gcp(google, ["plain"], env=env, timeout=10)
    error = result.error("plain")
    assert "no Google Application Default Credentials found" in error
    assert "GOOGLE_APPLICATION_CREDENTIALS (not set)" in error
    assert str(tmp_path / "gcloud" / "application_default_credentials.json") in error
    assert "metadata server" in error
    assert result.seconds < 15


@pytest.mark.parametrize("content", [None, "{not json", '{"type": "service_account"}'])
def test_unusable_credentials_file(google: FakeGoogle, tmp_path: Path, content: str | None) -> None:
    key_file = tmp_path / "key.json"
    if content is not None:
        key_file.write_text(content)
    result = run_gcp(google, ["plain"], env=gcp_env(google, key_file))
    error = result.error("plain")
    assert (
        f"could not load Google credentials from GOOGLE_APPLICATION_CREDENTIALS ({key_file})"
        in (error)
    )
    assert google.server.count("/token") == 0


def test_key_unknown_to_the_token_endpoint(google: FakeGoogle, tmp_path: Path) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "other-key.json"
    key_file.write_text(json.dumps(google.key_info(other)))
    result = run_gcp(google, ["plain", "db;user"], env=gcp_env(google, key_file))
    for handle in ("plain", "db;user"):
        error = result.error(handle)
        assert "could not get a Google access token" in error
        assert "invalid_grant" in error and SA_EMAIL in error
        assert "PRIVATE KEY" not in error
    assert google.server.count("/token") == 1  # once per run, not once per handle


def test_unreachable_endpoint_is_bounded_by_the_deadline(google: FakeGoogle) -> None:
    with TcpProxy(google.server.port) as proxy:
        proxy.mode = "blackhole"
        config = gcp_config(google, endpoint=f"https://127.0.0.1:{proxy.port}")
        result = run_gcp(google, ["plain", "db;user"], config=config, timeout=3)
    assert result.seconds < 10
    for handle in ("plain", "db;user"):
        assert "timed out" in result.error(handle)


def test_multi_backend_file_mode(google: FakeGoogle, tmp_path: Path) -> None:
    config = tmp_path / "datadog-secret-backend.yaml"
    config.write_text(
        "backends:\n"
        "  gsm:\n"
        "    backend_type: gcp.secretmanager\n"
        f"    endpoint: {google.server.url}\n"
        f"    gcp_session: {{project_id: {PROJECT}}}\n"
    )
    handles = ["gsm:db;user", "gsm:plain;;1"]
    result = run_cli(
        make_request(handles, timeout=20), args=["--config", str(config)], env=gcp_env(google)
    )
    assert result.value("gsm:db;user") == "dd"
    assert result.value("gsm:plain;;1") == "old-value"
