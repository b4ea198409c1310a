"""k8s.secrets: keys of Kubernetes Secret objects, read from the API server.

Handles are `namespace/name;key`. Each Secret object is fetched once per run
(`GET /api/v1/namespaces/{ns}/secrets/{name}`) with the pod's service-account token, however
many of its keys are requested. Plain `requests` is enough: the kubernetes client package
would add megabytes for one GET.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import threading
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple, cast

import requests

from secret_backend.backend import Backend, CommonConfig, Ref
from secret_backend.deadline import Deadline
from secret_backend.errors import ConfigError, SecretError, network_cause

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_TOKEN_PATH = f"{SA_DIR}/token"
DEFAULT_CA_PATH = f"{SA_DIR}/ca.crt"
# Overrides of the two defaults for runs without a config (provider-prefix mode), e.g. an
# Agent outside a pod or with a projected token mounted elsewhere. A config key wins.
TOKEN_PATH_ENV = "DD_SECRET_BACKEND_K8S_TOKEN_PATH"
CA_PATH_ENV = "DD_SECRET_BACKEND_K8S_CA_PATH"
MAX_TOKEN_BYTES = 64 * 1024
REQUEST_TIMEOUT = 10.0  # per call, further capped by the run's deadline

HANDLE_FORMAT = "expected 'namespace/name;key'"
# Kubernetes' own validation rules: checking them here gives a clear error instead of a
# confusing 404, and keeps handles from changing the URL path.
NAMESPACE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # RFC 1123 label
NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")  # RFC 1123 subdomain
KEY_RE = re.compile(r"[-._a-zA-Z0-9]{1,253}")  # Secret data keys
USER_RE = re.compile(r'User "([^"]+)"')
TOKEN_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII: anything else is not a token


class SecretId(NamedTuple):
    """The fetch key: one Secret object, fetched once whatever the number of its keys read."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"Secret {self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class KubernetesSecretsConfig(CommonConfig):
    # None: env override, else the service-account file mounted in every pod.
    token_path: str | None = None
    # None: env override, else the service-account CA. "": the system trust store.
    ca_path: str | None = None
    # None: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT (set in every pod).
    api_server: str | None = None


def default_api_server() -> str:
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "").strip()
    if not host or not port:
        raise ConfigError(
            "k8s.secrets: no Kubernetes API server: set config.api_server "
            "(e.g. https://kubernetes.default.svc) or run the Agent in a pod, where "
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are set"
        )
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"https://{host}:{port}"


def read_token(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"k8s.secrets: cannot read the service-account token {path}: {exc.strerror}; "
            "mount it (automountServiceAccountToken: true) or set config.token_path"
        )
    token = data.decode("ascii", errors="replace").strip()
    if not token:
        raise ConfigError(f"k8s.secrets: the service-account token file {path} is empty")
    if len(data) > MAX_TOKEN_BYTES or not TOKEN_RE.fullmatch(token):
        # Never quote it: it is a credential.
        raise ConfigError(
            f"k8s.secrets: the file {path} does not hold a bearer token "
            "(expected one line of printable ASCII)"
        )
    return token


def _status(response: requests.Response) -> dict[str, Any]:
    """The Kubernetes Status object of an error answer ({} when the body is not one)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) and body.get("kind") == "Status" else {}


class KubernetesSecretsBackend(Backend):
    type_name = "k8s.secrets"
    Config = KubernetesSecretsConfig
    config: KubernetesSecretsConfig
    default_concurrency = 8

    def __init__(self, config: KubernetesSecretsConfig, deadline: Deadline) -> None:
        super().__init__(config, deadline)
        self.api_server = (config.api_server or default_api_server()).rstrip("/")
        if not self.api_server.startswith(("https://", "http://")):
            raise ConfigError(
                f"config.api_server: expected an https:// URL, got {self.api_server!r}"
            )
        self.token_path = config.token_path or os.environ.get(TOKEN_PATH_ENV) or DEFAULT_TOKEN_PATH
        ca_path = config.ca_path
        if ca_path is None:
            ca_path = os.environ.get(CA_PATH_ENV) or DEFAULT_CA_PATH
        if ca_path and not os.path.isfile(ca_path):
            raise ConfigError(
                f"k8s.secrets: the CA certificate {ca_path} does not exist; set config.ca_path "
                '(or ca_path: "" to trust the system CAs)'
            )
        self.ca_path = ca_path
        token = read_token(self.token_path)
        self.session = requests.Session()
        self.session.verify = ca_path or True
        self.session.trust_env = False  # no proxy or netrc from the environment for the API
        self.session.headers.update(
            {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        )
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=self.concurrency)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # namespace -> whether it exists (None: we may not read namespaces), asked once.
        self._namespaces: dict[str, bool | None] = {}
        self._namespaces_lock = threading.Lock()

    def parse(self, handle: str) -> Ref:
        location, sep, key = handle.partition(";")
        namespace, slash, name = location.partition("/")
        if not sep or not slash:
            raise SecretError(f'invalid handle "{handle}": {HANDLE_FORMAT}')
        if not NAMESPACE_RE.fullmatch(namespace):
            raise SecretError(
                f'invalid handle "{handle}": namespace "{namespace}" is not a valid Kubernetes '
                "namespace (lowercase letters, digits and '-', at most 63 characters)"
            )
        if not NAME_RE.fullmatch(name):
            raise SecretError(
                f'invalid handle "{handle}": "{name}" is not a valid Secret name (lowercase '
                "letters, digits, '-' and '.', at most 253 characters)"
            )
        if not KEY_RE.fullmatch(key):
            raise SecretError(
                f'invalid handle "{handle}": "{key}" is not a valid Secret key (letters, '
                f"digits, '-', '_' and '.'); {HANDLE_FORMAT}"
            )
        return Ref(SecretId(namespace, name), key)

    def describe_key(self, key: Hashable) -> str:
        return str(key)

    def fetch(self, keys: Sequence[Hashable], deadline: Deadline) -> Mapping[Hashable, Any]:
        return {key: self._fetch_one(key, deadline) for key in keys}

    def _get(self, path: str, what: str, deadline: Deadline) -> requests.Response:
        self.count_call()
        url = f"{self.api_server}{path}"
        try:
            return self.session.get(url, timeout=deadline.cap(REQUEST_TIMEOUT))
        except requests.exceptions.SSLError as exc:
            cause = network_cause(exc)
            if not cause.startswith("TLS certificate"):  # not a trust problem: say what it was
                raise SecretError(f"reading {what}: TLS with {self.api_server} failed: {cause}")
            trust = f"the CA in {self.ca_path}" if self.ca_path else "the system CAs"
            raise SecretError(
                f"reading {what}: TLS verification of {self.api_server} failed with {trust}; "
                "set config.ca_path to the cluster's CA certificate"
            )
        except requests.exceptions.Timeout:
            raise SecretError(deadline.timeout_error(f"reading {what} from {self.api_server}"))
        except requests.exceptions.ConnectionError as exc:
            raise SecretError(
                f"reading {what}: cannot connect to the Kubernetes API server "
                f"{self.api_server} ({network_cause(exc)}); check config.api_server and "
                "network policies"
            )

    def _fetch_one(self, key: Hashable, deadline: Deadline) -> dict[str, Any] | SecretError:
        namespace, name = cast(SecretId, key)
        what = str(key)
        try:
            response = self._get(f"/api/v1/namespaces/{namespace}/secrets/{name}", what, deadline)
        except SecretError as exc:
            return exc
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                return SecretError(f"{what}: the API server's answer is not JSON")
            data = body.get("data") if isinstance(body, dict) else None
            return data if isinstance(data, dict) else {}
        status = _status(response)
        if response.status_code == 404:
            return self._not_found(namespace, name, status, deadline)
        if response.status_code == 403:
            return SecretError(self._forbidden(namespace, name, status))
        if response.status_code == 401:
            return SecretError(
                f"reading {what}: the API server rejected the service-account token from "
                f"{self.token_path} (401 Unauthorized): it is invalid or expired; check that "
                "the file is the pod's current token (projected tokens rotate)"
            )
        reason = status.get("reason") or response.reason
        return SecretError(
            f"reading {what}: the API server answered {response.status_code} {reason}"
        )

    def _not_found(
        self, namespace: str, name: str, status: dict[str, Any], deadline: Deadline
    ) -> SecretError:
        # A GET of a Secret answers `secrets "x" not found` whether or not the namespace exists
        # (the API server does not reveal namespaces to readers of secrets), so ask once per
        # namespace; that needs `get` on namespaces (optional: without it the message says so).
        details = status.get("details")
        kind = details.get("kind") if isinstance(details, dict) else None
        exists = False if kind == "namespaces" else self._namespace_exists(namespace, deadline)
        if exists is False:
            return SecretError(
                f'Secret {namespace}/{name}: namespace "{namespace}" does not exist; '
                "check the namespace part of the handle"
            )
        message = f'Secret "{name}" not found in namespace "{namespace}"'
        if exists is None:
            message += (
                " (or the namespace does not exist: the service account may not read "
                "namespaces to tell)"
            )
        return SecretError(f"{message}; check the handle or create the Secret")

    def _namespace_exists(self, namespace: str, deadline: Deadline) -> bool | None:
        with self._namespaces_lock:
            if namespace in self._namespaces:
                return self._namespaces[namespace]
            try:
                response = self._get(f"/api/v1/namespaces/{namespace}", "namespace", deadline)
            except SecretError:
                answer = None
            else:
                answer = {200: True, 404: False}.get(response.status_code)
            self._namespaces[namespace] = answer
            return answer

    def _forbidden(self, namespace: str, name: str, status: dict[str, Any]) -> str:
        match = USER_RE.search(str(status.get("message", "")))
        user = match.group(1) if match else None
        who = user or "the Agent's service account"
        bind_to = f"bind it to {user}" if user else "bind it to the Agent's service account"
        text = (
            f"reading Secret {namespace}/{name}: forbidden (403): {who} may not get secrets in "
            f'namespace "{namespace}"; grant a Role with verb "get" on resource "secrets" '
            f'(resourceNames: ["{name}"]) in namespace "{namespace}" and {bind_to} '
            "with a RoleBinding"
        )
        if user:
            text += f" (check: kubectl auth can-i get secret/{name} -n {namespace} --as {user})"
        return text

    def select(self, fetched: Any, ref: Ref) -> str:
        where = str(ref.fetch_key)
        key = ref.selector
        if key not in fetched:
            present = ", ".join(sorted(str(k) for k in fetched)) or "none"
            raise SecretError(
                f'{where} has no key "{key}" (keys present: {present}); check the key '
                "part of the handle"
            )
        try:
            raw = base64.b64decode(str(fetched[key]), validate=True)
        except (binascii.Error, ValueError):
            raise SecretError(f'{where}: key "{key}" is not valid base64 in the API answer')
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretError(
                f'{where}: key "{key}" holds binary data, not UTF-8 text; the Agent can only '
                "use text secrets"
            )
