"""gcp.secretmanager: Google Cloud Secret Manager over REST, with Application Default Credentials.

Handles: `secret`, `secret;key`, `secret;key;version`, `secret;;version` (version `latest`
by default). Each distinct (secret, version) is one `versions/{v}:access` call; the resolver
runs them concurrently. `gcp_session.location` reads regional secrets instead (resource
`projects/{p}/locations/{l}/secrets/...` on the regional endpoint). REST (google-auth +
requests) instead of the gRPC client keeps the frozen executable small.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import time
import typing
import urllib.parse
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import google.auth
import google.auth.exceptions
import google.auth.transport.requests
import requests
import requests.adapters

from secret_backend import jsonvalue
from secret_backend.backend import Backend, CommonConfig, Ref
from secret_backend.deadline import Deadline
from secret_backend.errors import ConfigError, SecretError, network_cause

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_ENDPOINT = "https://secretmanager.googleapis.com"
REGIONAL_ENDPOINT = "https://secretmanager.{location}.rep.googleapis.com"
LOCATION = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
REQUEST_TIMEOUT = 30.0  # seconds per HTTP call, always shortened to the run's deadline
RETRY_STATUSES = (429, 500, 502, 503, 504)
ATTEMPTS = 3
ACCESSOR_ROLE = "roles/secretmanager.secretAccessor"


@dataclasses.dataclass(frozen=True, kw_only=True)
class GcpSession:
    project_id: str = ""  # required; checked in __init__ for a clearer message
    location: str = ""  # regional secrets (e.g. "europe-west1"); empty: global secrets


@dataclasses.dataclass(frozen=True, kw_only=True)
class SecretManagerConfig(CommonConfig):
    gcp_session: GcpSession = dataclasses.field(default_factory=GcpSession)
    # Base URL of the Secret Manager API, for Private Service Connect or tests. Default: the
    # global endpoint, or the regional one of gcp_session.location.
    endpoint: str = ""


class _DeadlineRequest(google.auth.transport.requests.Request):
    """google-auth's transport, with every call (token, metadata server) capped by the deadline."""

    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: Any = None,
        **kwargs: Any,
    ) -> Any:
        wanted = timeout if isinstance(timeout, (int, float)) else REQUEST_TIMEOUT
        capped = self._deadline.cap(wanted)
        return super().__call__(url, method, body, headers, timeout=capped, **kwargs)


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as Secret Manager's `dataCrc32c`. Secrets are <= 64 KiB."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _no_adc_message() -> str:
    config_dir = os.environ.get("CLOUDSDK_CONFIG") or os.path.join(
        os.path.expanduser("~"), ".config", "gcloud"
    )
    gcloud_file = os.path.join(config_dir, "application_default_credentials.json")
    return (
        "no Google Application Default Credentials found; looked at "
        f"GOOGLE_APPLICATION_CREDENTIALS (not set), the gcloud ADC file {gcloud_file} (of the "
        "user running the Agent) and the GCE/GKE metadata server (not reachable). Attach a "
        "service account to the VM, use GKE Workload Identity, or set "
        "GOOGLE_APPLICATION_CREDENTIALS in the Agent's environment to a service-account key file"
    )


def _server_message(response: requests.Response) -> str:
    """The `error.status: error.message` of a Google API error body, shortened."""
    try:
        error = response.json().get("error", {})
        text = f"{error.get('status', '')}: {error.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        text = response.text.strip().splitlines()[0] if response.text.strip() else ""
    return text[:300] or response.reason or "no details"


class SecretManagerBackend(Backend):
    type_name = "gcp.secretmanager"
    Config = SecretManagerConfig
    config: SecretManagerConfig
    default_concurrency = 8

    def __init__(self, config: SecretManagerConfig, deadline: Deadline) -> None:
        super().__init__(config, deadline)
        self.project = config.gcp_session.project_id.strip()
        if not self.project:
            raise ConfigError(
                "config.gcp_session.project_id is required: set it to the ID of the Google "
                'Cloud project that holds the secrets, e.g. {"gcp_session": {"project_id": '
                '"my-project"}}'
            )
        self.location = config.gcp_session.location.strip()
        if self.location and not LOCATION.match(self.location):
            raise ConfigError(
                "config.gcp_session.location must be a Google Cloud region such as "
                f'"europe-west1", got {self.location!r}'
            )
        default = REGIONAL_ENDPOINT.format(location=self.location) if self.location else None
        endpoint = (config.endpoint.strip() or default or DEFAULT_ENDPOINT).rstrip("/")
        if urllib.parse.urlsplit(endpoint).scheme not in ("https", "http"):
            raise ConfigError(
                f'config.endpoint must be an http(s) URL such as "{DEFAULT_ENDPOINT}", '
                f"got {endpoint!r}"
            )
        self.endpoint = endpoint
        auth_request = _DeadlineRequest(deadline)
        try:
            credentials, _ = google.auth.default(scopes=[SCOPE], request=auth_request)
        except google.auth.exceptions.DefaultCredentialsError as exc:
            explicit = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
            if explicit:
                raise SecretError(
                    f"could not load Google credentials from GOOGLE_APPLICATION_CREDENTIALS "
                    f"({explicit}): {_first_line(exc)}"
                )
            raise SecretError(_no_adc_message())
        # Fetch the access token once, here, so concurrent fetches never race to refresh it
        # and an authentication problem is reported once for every handle.
        try:
            credentials.refresh(auth_request)
        except google.auth.exceptions.GoogleAuthError as exc:
            raise SecretError(
                "could not get a Google access token with Application Default Credentials "
                f"({_describe_credentials(credentials)}): {_first_line(exc)}"
            )
        self.session = google.auth.transport.requests.AuthorizedSession(
            credentials, auth_request=auth_request
        )
        pool = max(10, self.concurrency)
        self.session.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=pool))
        self.session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=pool))

    def parse(self, handle: str) -> Ref:
        parts = handle.split(";")
        if len(parts) > 3:
            raise SecretError(
                f"invalid handle '{handle}': expected 'secret', 'secret;key', "
                "'secret;key;version' or 'secret;;version'"
            )
        secret = parts[0].strip()
        key = parts[1] if len(parts) > 1 and parts[1] != "" else None
        version = parts[2].strip() if len(parts) > 2 and parts[2].strip() else "latest"
        if not secret:
            raise SecretError(f"invalid handle '{handle}': the secret name is empty")
        return Ref((secret, version), key)

    def describe_key(self, key: Hashable) -> str:
        secret, version = typing.cast(tuple[str, str], key)
        where = f'project "{self.project}"'
        if self.location:
            where += f', location "{self.location}"'
        return f'secret "{secret}" version "{version}" in {where}'

    def fetch(self, keys: Sequence[Hashable], deadline: Deadline) -> Mapping[Hashable, Any]:
        answers: dict[Hashable, Any] = {}
        for key in keys:
            try:
                answers[key] = self._access(key, deadline)
            except SecretError as exc:
                answers[key] = exc
        return answers

    def _access(self, key: Any, deadline: Deadline) -> str:
        secret, version = key
        quote = urllib.parse.quote
        parent = f"projects/{quote(self.project, safe='')}"
        if self.location:
            parent += f"/locations/{self.location}"
        url = (
            f"{self.endpoint}/v1/{parent}/secrets/"
            f"{quote(secret, safe='')}/versions/{quote(version, safe='')}:access"
        )
        what = self.describe_key(key)
        for attempt in range(ATTEMPTS):
            self.count_call()
            try:
                response = self.session.get(url, timeout=deadline.cap(REQUEST_TIMEOUT))
            except google.auth.exceptions.GoogleAuthError as exc:
                raise SecretError(f"could not refresh the Google access token: {_first_line(exc)}")
            except requests.RequestException as exc:
                if deadline.expired():
                    raise SecretError(deadline.timeout_error(f"reading {what}"))
                raise SecretError(
                    f"could not reach Secret Manager at {self.endpoint} reading {what}: "
                    f"{network_cause(exc)}"
                )
            if response.status_code not in RETRY_STATUSES or attempt == ATTEMPTS - 1:
                break
            # Throttled or a transient server error: back off briefly, within the deadline.
            time.sleep(deadline.cap(0.2 * 2**attempt))
            if deadline.expired():
                break
        return self._decode(response, what)

    def _decode(self, response: requests.Response, what: str) -> str:
        status = response.status_code
        if status == 403:
            raise SecretError(
                f"permission denied reading {what}: grant the Agent's service account the role "
                f"{ACCESSOR_ROLE} on the secret or the project (Secret Manager said: "
                f"{_server_message(response)})"
            )
        if status == 404:
            raise SecretError(
                f"{what} not found: check the secret name, the version, project_id and, "
                "for a regional secret, gcp_session.location "
                f"(Secret Manager said: {_server_message(response)})"
            )
        if status == 401:
            raise SecretError(
                f"Secret Manager rejected the access token reading {what} (HTTP 401): "
                f"{_server_message(response)}"
            )
        if status != 200:
            raise SecretError(
                f"Secret Manager answered HTTP {status} reading {what}: {_server_message(response)}"
            )
        try:
            payload = response.json().get("payload") or {}
            data = base64.b64decode(payload.get("data", ""), validate=True)
        except (ValueError, AttributeError, binascii.Error):
            raise SecretError(f"Secret Manager sent an unreadable answer for {what}")
        expected = payload.get("dataCrc32c")
        if expected is not None and str(expected) != str(crc32c(data)):
            raise SecretError(
                f"the payload of {what} failed its CRC32C integrity check (corrupted in "
                "transit); retry, and check any proxy between the Agent and Google"
            )
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretError(f"{what} holds binary data, not UTF-8 text")

    def select(self, fetched: Any, ref: Ref) -> str:
        if ref.selector is None:
            return str(fetched)
        return jsonvalue.select_key(fetched, ref.selector, self.describe_key(ref.fetch_key))


def _first_line(exc: BaseException) -> str:
    # google-auth errors may carry the token endpoint's response as extra args: keep the text.
    text = str(exc.args[0]) if exc.args else ""
    text = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
    cause = exc.__cause__
    if isinstance(cause, ValueError) and cause.args and "PRIVATE KEY" not in str(cause):
        # e.g. "Service account info was not in the expected format, missing fields ..."
        text += f" ({str(cause.args[0]).strip()[:200]})"
    return text


def _describe_credentials(credentials: Any) -> str:
    email = getattr(credentials, "service_account_email", None)
    kind = type(credentials).__module__.rsplit(".", 1)[-1] + "." + type(credentials).__name__
    return f"{kind}, {email}" if isinstance(email, str) else kind
