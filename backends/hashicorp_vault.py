"""hashicorp.vault: secrets from HashiCorp Vault (or OpenBao) KV v1/v2 mounts, through hvac.

Handles (CONTRACT section 3):
* `path;key`: the KV version of the path's mount is detected once per mount per run (the
  Vault CLI's `sys/internal/ui/mounts/<path>`, then `sys/mounts`, else KV v1); KV v2 reads
  `mount/data/rest` and takes `key` from `data.data`.
* `vault://path#/json/pointer`: reads `path` as given and evaluates an RFC 6901 pointer;
  `/data/...` looks inside `data.data` when present, `/lease_duration`, `/renewable`,
  `/lease_id`, `/request_id` and `/warnings` read the response metadata.
* v0 multi-backend file mode: `secret_path` + `secrets` in the backend entry, the handle is a key.

One login per run (in `__init__`), each distinct read path read once, reads concurrent.
Every HTTP call is bounded by the run's deadline (see `_DeadlineSession`).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
import ssl
import threading
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import certifi
import hvac
import hvac.adapters
import hvac.aws_utils
import hvac.exceptions
import hvac.utils
import requests
import requests.adapters

from secret_backend import jsonvalue
from secret_backend.backend import Backend, CommonConfig, Ref
from secret_backend.deadline import Deadline
from secret_backend.errors import ConfigError, SecretError, network_cause
from secret_backend.retrying import retry_after

HTTP_TIMEOUT = 10.0  # seconds per HTTP call, further capped by the run's deadline
SA_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"
METADATA_FIELDS = ("lease_duration", "renewable", "lease_id", "request_id", "warnings")
FORMAT_HINT = "expected 'secret_path;key' or 'vault://path#/json/pointer'"
TRUE_WORDS = ("true", "t", "1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TlsConfig:
    ca_cert: str = ""  # PEM file of the CA(s) that signed Vault's certificate
    ca_path: str = ""  # directory of PEM CA files
    client_cert: str = ""
    client_key: str = ""
    tls_server: str = ""  # server name for SNI and certificate verification
    insecure: bool = False  # skip verification: only when explicitly asked


@dataclasses.dataclass(frozen=True, kw_only=True)
class SessionConfig:
    vault_role_id: str = ""
    vault_secret_id: str = dataclasses.field(default="", repr=False)
    vault_username: str = ""
    vault_password: str = dataclasses.field(default="", repr=False)
    vault_ldap_username: str = ""
    vault_ldap_password: str = dataclasses.field(default="", repr=False)
    vault_auth_type: str = ""  # "aws" or "kubernetes"
    vault_aws_role: str = ""
    aws_region: str = ""
    # Value of the X-Vault-AWS-IAM-Server-ID header, when the aws auth mount requires one.
    vault_aws_iam_server_id: str = ""
    vault_kubernetes_role: str = ""
    vault_kubernetes_jwt: str = dataclasses.field(default="", repr=False)
    vault_kubernetes_jwt_path: str = ""
    vault_kubernetes_mount_path: str = ""
    implicit_auth: Any = None  # bool, or a string: true/t/1 in any case


@dataclasses.dataclass(frozen=True, kw_only=True)
class VaultConfig(CommonConfig):
    vault_address: str = ""
    vault_token: str = dataclasses.field(default="", repr=False)
    vault_namespace: str = ""
    vault_tls_config: TlsConfig = dataclasses.field(default_factory=TlsConfig)
    vault_session: SessionConfig = dataclasses.field(default_factory=SessionConfig)
    # v0 multi-backend file mode: one path, handles are keys of it (listed in `secrets`).
    secret_path: str = ""
    secrets: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class ReadKey:
    """What one fetch reads: a KV secret (`path;key`, version detected) or a raw path."""

    path: str
    kv: bool  # True: detect the KV version and insert `data/` for v2


@dataclasses.dataclass(frozen=True)
class Fetched:
    body: dict[str, Any]  # the whole JSON response, numbers kept as exact text
    read_path: str
    kv_version: int  # 1 or 2 (raw reads: 0)


@dataclasses.dataclass(frozen=True)
class Mount:
    path: str  # "secret/" (relative to the namespace)
    kv_version: int  # 2 for KV v2, else 1


class _DeadlineSession(requests.Session):
    """A requests session whose every call is bounded by the run's deadline.

    hvac's auth helpers do not take a timeout argument, so the bound is applied here, below
    them: whatever hvac asks for, no HTTP call may outlive the deadline.
    """

    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = self.deadline.cap(HTTP_TIMEOUT)
        return super().request(method, url, *args, **kwargs)


class _TlsAdapter(requests.adapters.HTTPAdapter):
    """HTTPS with our own SSLContext: only the configured CAs, a client certificate, and an
    optional server name (SNI + hostname check), as Vault's `VAULT_TLS_SERVER_NAME`."""

    def __init__(self, context: ssl.SSLContext, server_name: str, pool_size: int) -> None:
        self._context = context
        self._server_name = server_name
        super().__init__(pool_connections=1, pool_maxsize=pool_size)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        if self._server_name:
            kwargs["server_hostname"] = self._server_name
            kwargs["assert_hostname"] = self._server_name
        super().init_poolmanager(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # requests would add its own CA bundle to our context; the context already says it all.
        conn.cert_reqs = "CERT_REQUIRED" if self._context.verify_mode else "CERT_NONE"


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in TRUE_WORDS if value is not None else False


def _vault_errors(response: requests.Response) -> str:
    """Vault's own error text from a failed response (never echoes credentials)."""
    try:
        errors = response.json().get("errors")
    except ValueError:
        errors = None
    if isinstance(errors, list) and errors:
        text = "; ".join(str(e) for e in errors)
    else:
        text = response.text.strip() or response.reason or ""
    text = " ".join(text.split())
    return text[:300] + ("..." if len(text) > 300 else "")


class VaultBackend(Backend):
    type_name = "hashicorp.vault"
    Config = VaultConfig
    config: VaultConfig
    default_concurrency = 16  # one Vault server answers many concurrent reads well

    def __init__(self, config: VaultConfig, deadline: Deadline) -> None:
        super().__init__(config, deadline)
        self.address = (os.environ.get("VAULT_ADDR") or config.vault_address).strip()
        if not self.address:
            raise ConfigError(
                "no Vault address: set vault_address in the backend config "
                "(or VAULT_ADDR in the Agent's environment)"
            )
        if not self.address.startswith(("http://", "https://")):
            raise ConfigError(
                f"invalid Vault address {self.address!r}: expected http://host:port "
                "or https://host:port"
            )
        self.namespace = config.vault_namespace or os.environ.get("VAULT_NAMESPACE", "")
        self._session = _DeadlineSession(deadline)
        verify = self._configure_tls(config.vault_tls_config)
        self.client = hvac.Client(
            url=self.address,
            token="",  # set by _authenticate; "" keeps hvac from reading VAULT_TOKEN itself
            verify=verify,
            namespace=self.namespace or None,
            session=self._session,
            timeout=HTTP_TIMEOUT,
            adapter=hvac.adapters.RawAdapter,  # raw responses: exact numbers, our own errors
        )
        self._mounts: dict[str, Mount] = {}  # mount path -> kind, filled by lookups
        self._mount_table: dict[str, Mount] | None = None  # from sys/mounts, if readable
        self._unknown: set[str] = set()  # first path segments whose mount cannot be looked up
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.auth_method = self._authenticate(config.vault_session)

    # ---------------------------------------------------------------- connection, TLS
    def _configure_tls(self, tls: TlsConfig) -> bool:
        """Mount connection pools sized for our concurrency (and our TLS settings for
        https://); returns requests' `verify` flag."""
        pool = self.concurrency + 2
        if not self.address.startswith("https://"):
            self._session.mount(
                "http://", requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=pool)
            )
            return True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies, checks host names
        if tls.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            import urllib3

            # Asked for explicitly in the config; a warning per request would only be noise.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        else:
            if not (tls.ca_cert or tls.ca_path):
                context.load_verify_locations(cafile=certifi.where())  # as requests does
            loaded = 0  # with ca_cert / ca_path, only those CAs are trusted
            if tls.ca_cert:
                loaded += self._load_ca(context, Path(tls.ca_cert), "vault_tls_config.ca_cert")
            if tls.ca_path:
                directory = Path(tls.ca_path)
                if not directory.is_dir():
                    raise ConfigError(f"vault_tls_config.ca_path: {directory} is not a directory")
                for entry in sorted(directory.iterdir()):
                    if entry.is_file():
                        loaded += self._load_ca(context, entry, None)
                if not loaded:
                    raise ConfigError(
                        f"vault_tls_config.ca_path: no PEM CA certificate found in {directory}"
                    )
        if tls.client_cert or tls.client_key:
            if not (tls.client_cert and tls.client_key):
                raise ConfigError(
                    "vault_tls_config: client_cert and client_key must be set together"
                )
            try:
                context.load_cert_chain(tls.client_cert, tls.client_key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"vault_tls_config: cannot load client_cert {tls.client_cert} / client_key "
                    f"{tls.client_key}: {getattr(exc, 'strerror', None) or exc.__class__.__name__}"
                )
        self._session.mount("https://", _TlsAdapter(context, tls.tls_server, pool))
        return not tls.insecure

    @staticmethod
    def _load_ca(context: ssl.SSLContext, path: Path, setting: str | None) -> int:
        try:
            context.load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            if setting is None:
                return 0  # ca_path may hold other files (keys, READMEs): skip them
            reason = getattr(exc, "strerror", None) or "not a PEM certificate file"
            raise ConfigError(f"{setting}: cannot load {path}: {reason}")
        return 1

    # ---------------------------------------------------------------- authentication
    def _authenticate(self, s: SessionConfig) -> str:
        """Log in once; returns the method's name. Errors name the method, never a credential."""
        implicit = os.environ.get("DD_SECRETS_IMPLICIT_AUTH") or s.implicit_auth
        if _truthy(implicit):
            # No login: the environment provides the token (VAULT_TOKEN, ~/.vault-token), or a
            # Vault Agent/proxy in front of Vault adds it.
            token = hvac.utils.get_token_from_env()
            self.client.token = token or ""
            return "implicit"
        if s.vault_role_id or s.vault_secret_id:
            self._need(s.vault_role_id, s.vault_secret_id, "vault_role_id", "vault_secret_id")
            self._login(
                "AppRole",
                "auth/approle/login",
                lambda: self.client.auth.approle.login(s.vault_role_id, s.vault_secret_id),
            )
            return "approle"
        if s.vault_username or s.vault_password:
            self._need(s.vault_username, s.vault_password, "vault_username", "vault_password")
            self._login(
                "userpass",
                f"auth/userpass/login/{s.vault_username}",
                lambda: self.client.auth.userpass.login(s.vault_username, s.vault_password),
            )
            return "userpass"
        if s.vault_ldap_username or s.vault_ldap_password:
            self._need(
                s.vault_ldap_username,
                s.vault_ldap_password,
                "vault_ldap_username",
                "vault_ldap_password",
            )
            self._login(
                "LDAP",
                f"auth/ldap/login/{s.vault_ldap_username}",
                lambda: self.client.auth.ldap.login(s.vault_ldap_username, s.vault_ldap_password),
            )
            return "ldap"
        auth_type = s.vault_auth_type.strip().lower()
        if auth_type == "aws":
            self._aws_login(s)
            return "aws"
        if auth_type == "kubernetes":
            self._kubernetes_login(s)
            return "kubernetes"
        if auth_type:
            raise ConfigError(
                f"vault_session.vault_auth_type: unsupported value {s.vault_auth_type!r} "
                "(supported: aws, kubernetes; AppRole, userpass and LDAP are chosen by their "
                "credentials)"
            )
        if self.config.vault_token:
            self.client.token = self.config.vault_token
            return "token"
        raise ConfigError(
            "no Vault authentication configured: set vault_token, a login method in "
            "vault_session (vault_role_id + vault_secret_id, vault_username + vault_password, "
            "vault_ldap_username + vault_ldap_password, vault_auth_type: aws or kubernetes), "
            "or implicit_auth: true (DD_SECRETS_IMPLICIT_AUTH) to use VAULT_TOKEN"
        )

    @staticmethod
    def _need(first: str, second: str, first_name: str, second_name: str) -> None:
        if not first:
            raise ConfigError(f"vault_session.{first_name} is missing ({second_name} is set)")
        if not second:
            raise ConfigError(f"vault_session.{second_name} is missing ({first_name} is set)")

    def _login(self, method: str, path: str, call: Any) -> None:
        self.count_call()
        where = f"Vault {method} login ({self.address}/v1/{path})"
        try:
            call()
        except hvac.exceptions.VaultError as exc:
            reason = "; ".join(str(e) for e in (exc.errors or [])) or str(exc).split(", on ")[0]
            hint = {
                # Vault also answers 403 for a login path where no auth method is mounted.
                hvac.exceptions.Forbidden: f"permission denied (check that the {method} auth "
                f"method is enabled at auth/{path.split('/')[1]}/ and the credentials are valid)",
                hvac.exceptions.InvalidRequest: "rejected",
                hvac.exceptions.InvalidPath: f"no {method} auth method is enabled at this path",
                hvac.exceptions.VaultDown: "Vault is sealed or unavailable",
            }.get(type(exc), "failed")
            raise SecretError(f"{where} failed: {hint}: {' '.join(reason.split())[:300]}")
        except requests.RequestException as exc:
            raise self._transport_error(exc, f"logging in ({method})")
        except (KeyError, TypeError, ValueError):
            raise SecretError(f"{where} failed: the response carries no client token")

    def _kubernetes_login(self, s: SessionConfig) -> None:
        role = os.environ.get("DD_SECRETS_VAULT_ROLE") or s.vault_kubernetes_role
        if not role:
            raise ConfigError(
                "Vault Kubernetes login: no role: set vault_session.vault_kubernetes_role "
                "(or DD_SECRETS_VAULT_ROLE)"
            )
        jwt = s.vault_kubernetes_jwt.strip()
        if not jwt:
            token_path = (
                os.environ.get("DD_SECRETS_SA_TOKEN_PATH")
                or s.vault_kubernetes_jwt_path
                or SA_TOKEN_PATH
            )
            try:
                jwt = Path(token_path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise SecretError(
                    f"Vault Kubernetes login: cannot read the service account token "
                    f"{token_path}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'} "
                    "(set vault_kubernetes_jwt_path or DD_SECRETS_SA_TOKEN_PATH)"
                )
            if not jwt:
                raise SecretError(f"Vault Kubernetes login: the token file {token_path} is empty")
        # Accepted as a mount ("kubernetes") or a login path ("auth/kubernetes/login").
        raw = os.environ.get("DD_SECRETS_VAULT_AUTH_PATH") or s.vault_kubernetes_mount_path
        mount = raw.strip().strip("/").removeprefix("v1/").removeprefix("auth/")
        mount = mount.removesuffix("/login").strip("/") or "kubernetes"
        self._login(
            "Kubernetes",
            f"auth/{mount}/login",
            lambda: self.client.auth.kubernetes.login(role, jwt, mount_point=mount),
        )

    def _aws_login(self, s: SessionConfig) -> None:
        if not s.vault_aws_role:
            raise ConfigError(
                "Vault AWS IAM login: vault_session.vault_aws_role is missing (the Vault role "
                "bound to this instance's IAM principal)"
            )
        try:
            import boto3  # only for AWS credentials discovery (env, profile, instance role)
        except ImportError:
            raise ConfigError(
                "Vault AWS IAM login needs the Python package 'boto3', which is not "
                "installed: pip install 'datadog-secret-backend[aws]'"
            )

        try:
            session = boto3.session.Session(region_name=s.aws_region or None)
            credentials = session.get_credentials()
            frozen = credentials.get_frozen_credentials() if credentials else None
        except Exception as exc:  # botocore raises many types; none carries secrets
            raise SecretError(
                f"Vault AWS IAM login: cannot load AWS credentials: {type(exc).__name__}: "
                f"{str(exc)[:200]}"
            )
        if frozen is None or not frozen.access_key:
            raise SecretError(
                "Vault AWS IAM login: no AWS credentials found (environment, shared config, "
                "instance or task role)"
            )
        region = s.aws_region or session.region_name or "us-east-1"
        # A regional sts:GetCallerIdentity request, signed with hvac's SigV4 signer; Vault
        # replays it to STS to learn who we are.
        host = f"sts.{region}.amazonaws.com"
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Host": host}
        if s.vault_aws_iam_server_id:
            headers["X-Vault-AWS-IAM-Server-ID"] = s.vault_aws_iam_server_id
        request = requests.Request(
            "POST",
            f"https://{host}/",
            headers=headers,
            data="Action=GetCallerIdentity&Version=2011-06-15",
        ).prepare()
        signer = hvac.aws_utils.SigV4Auth(
            frozen.access_key, frozen.secret_key, frozen.token, region
        )
        signer.add_auth(request)

        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()

        body = request.body if isinstance(request.body, str) else (request.body or b"").decode()
        params = {
            "role": s.vault_aws_role,
            "iam_http_request_method": "POST",
            "iam_request_url": b64(str(request.url)),
            "iam_request_body": b64(body),
            "iam_request_headers": b64(json.dumps({k: [v] for k, v in request.headers.items()})),
        }
        self._login(
            "AWS IAM",
            "auth/aws/login",
            lambda: self.client.adapter.login("/v1/auth/aws/login", json=params),
        )

    # ---------------------------------------------------------------- handles
    def parse(self, handle: str) -> Ref:
        if self.config.secret_path:
            return self._parse_v0(handle)
        if handle.startswith("vault://"):
            path, sep, pointer = handle.removeprefix("vault://").partition("#")
            if not sep:
                raise SecretError(
                    f"invalid vault:// format, expected 'vault://path#/json/pointer': "
                    f'"{handle}" has no "#"'
                )
            path = path.strip("/")
            if not path:
                raise SecretError(f'invalid vault:// handle "{handle}": the path is empty')
            return Ref(ReadKey(path, kv=False), _parse_pointer(pointer, handle))
        path, sep, key = handle.partition(";")
        if not sep:
            raise SecretError(f'invalid secret format, {FORMAT_HINT}: "{handle}" has no ";"')
        path = path.strip("/")
        if not path:
            raise SecretError(f'invalid secret format, {FORMAT_HINT}: "{handle}" has no path')
        if not key:
            raise SecretError(f'invalid secret format, {FORMAT_HINT}: "{handle}" has no key')
        return Ref(ReadKey(path, kv=True), key)

    def _parse_v0(self, handle: str) -> Ref:
        if not handle:
            raise SecretError(
                f"empty key: expected a key of the Vault secret {self.config.secret_path}"
            )
        allowed = self.config.secrets
        if allowed and handle not in allowed:
            listed = ", ".join(f'"{k}"' for k in allowed)
            raise SecretError(
                f'{jsonvalue.MISSING_KEY} "{handle}": it is not listed in this backend\'s '
                f"secrets ({listed})"
            )
        return Ref(ReadKey(self.config.secret_path.strip("/"), kv=True), handle)

    def describe_key(self, key: Hashable) -> str:
        return f'Vault path "{key.path}"' if isinstance(key, ReadKey) else repr(key)

    # ---------------------------------------------------------------- fetching
    def fetch(self, keys: Sequence[Hashable], deadline: Deadline) -> Mapping[Hashable, Any]:
        self._session.deadline = deadline
        out: dict[Hashable, Any] = {}
        for key in keys:
            assert isinstance(key, ReadKey)
            try:
                out[key] = self._read_key(key)
            except SecretError as exc:
                out[key] = exc
        return out

    def _read_key(self, key: ReadKey) -> Fetched:
        if not key.kv:
            return Fetched(self._read(key.path), key.path, 0)
        mount = self._mount_for(key.path)
        if mount is None or mount.kv_version != 2:
            return Fetched(self._read(key.path), key.path, 1)
        rest = key.path[len(mount.path) :].strip("/")
        read_path = mount.path + "data" + (f"/{rest}" if rest else "")
        return Fetched(self._read(read_path), read_path, 2)

    def _get(self, path: str) -> requests.Response:
        deadline = self._session.deadline
        for attempt in range(RETRY_ATTEMPTS):
            self.count_call()
            try:
                response: requests.Response = self.client.adapter.get(
                    f"/v1/{path}", raise_exception=False
                )
            except requests.RequestException as exc:
                raise self._transport_error(exc, f'reading "{path}"')
            if response.status_code not in RETRY_STATUSES or "sealed" in response.text:
                return response
            # Rate-limit quotas (429) and a standby/overloaded node (5xx): retry with jittered
            # backoff, honouring Retry-After, but only if the wait fits before the deadline.
            wait = retry_after(response.headers.get("Retry-After")) or (0.2 * 2**attempt) * (
                0.5 + random.random()
            )
            if attempt == RETRY_ATTEMPTS - 1 or wait > deadline.remaining() - 0.1:
                return response
            time.sleep(wait)
        return response

    def _read(self, path: str) -> dict[str, Any]:
        response = self._get(path)
        if response.status_code == 200:
            try:
                body = jsonvalue.loads_exact(response.text)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise SecretError(f'Vault returned a non-JSON answer for "{path}"')
            return body
        raise self._read_error(path, response)

    def _read_error(self, path: str, response: requests.Response) -> SecretError:
        status = response.status_code
        detail = _vault_errors(response)
        where = f'Vault path "{path}"'
        if status == 403:
            return SecretError(
                f"permission denied reading {where}: the token's policies must grant the "
                f'"read" capability on "{path}" (policy: path "{path}" '
                '{ capabilities = ["read"] }); also check that the token is valid and not '
                "expired" + (f" [{detail}]" if detail else "")
            )
        if status == 503:
            return SecretError(self._unavailable(detail))
        if status == 404:
            if "no handler for route" in detail or "unsupported path" in detail:
                return SecretError(
                    f"no secrets engine is mounted at {where} ({detail}): check the mount "
                    "name at the start of the path" + self._ns_hint()
                )
            return SecretError(f"secret not found: nothing is stored at {where}{self._ns_hint()}")
        if status == 401:
            return SecretError(f"Vault rejected the token reading {where}: {detail}")
        if status == 429:
            return SecretError(
                f"Vault rate limit (HTTP 429) reading {where}, still refused after "
                f"{RETRY_ATTEMPTS} attempts: raise the rate-limit quota for the Agent's "
                f"requests or retry later ({detail})"
            )
        return SecretError(f"Vault error reading {where}: HTTP {status}: {detail}")

    def _ns_hint(self) -> str:
        return f' (namespace "{self.namespace}")' if self.namespace else ""

    def _unavailable(self, detail: str) -> str:
        if "sealed" in detail.lower():
            return (
                f"Vault at {self.address} is sealed: unseal it (bao/vault operator unseal) "
                f"and retry ({detail})"
            )
        return f"Vault at {self.address} is unavailable (HTTP 503): {detail}"

    def _transport_error(self, exc: requests.RequestException, doing: str) -> SecretError:
        if isinstance(exc, requests.exceptions.SSLError):
            return SecretError(
                f"TLS error talking to Vault at {self.address} while {doing}: "
                f"{network_cause(exc)}; check vault_tls_config (ca_cert, ca_path, tls_server)"
            )
        if isinstance(exc, requests.exceptions.Timeout):
            return SecretError(
                self._session.deadline.timeout_error(f"{doing} from Vault at {self.address}")
            )
        if isinstance(exc, requests.exceptions.ConnectionError):
            return SecretError(
                f"cannot connect to Vault at {self.address} while {doing}: "
                f"{network_cause(exc)}; check vault_address / VAULT_ADDR"
            )
        return SecretError(
            f"HTTP error talking to Vault at {self.address} while {doing}: {_short(exc)}"
        )

    # ---------------------------------------------------------------- KV version detection
    def _lock_for(self, path: str) -> threading.Lock:
        first = path.split("/", 1)[0]
        with self._locks_lock:
            return self._locks.setdefault(first, threading.Lock())

    def _known_mount(self, path: str) -> Mount | None:
        best = None
        for mount_path, mount in list(self._mounts.items()):
            if (path + "/").startswith(mount_path) and (
                best is None or len(mount_path) > len(best.path)
            ):
                best = mount
        return best

    def _mount_for(self, path: str) -> Mount | None:
        """The KV mount holding `path`, looked up at most once per mount (None: unknown)."""
        with self._lock_for(path):  # concurrent fetches on one mount wait for one lookup
            mount = self._known_mount(path)
            first = path.split("/", 1)[0]
            if mount is not None or first in self._unknown:
                return mount
            mount = self._lookup_mount(path)
            if mount is None:
                self._unknown.add(first)  # read as KV v1 without asking again
            else:
                self._mounts[mount.path] = mount
            return mount

    def _lookup_mount(self, path: str) -> Mount | None:
        # The endpoint the Vault CLI uses: allowed to any token with a capability on the path.
        response = self._get(f"sys/internal/ui/mounts/{path}")
        if response.status_code == 200:
            try:
                data = response.json().get("data") or {}
                return Mount(str(data["path"]), _kv_version(data))
            except (ValueError, KeyError, TypeError, AttributeError):
                pass
        elif response.status_code == 503:
            raise SecretError(self._unavailable(_vault_errors(response)))
        # Fallback: the mount table (needs read on sys/mounts), fetched once per run.
        if self._mount_table is None:
            self._mount_table = {}
            table = self._get("sys/mounts")
            if table.status_code == 200:
                try:
                    body = table.json()
                    entries = body.get("data") or body
                    for name, info in entries.items():
                        if isinstance(info, dict) and "type" in info:
                            self._mount_table[name] = Mount(name, _kv_version(info))
                except (ValueError, AttributeError):
                    pass
        candidates = [m for p, m in self._mount_table.items() if (path + "/").startswith(p)]
        return max(candidates, key=lambda m: len(m.path), default=None)

    # ---------------------------------------------------------------- selection
    def select(self, fetched: Any, ref: Ref) -> str:
        assert isinstance(fetched, Fetched)
        assert isinstance(ref.fetch_key, ReadKey)
        where = f'Vault secret "{ref.fetch_key.path}"'
        if isinstance(ref.selector, tuple):
            return _select_pointer(fetched.body, ref.selector, where)
        data = fetched.body.get("data")
        if fetched.kv_version == 2:
            inner = data.get("data") if isinstance(data, dict) else None
            if not isinstance(inner, dict):
                raise SecretError(
                    f'{where}: the KV v2 read of "{fetched.read_path}" returned no data.data '
                    "(deleted or destroyed version?)"
                )
            data = inner
        if not isinstance(data, dict):
            raise SecretError(f'{where}: Vault returned no data for "{fetched.read_path}"')
        return jsonvalue.select_from_object(data, ref.selector, where)


RETRY_ATTEMPTS = 3
RETRY_STATUSES = {429, 502, 503, 504}


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _kv_version(info: Mapping[str, Any]) -> int:
    if info.get("type") != "kv":
        return 1
    options = info.get("options") or {}
    return 2 if str(options.get("version", "1")) == "2" else 1


def _parse_pointer(pointer: str, handle: str) -> tuple[str, ...]:
    """RFC 6901 pointer text -> reference tokens (at least one)."""
    bad = f'invalid JSON pointer "{pointer}" in "{handle}"'
    if not pointer:
        raise SecretError(f"{bad}: it is empty; expected e.g. vault://path#/data/key")
    if not pointer.startswith("/"):
        raise SecretError(f'{bad}: a JSON pointer starts with "/" (e.g. #/data/key)')
    if "#" in pointer:
        raise SecretError(f'{bad}: more than one "#"')
    tokens = []
    for raw in pointer[1:].split("/"):
        rest = raw.replace("~0", "").replace("~1", "")
        if "~" in rest:
            raise SecretError(f'{bad}: "~" must be followed by 0 or 1 (RFC 6901)')
        tokens.append(raw.replace("~1", "/").replace("~0", "~"))
    return tuple(tokens)


def _select_pointer(body: dict[str, Any], tokens: tuple[str, ...], where: str) -> str:
    pointer = "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens)
    head, rest = tokens[0], tokens[1:]
    data = body.get("data")
    if head == "data":
        # /data/...: inside data.data on KV v2, inside data on KV v1.
        target = (
            data.get("data")
            if isinstance(data, dict) and isinstance(data.get("data"), dict)
            else data
        )
    elif head in METADATA_FIELDS:
        target = body.get(head)
    else:
        target, rest = data, tokens  # KV v1 style: keys straight under data
    for token in rest:
        if isinstance(target, dict) and token in target:
            target = target[token]
        elif (
            isinstance(target, list)
            and token.isdigit()
            and (token == "0" or not token.startswith("0"))
            and int(token) < len(target)
        ):
            target = target[int(token)]
        else:
            target = None
            break
    if target is None:
        raise SecretError(f"no value found for pointer {pointer} in {where}")
    return jsonvalue.render(target)
