"""A small HTTPS server speaking the Kubernetes API for Secrets, for tests.

No local Kubernetes API server installs from PyPI, so this one implements the part the
k8s.secrets backend uses, with the real API server's behaviour:

* `GET /api/v1/namespaces/{ns}/secrets/{name}` and `GET /api/v1/namespaces/{ns}`;
* bearer-token authentication (401), then RBAC-like authorisation (403), then the lookup (404),
  in that order, each failure answered with a `Status` body shaped like the API server's;
* a GET of a Secret in a namespace that does not exist answers `secrets "x" not found`, as
  the real server does (it does not reveal namespaces to readers of secrets);
* TLS with a certificate from a `trustme` CA (valid for 127.0.0.1, ::1 and localhost).

Every request is recorded in `requests` as (method, path) so tests can count calls.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

SECRET_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/secrets/([^/]+)$")
NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)$")


def status_body(code: int, reason: str, message: str, details: dict[str, str] | None) -> bytes:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return json.dumps(body).encode()


class KubeApi:
    """The server's state (Secrets, namespaces, tokens, grants) and its listening socket."""

    def __init__(self, host: str = "127.0.0.1", ca: trustme.CA | None = None) -> None:
        self.ca = ca or trustme.CA()
        self.secrets: dict[tuple[str, str], dict[str, bytes]] = {}
        self.namespaces: set[str] = set()
        self.tokens: dict[str, str] = {}  # bearer token -> user name
        # (user, resource, namespace or None for every namespace) allowed to `get`.
        self.grants: set[tuple[str, str, str | None]] = set()
        self.hang: set[tuple[str, str]] = set()  # Secrets whose GET never answers in time
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="k8sapi")
        self.ca_path = str(Path(self._dir.name) / "ca.crt")
        self.ca.cert_pem.write_to_path(self.ca_path)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert("127.0.0.1", "::1", "localhost").configure_cert(context)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type(
            "Server",
            (http.server.ThreadingHTTPServer,),
            {"address_family": family, "block_on_close": False, "daemon_threads": True},
        )
        self.httpd = server_class((host, 0), _handler(self))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.host = host
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def add_secret(self, namespace: str, name: str, data: dict[str, str | bytes]) -> None:
        self.namespaces.add(namespace)
        self.secrets[(namespace, name)] = {
            k: v.encode() if isinstance(v, str) else v for k, v in data.items()
        }

    def new_user(self, tmp_dir: Path, name: str | None = None) -> tuple[str, Path]:
        """A service-account user with a fresh token, written to a file as kubelet does."""
        # Unique per call: grants given in one test must not leak into the next.
        user = f"system:serviceaccount:default:{name or 'datadog-agent'}-{uuid.uuid4().hex[:6]}"
        token = "tok-" + uuid.uuid4().hex
        self.tokens[token] = user
        path = tmp_dir / "token"
        path.write_text(f"  {token}\n")  # surrounding whitespace must be trimmed by the client
        return user, path

    def grant(self, user: str, resource: str, namespace: str | None = None) -> None:
        self.grants.add((user, resource, namespace))

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for _, p in self.requests if p == path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._dir.cleanup()

    # The request pipeline: authentication, authorisation, lookup.
    def answer(self, path: str, authorization: str | None) -> tuple[int, bytes]:
        with self._lock:
            self.requests.append(("GET", path))
        token = (authorization or "").removeprefix("Bearer ")
        user = self.tokens.get(token) if authorization and authorization != token else None
        if user is None:
            return 401, status_body(401, "Unauthorized", "Unauthorized", None)
        if match := SECRET_PATH.match(path):
            namespace, name = match.groups()
            return self._get_secret(user, namespace, name)
        if match := NAMESPACE_PATH.match(path):
            (namespace,) = match.groups()
            return self._get_namespace(user, namespace)
        return 404, status_body(
            404, "NotFound", "the server could not find the requested resource", {}
        )

    def _allowed(self, user: str, resource: str, namespace: str) -> bool:
        return (user, resource, namespace) in self.grants or (user, resource, None) in self.grants

    def _forbidden(self, user: str, resource: str, name: str, namespace: str) -> tuple[int, bytes]:
        message = (
            f'{resource} "{name}" is forbidden: User "{user}" cannot get resource "{resource}" '
            f'in API group "" in the namespace "{namespace}"'
        )
        return 403, status_body(403, "Forbidden", message, {"name": name, "kind": resource})

    def _get_secret(self, user: str, namespace: str, name: str) -> tuple[int, bytes]:
        if not self._allowed(user, "secrets", namespace):
            return self._forbidden(user, "secrets", name, namespace)
        if (namespace, name) in self.hang:
            time.sleep(30)
        data = self.secrets.get((namespace, name))
        if data is None:  # also when the namespace is missing, as the real server answers
            details = {"name": name, "kind": "secrets"}
            return 404, status_body(404, "NotFound", f'secrets "{name}" not found', details)
        body: dict[str, Any] = {
            "kind": "Secret",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{name}")),
                "resourceVersion": "1",
                "creationTimestamp": "2024-01-01T00:00:00Z",
            },
            "type": "Opaque",
        }
        if data:  # the API server omits an empty data map
            body["data"] = {k: base64.b64encode(v).decode() for k, v in data.items()}
        return 200, json.dumps(body).encode()

    def _get_namespace(self, user: str, namespace: str) -> tuple[int, bytes]:
        if not self._allowed(user, "namespaces", namespace):
            return self._forbidden(user, "namespaces", namespace, namespace)
        if namespace not in self.namespaces:
            details = {"name": namespace, "kind": "namespaces"}
            message = f'namespaces "{namespace}" not found'
            return 404, status_body(404, "NotFound", message, details)
        body = {
            "kind": "Namespace",
            "apiVersion": "v1",
            "metadata": {"name": namespace},
            "status": {"phase": "Active"},
        }
        return 200, json.dumps(body).encode()


def _handler(api: KubeApi) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real server

        def do_GET(self) -> None:
            code, body = api.answer(self.path, self.headers.get("Authorization"))
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(scope="session", name="k8s_api")
def k8s_api_fixture() -> Iterator[KubeApi]:
    """One API server per xdist worker; tests use their own namespaces, so they don't clash."""
    api = KubeApi()
    yield api
    api.close()


@pytest.fixture(scope="session", name="k8s_api_v6")
def k8s_api_v6_fixture() -> Iterator[KubeApi]:
    if not ipv6_available():
        pytest.skip("this machine cannot listen on ::1 (IPv6 loopback disabled)")
    api = KubeApi("::1")
    yield api
    api.close()
