"""akeyless: static secrets from Akeyless (SaaS API or a gateway) over its REST API.

One `POST /auth` (API key: access id + access key) per run, in __init__; then
`POST /get-secret-value`, which takes a list of names, so up to `max_batch` handles cost one
request. Handles are item paths, e.g. `/prod/datadog/api_key`.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import requests

from secret_backend import jsonvalue
from secret_backend.backend import Backend, CommonConfig
from secret_backend.deadline import Deadline
from secret_backend.errors import ConfigError, SecretError, network_cause

DEFAULT_URL = "https://api.akeyless.io"
REQUEST_TIMEOUT = 30.0  # seconds per HTTP call, always shortened to the run's deadline
# Answers that concern individual items: a batch that gets one is split to find which.
ITEM_STATUSES = (403, 404)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AkeylessSession:
    akeyless_access_id: str = ""
    akeyless_access_key: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AkeylessConfig(CommonConfig):
    akeyless_url: str = DEFAULT_URL
    akeyless_session: AkeylessSession = dataclasses.field(default_factory=AkeylessSession)


class AkeylessBackend(Backend):
    type_name = "akeyless"
    Config = AkeylessConfig
    config: AkeylessConfig
    max_batch = 50
    default_concurrency = 4

    def __init__(self, config: AkeylessConfig, deadline: Deadline) -> None:
        super().__init__(config, deadline)
        session = config.akeyless_session
        self.access_id = session.akeyless_access_id.strip()
        access_key = session.akeyless_access_key.strip()
        missing = [
            f"config.akeyless_session.{name}"
            for name, value in (
                ("akeyless_access_id", self.access_id),
                ("akeyless_access_key", access_key),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} required: the access id and access key of an "
                "Akeyless API Key authentication method"
            )
        self.url = config.akeyless_url.strip().rstrip("/")
        if urllib.parse.urlsplit(self.url).scheme not in ("https", "http") or not self.url:
            raise ConfigError(
                f'config.akeyless_url must be an http(s) URL such as "{DEFAULT_URL}" or your '
                f"gateway's API URL, got {config.akeyless_url!r}"
            )
        self._secrets: tuple[str, ...] = (access_key,)  # never echoed in an error message
        self.http = requests.Session()
        self.token = self._authenticate(access_key, deadline)
        self._secrets = (access_key, self.token)

    def _authenticate(self, access_key: str, deadline: Deadline) -> str:
        body = {"access-type": "access_key", "access-id": self.access_id, "access-key": access_key}
        response = self._post("/auth", body, deadline, "authenticating")
        if response.status_code in (400, 401, 403, 404):
            raise SecretError(
                f"Akeyless authentication failed for access id {self.access_id} (HTTP "
                f"{response.status_code}): check akeyless_session.akeyless_access_id and "
                "akeyless_access_key, and that they belong to an API Key authentication method "
                f"(Akeyless said: {self._server_message(response)})"
            )
        self._check_status(response, "authenticating")
        token = self._json(response, "authenticating").get("token")
        if not isinstance(token, str) or not token:
            raise SecretError(f"Akeyless at {self.url} answered /auth without a token")
        return token

    def fetch(self, keys: Sequence[Hashable], deadline: Deadline) -> Mapping[Hashable, Any]:
        names = [str(k) for k in keys]
        body = {"names": names, "token": self.token, "json": True}
        response = self._post("/get-secret-value", body, deadline, "reading secrets")
        status = response.status_code
        if status in ITEM_STATUSES and len(names) > 1:
            # The error is about some item of the batch: ask for each alone, so every handle
            # gets its own precise answer and the readable ones still succeed.
            answers: dict[Hashable, Any] = {}
            for name in names:
                try:
                    answers.update(self.fetch([name], deadline))
                except SecretError as exc:
                    answers[name] = exc
            return answers
        if status == 404:
            raise SecretError(
                f'Akeyless item "{names[0]}" not found: check the full path of the secret '
                f"(Akeyless said: {self._server_message(response)})"
            )
        if status == 403:
            raise SecretError(
                f'permission denied reading Akeyless item "{names[0]}": the access role of '
                f"auth method {self.access_id} needs read permission on it (Akeyless said: "
                f"{self._server_message(response)})"
            )
        if status == 401:
            raise SecretError(
                "Akeyless rejected the session token (HTTP 401) reading secrets: the token "
                f"of access id {self.access_id} may have expired or been revoked (Akeyless "
                f"said: {self._server_message(response)})"
            )
        self._check_status(response, "reading secrets")
        values = self._json(response, "reading secrets")
        found: dict[Hashable, Any] = {}
        for name in names:
            if name not in values:
                found[name] = SecretError(
                    f'Akeyless answered without a value for "{name}": check that it is a '
                    "static secret (not a folder, a key or a dynamic secret)"
                )
            elif isinstance(values[name], str):
                found[name] = values[name]
            elif values[name] is None:
                found[name] = SecretError(f'Akeyless returned no value for "{name}"')
            else:
                found[name] = jsonvalue.dumps_compact(values[name])
        return found

    def describe_key(self, key: Hashable) -> str:
        return f'Akeyless item "{key}"'

    def _post(self, path: str, body: dict[str, Any], deadline: Deadline, doing: str) -> Any:
        self.count_call()
        try:
            return self.http.post(self.url + path, json=body, timeout=deadline.cap(REQUEST_TIMEOUT))
        except requests.RequestException as exc:
            if deadline.expired():
                raise SecretError(deadline.timeout_error(f"{doing} with Akeyless at {self.url}"))
            raise SecretError(
                f"could not reach Akeyless at {self.url} while {doing}: {network_cause(exc)}; "
                "check akeyless_url and connectivity"
            )

    def _check_status(self, response: requests.Response, doing: str) -> None:
        if response.status_code != 200:
            raise SecretError(
                f"Akeyless at {self.url} answered HTTP {response.status_code} while {doing}: "
                f"{self._server_message(response)}"
            )

    def _json(self, response: requests.Response, doing: str) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise SecretError(
                f"Akeyless at {self.url} sent an answer that is not a JSON object while {doing}: "
                "is akeyless_url the REST API URL (https://api.akeyless.io or your gateway's "
                "URL, e.g. https://gateway.example.com:8081)?"
            )
        return data

    def _server_message(self, response: requests.Response) -> str:
        """The error text of an Akeyless answer, shortened, credentials masked."""
        try:
            data = response.json()
            text = str(data.get("error") or data.get("message") or data) if data else ""
        except (ValueError, AttributeError):
            text = response.text
        text = " ".join(text.split())[:300] or response.reason or "no details"
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text
