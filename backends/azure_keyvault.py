"""azure.keyvault: secrets from Azure Key Vault (azure-keyvault-secrets + azure-identity).

Handles: `name` (the raw value) or `name;json_key` (JSON selection, with a retry on escaped
JSON such as `{\\"foo\\":\\"bar\\"}`). v0 file mode: `secret_id` names the secret and the
handle is the key (`_` = the whole value).

Credentials, first match wins: service principal with a client secret; service principal
with a certificate (PEM or PKCS12); a user-assigned managed identity (client id only, or
`clientid`); otherwise a default chain limited to what a server has: environment variables,
workload identity, managed identity (developer tools such as the Azure CLI are left out).

One token per run: the first request does Key Vault's challenge and gets the token while the
others wait, then they all reuse it (the SDK keeps it in the client's auth policy).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import (
    CertificateCredential,
    ClientSecretCredential,
    DefaultAzureCredential,
    ManagedIdentityCredential,
)
from azure.keyvault.secrets import SecretClient

from secret_backend import jsonvalue
from secret_backend.backend import Backend, CommonConfig, Ref
from secret_backend.deadline import Deadline
from secret_backend.errors import ConfigError, SecretError, is_certificate_error, network_cause
from secret_backend.retrying import retry_after

# The SDK logs failed token attempts as warnings; our error strings already say it all.
for _name in ("azure", "msal"):
    logging.getLogger(_name).addHandler(logging.NullHandler())
    logging.getLogger(_name).propagate = False

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
MAX_ATTEMPTS = 4  # per secret: the first try and up to 3 retries on 429 / 5xx
RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
TOKEN_MARGIN = 0.3  # a hung credential gives up this long before the deadline, to say why
SECRET_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
WHOLE_VALUE = "_"  # v0: the key naming the whole value
DEFAULT_CHAIN_SOURCES = (
    "environment (AZURE_TENANT_ID + AZURE_CLIENT_ID + AZURE_CLIENT_SECRET or "
    "AZURE_CLIENT_CERTIFICATE_PATH), workload identity (AZURE_FEDERATED_TOKEN_FILE), "
    "managed identity (IDENTITY_ENDPOINT, or the instance metadata service)"
)
READ_PERMISSION = (
    'give it the "Key Vault Secrets User" role on the vault (Azure RBAC), or, if the vault '
    'uses access policies, an access policy with the secret "Get" permission'
)

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AzureSession:
    azure_tenant_id: str | None = None
    azure_client_id: str | None = None
    azure_client_secret: str | None = dataclasses.field(default=None, repr=False)
    azure_client_certificate_path: str | None = None
    azure_client_certificate_password: str | None = dataclasses.field(default=None, repr=False)
    # v0 spellings of the certificate settings
    azure_certificate_path: str | None = None
    azure_certificate_password: str | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyVaultConfig(CommonConfig):
    keyvaulturl: str
    clientid: str | None = None  # user-assigned managed identity
    force_string: bool = False
    secret_id: str | None = None  # v0 file mode: the secret; handles are keys inside it
    azure_session: AzureSession = dataclasses.field(default_factory=AzureSession)


class KeyVaultBackend(Backend):
    type_name = "azure.keyvault"
    Config = KeyVaultConfig
    config: KeyVaultConfig
    default_concurrency = 8

    def __init__(self, config: KeyVaultConfig, deadline: Deadline) -> None:
        super().__init__(config, deadline)
        self.vault_url = _vault_url(config.keyvaulturl)
        if config.secret_id is not None:
            _check_name(config.secret_id, "secret_id")
        # Transport and retry settings for the credential's own requests (token endpoints).
        pipeline: dict[str, Any] = {
            "connection_timeout": deadline.cap(CONNECT_TIMEOUT),
            "read_timeout": deadline.cap(READ_TIMEOUT),
            "retry_total": 2,
            "timeout": deadline.remaining(),
        }
        try:
            inner, self.identity, self.default_chain = _credential(config, pipeline)
        except (ValueError, TypeError) as exc:  # e.g. AZURE_* variables set but malformed
            raise ConfigError(f"cannot set up the Azure credential: {_one_line(exc)}")
        self.credential = _BoundedCredential(inner, self, deadline)
        # Our own bounded retries (below) replace the SDK's, whose Retry-After sleeps ignore
        # any deadline.
        self.client = SecretClient(self.vault_url, self.credential, retry_total=0)
        self._first = threading.Lock()
        self._warm = threading.Event()
        self._auth_error: SecretError | None = None

    # --- handles -------------------------------------------------------------------------
    def parse(self, handle: str) -> Ref:
        if self.config.secret_id is not None:  # v0: the handle is a key of secret_id
            if not handle:
                raise SecretError(
                    f'empty key: expected <backend_id>:<key> of secret "{self.config.secret_id}"'
                    f" ({WHOLE_VALUE} for the whole value)"
                )
            return Ref(self.config.secret_id, (handle, True))
        name, sep, key = handle.partition(";")
        _check_name(name, f'handle "{handle}"')
        return Ref(name, (key, False) if sep and key else None)

    def select(self, fetched: Any, ref: Ref) -> str:
        if ref.selector is None:
            return str(fetched)  # `name`: the raw value, never parsed
        key, v0 = ref.selector
        where = self.describe_key(ref.fetch_key)
        return _select(str(fetched), key, where, force_string=self.config.force_string, v0=v0)

    def describe_key(self, key: Hashable) -> str:
        return f'secret "{key}" in key vault {self.vault_url}'

    # --- fetching ------------------------------------------------------------------------
    def fetch(self, keys: Sequence[Hashable], deadline: Deadline) -> Mapping[Hashable, Any]:
        results: dict[Hashable, Any] = {}
        for key in keys:
            try:
                results[key] = self._fetch_one(str(key), deadline)
            except SecretError as exc:
                results[key] = exc
        return results

    def _fetch_one(self, name: str, deadline: Deadline) -> str:
        if not self._warm.is_set():
            # The first request does the challenge and gets the token; the others wait for it
            # so that the run asks the identity provider once.
            if not self._first.acquire(timeout=max(0.0, deadline.remaining())):
                raise SecretError(
                    deadline.timeout_error(f"waiting to read {self.describe_key(name)}")
                )
            try:
                if not self._warm.is_set():
                    try:
                        return self._get(name, deadline)
                    finally:
                        self._warm.set()
            finally:
                self._first.release()
        if self._auth_error is not None:
            raise self._auth_error
        return self._get(name, deadline)

    def _get(self, name: str, deadline: Deadline) -> str:
        attempt = 0
        while True:
            attempt += 1
            self.count_call()
            try:
                secret = self.client.get_secret(
                    name,
                    connection_timeout=deadline.cap(CONNECT_TIMEOUT),
                    read_timeout=deadline.cap(READ_TIMEOUT),
                )
            except ClientAuthenticationError as exc:
                if exc.response is not None:  # the vault refused our token
                    raise self._http_error(name, exc, attempt)
                self._auth_error = self._auth_failure(exc)
                raise self._auth_error
            except HttpResponseError as exc:
                wait = _retry_delay(exc, attempt)
                retry = exc.status_code in RETRYABLE and attempt < MAX_ATTEMPTS
                if retry and wait + 0.2 < deadline.remaining():
                    time.sleep(wait)
                    continue
                raise self._http_error(name, exc, attempt, wait)
            except (ServiceRequestError, ServiceResponseError) as exc:
                timed_out = "timeout" in type(exc).__name__.lower() or deadline.expired()
                retry = not timed_out and not is_certificate_error(exc)
                if retry and attempt < 2 and deadline.remaining() > 1.0:
                    time.sleep(0.3)  # one quick retry: connections do get reset
                    continue
                raise self._network_error(name, exc, timed_out, deadline)
            except SecretError as exc:  # from _BoundedCredential
                self._auth_error = exc
                raise
            if secret.value is None:
                raise SecretError(
                    f"{self.describe_key(name)} has no value (Key Vault returned none): store a "
                    "value in the secret, or check it is a secret and not a certificate or key"
                )
            return secret.value

    # --- errors --------------------------------------------------------------------------
    def _http_error(
        self, name: str, exc: HttpResponseError, attempts: int, wait: float = 0.0
    ) -> SecretError:
        status = exc.status_code
        code, inner, message = _service_error(exc)
        where = self.describe_key(name)
        said = f"; Key Vault said: {message}" if message else ""
        codes = "/".join(c for c in (code, inner) if c)
        if status == 404:
            return SecretError(
                f"{where} not found (404 {codes or 'SecretNotFound'}): check the secret name "
                "and keyvaulturl; a deleted secret must be recovered before it can be read"
            )
        if status == 403 and "SecretDisabled" in (code, inner):
            return SecretError(
                f"{where} is disabled (403 SecretDisabled): enable the secret or its current "
                f"version (az keyvault secret set-attributes --id {self.vault_url}/secrets/"
                f"{name} --enabled true)"
            )
        if status == 403 and inner in ("ForbiddenByFirewall", "ForbiddenByConnection"):
            return SecretError(
                f"access to {where} blocked by the vault's network rules (403 {codes}): allow "
                f"this host's address or network in the vault's firewall, or use a private "
                f"endpoint{said}"
            )
        if status == 403:
            return SecretError(
                f"access denied to {where} for {self.identity} (403 {codes or 'Forbidden'}): "
                f"{READ_PERMISSION}{said}"
            )
        if status == 401:
            return SecretError(
                f"key vault {self.vault_url} rejected the token of {self.identity} for secret "
                f'"{name}" (401 {codes or "Unauthorized"}): check that the identity belongs to '
                f"the vault's tenant{said}"
            )
        if status in RETRYABLE:
            what = "throttled the request" if status == 429 else f"answered {status}"
            if attempts < MAX_ATTEMPTS:
                why = f"it asked to retry after {wait:g}s, past secret_backend_timeout"
            else:
                why = f"still failing after {attempts} attempts"
            advice = (
                "Key Vault limits requests per vault: resolve secrets less often or from fewer "
                "Agents, or raise secret_backend_timeout"
                if status == 429
                else "retry later, or raise secret_backend_timeout"
            )
            return SecretError(
                f'key vault {self.vault_url} {what} for secret "{name}" ({status} {codes}): '
                f"{why}; {advice}"
            )
        return SecretError(f"{where}: Key Vault answered {status} {codes}{said}")

    def _network_error(
        self, name: str, exc: Exception, timed_out: bool, deadline: Deadline
    ) -> SecretError:
        if timed_out:
            return SecretError(deadline.timeout_error(f"reading {self.describe_key(name)}"))
        return SecretError(
            f'cannot reach key vault {self.vault_url} for secret "{name}": {network_cause(exc)}; '
            "check keyvaulturl, DNS, the firewall and proxy settings (HTTPS_PROXY), and, behind "
            "a TLS-inspecting proxy, its CA (REQUESTS_CA_BUNDLE)"
        )

    def _auth_failure(self, exc: Exception) -> SecretError:
        detail = _one_line(exc)
        if self.default_chain:
            detail = _chain_details(exc)
            return SecretError(
                f"no Azure credential could get a token for key vault {self.vault_url}: tried "
                f"{DEFAULT_CHAIN_SOURCES}. Configure azure_session (a service principal with "
                "a client secret or certificate) or clientid (a user-assigned managed "
                f"identity), or give this host a managed identity. Details: {detail}"
            )
        return SecretError(
            f"cannot get a token for key vault {self.vault_url} as {self.identity}: {detail}"
        )


class _BoundedCredential:
    """Wraps a credential so a token request cannot outlive the deadline: it runs on its own
    thread, and when it hangs the error says which credential did."""

    def __init__(self, inner: Any, backend: KeyVaultBackend, deadline: Deadline) -> None:
        self.inner = inner
        self.backend = backend
        self.deadline = deadline

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        return self._bounded(lambda: self.inner.get_token(*scopes, **kwargs))

    def get_token_info(self, *scopes: str, options: Any = None) -> Any:
        return self._bounded(lambda: self.inner.get_token_info(*scopes, options=options))

    def _bounded(self, call: Callable[[], T]) -> T:
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["token"] = call()
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        started = time.monotonic()
        threading.Thread(target=run, name="azure-token", daemon=True).start()
        if not done.wait(max(0.0, self.deadline.remaining() - TOKEN_MARGIN)):
            backend = self.backend
            tried = f"tried {DEFAULT_CHAIN_SOURCES}" if backend.default_chain else backend.identity
            raise SecretError(
                f"timed out after {time.monotonic() - started:.1f}s getting a token for key "
                f"vault {backend.vault_url} ({tried}): check that the identity endpoint is "
                "reachable from this host, or raise secret_backend_timeout"
            )
        if "error" in box:
            raise box["error"]
        return box["token"]


# --- configuration helpers ----------------------------------------------------------------
def _vault_url(raw: str) -> str:
    url = raw.strip().rstrip("/")
    parts = urlsplit(url)
    shown = f'"{raw}"' if "@" not in raw and len(raw) < 200 else "a malformed URL"
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(
            f"keyvaulturl: expected the vault's https URL, like "
            f'"https://my-vault.vault.azure.net", got {shown}'
        )
    if parts.username or parts.password or parts.path or parts.query or parts.fragment:
        raise ConfigError(
            f"keyvaulturl: expected only https://<vault host>, without a path, query or user, "
            f"got {shown}"
        )
    return url


def _check_name(name: str, where: str) -> None:
    if not SECRET_NAME.match(name):
        raise SecretError(
            f'invalid Key Vault secret name "{name[:130]}" in {where}: names are 1-127 letters, '
            "digits and dashes (use name or name;json_key)"
        )


def _credential(config: KeyVaultConfig, pipeline: dict[str, Any]) -> tuple[Any, str, bool]:
    """The credential, how to name it in errors, and whether it is the default chain."""
    s = config.azure_session
    tenant, client, secret = s.azure_tenant_id, s.azure_client_id, s.azure_client_secret
    cert_path = s.azure_client_certificate_path or s.azure_certificate_path
    cert_password = s.azure_client_certificate_password or s.azure_certificate_password
    if tenant and client and secret:
        principal = f"service principal {client} (tenant {tenant}, client secret)"
        return ClientSecretCredential(tenant, client, secret, **pipeline), principal, False
    if tenant and client and cert_path:
        principal = f"service principal {client} (tenant {tenant}, certificate {cert_path})"
        try:
            with open(cert_path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ConfigError(
                f"azure_session.azure_client_certificate_path: cannot read {cert_path}: "
                f"{exc.strerror}"
            )
        try:
            credential = CertificateCredential(
                tenant,
                client,
                certificate_data=data,
                password=cert_password.encode() if cert_password else None,
                **pipeline,
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"azure_session.azure_client_certificate_path: {cert_path} is not a usable "
                "certificate with its private key (PEM, or PKCS12 with "
                f"azure_client_certificate_password if it is encrypted): {_one_line(exc)}"
            )
        return credential, principal, False
    if secret or cert_path or (tenant and client):
        missing = [
            name
            for name, value in (("azure_tenant_id", tenant), ("azure_client_id", client))
            if not value
        ] or ["azure_client_secret or azure_client_certificate_path"]
        raise ConfigError(
            "azure_session: a service principal needs azure_tenant_id, azure_client_id and "
            f"azure_client_secret (or azure_client_certificate_path); missing: "
            f"{', '.join(missing)}. For a user-assigned managed identity set only "
            "azure_client_id (or clientid)"
        )
    managed = client or config.clientid
    if managed:
        identity = f"user-assigned managed identity {managed}"
        return ManagedIdentityCredential(client_id=managed, **pipeline), identity, False
    chain = DefaultAzureCredential(
        exclude_cli_credential=True,
        exclude_developer_cli_credential=True,
        exclude_powershell_credential=True,
        exclude_visual_studio_code_credential=True,
        exclude_shared_token_cache_credential=True,
        exclude_interactive_browser_credential=True,
        exclude_broker_credential=True,
        **pipeline,
    )
    return chain, "the default Azure credential chain", True


# --- response helpers ---------------------------------------------------------------------
def _service_error(exc: HttpResponseError) -> tuple[str, str, str]:
    """(code, inner code, message) of a Key Vault error body {"error": {...}}."""
    try:
        body = json.loads(exc.response.text()) if exc.response is not None else {}
        error = body.get("error") or {}
        inner = error.get("innererror") or {}
        return (
            str(error.get("code") or ""),
            str(inner.get("code") or "") if isinstance(inner, dict) else "",
            _one_line(error.get("message") or ""),
        )
    except (ValueError, AttributeError, TypeError):
        return "", "", ""


def _retry_delay(exc: HttpResponseError, attempt: int) -> float:
    """Retry-After (seconds or an HTTP date) when the service gives one, else a backoff."""
    response: Any = exc.response
    wait = retry_after(response.headers.get("Retry-After")) if response is not None else None
    return wait if wait is not None else 0.5 * 2 ** (attempt - 1)


def _chain_details(exc: Exception) -> str:
    """DefaultAzureCredential's per-source reasons, without its troubleshooting links."""
    message = str(getattr(exc, "message", None) or exc)
    reasons = []
    for line in message.splitlines():
        if line.startswith("\t"):
            sentences = re.split(r"(?<=\.)\s+", line.strip())
            reasons.append(
                " ".join(s for s in sentences if "aka.ms" not in s and "troubleshoot" not in s)
            )
    return _one_line("; ".join(reasons) if reasons else message, limit=900)


def _one_line(value: Any, limit: int = 600) -> str:
    text = getattr(value, "message", None) or str(value)
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- JSON selection -----------------------------------------------------------------------
def _unescaped(raw: str) -> str | None:
    """`{\\"foo\\":\\"bar\\"}` as stored by some tools, unescaped; None if it is not that."""
    if '\\"' not in raw:
        return None
    try:
        value = json.loads(f'"{raw}"', strict=False)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _select(raw: str, key: str, where: str, *, force_string: bool, v0: bool) -> str:
    """JSON selection (CONTRACT section 3), retrying on escaped JSON before giving up."""
    if force_string:
        return raw
    obj = jsonvalue.parse_object(raw)
    if obj is None or key not in obj:
        text = _unescaped(raw)
        retry = jsonvalue.parse_object(text) if text is not None else None
        if retry is not None and (obj is None or key in retry):
            obj = retry
    if obj is None:
        return raw  # not a JSON object: the whole value, whatever the key
    if key not in obj:
        if v0 and key == WHOLE_VALUE:
            return raw
        keys = ", ".join(f'"{k}"' for k in sorted(obj)[:10]) + (", ..." if len(obj) > 10 else "")
        raise SecretError(
            f'value does not contain secret key "{key}": {where} is a JSON object with keys '
            f"{keys or 'none'}"
        )
    return jsonvalue.select_from_object(obj, key, where)
