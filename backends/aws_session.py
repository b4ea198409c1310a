"""What aws.secrets and aws.ssm share: the `aws_session` settings, credentials, retries, errors.

* Credentials: static keys from `aws_session`, else a profile, else boto3's default chain
  (environment, web identity / IRSA, shared files, container credentials, instance metadata);
  optionally followed by one STS AssumeRole. All of it runs inside the request's deadline, and
  instance-metadata probing is cut to one short attempt so off-cloud hosts fail fast.
* Calls: botocore's own retries are off; `AwsClient.call` retries throttling and 5xx answers
  with exponential backoff and full jitter, and never sleeps past the deadline.
* Errors: one table turns AWS error codes into messages that name the secret, the region and,
  for access denied, the IAM action that is missing. Credentials never appear in a message.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import time
from collections.abc import Callable
from typing import Any

import botocore.config
import botocore.exceptions
import botocore.loaders
import botocore.session

from secret_backend.deadline import Deadline
from secret_backend.errors import ConfigError, SecretError, network_cause

log = logging.getLogger("secret_backend")

# One short instance-metadata probe: off-cloud there is nothing to wait for.
METADATA_TIMEOUT = 1.0
CONNECT_TIMEOUT = 5.0
MAX_ATTEMPTS = 6
BACKOFF_BASE = 0.1
BACKOFF_MAX = 2.0

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
    }
)
NOT_FOUND_CODES = frozenset(
    {"ResourceNotFoundException", "ParameterNotFound", "ParameterVersionNotFound"}
)
DENIED_CODES = frozenset(
    {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation", "UnauthorizedException"}
)
REJECTED_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
    }
)
# Access key ids (AKIA..., ASIA...) are scrubbed from any text AWS sends back.
_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{12,}\b")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AwsSessionConfig:
    aws_region: str | None = None
    aws_access_key_id: str | None = dataclasses.field(default=None, repr=False)
    aws_secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    aws_profile: str | None = None
    aws_role_arn: str | None = None
    aws_external_id: str | None = dataclasses.field(default=None, repr=False)
    # For VPC endpoints, LocalStack, tests. AWS_ENDPOINT_URL(_<SERVICE>) also work.
    endpoint_url: str | None = None


def scrub(text: str, limit: int = 300) -> str:
    """AWS's own message, shortened, without access key ids."""
    text = _KEY_ID.sub("<access key id>", " ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


class AwsError(SecretError):
    """A SecretError that keeps AWS's error code, for callers that react to it."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


def describe_error(code: str, message: str, what: str, region: str, action: str) -> str:
    """The message for an AWS error code about `what` (e.g. 'secret "db"')."""
    said = f" (AWS: {scrub(message)})" if message else ""
    if code in NOT_FOUND_CODES:
        return f"{what} not found in region {region}{said}"
    if code == "DecryptionFailure" or (code in DENIED_CODES and "kms" in message.lower()):
        return (
            f"access denied decrypting {what} in region {region}: the credentials need "
            f"kms:Decrypt on its KMS key{said}"
        )
    if code in DENIED_CODES:
        return (
            f"access denied reading {what} in region {region}: the credentials need {action}{said}"
        )
    if code in THROTTLING_CODES:
        return (
            f"throttled by AWS reading {what} in region {region} ({code}); retried with backoff "
            "until the deadline: lower `concurrency` or raise the account's API rate limits"
        )
    if code in REJECTED_CREDENTIAL_CODES:
        return (
            f"AWS rejected the credentials reading {what} in region {region} ({code}): check the "
            f"access key, session token, clock and region{said}"
        )
    return f"AWS error {code or 'unknown'} reading {what} in region {region}{said}"


class AwsClient:
    """A boto3 client whose calls are retried, counted and bounded by the deadline."""

    def __init__(
        self, client: Any, region: str, endpoint: str, count_call: Callable[[], None]
    ) -> None:
        self.client = client
        self.region = region
        self.endpoint = endpoint
        self._count_call = count_call

    def call(
        self, operation: str, *, what: str, action: str, deadline: Deadline, **params: Any
    ) -> dict[str, Any]:
        method = getattr(self.client, operation)
        attempt = 0
        while True:
            attempt += 1
            if deadline.expired():
                raise SecretError(deadline.timeout_error(f"reading {what} from {self.endpoint}"))
            self._count_call()
            try:
                response: dict[str, Any] = method(**params)
                return response
            except botocore.exceptions.ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", ""))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
                retryable = code in THROTTLING_CODES or status >= 500
                if not retryable or not self._backoff(attempt, deadline, operation, code):
                    message = str(error.get("Message", ""))
                    raise AwsError(describe_error(code, message, what, self.region, action), code)
            except botocore.exceptions.ConnectionClosedError:
                # A kept-alive connection closed under us: worth one more try.
                if not self._backoff(attempt, deadline, operation, "connection closed"):
                    raise SecretError(f"{self.endpoint} closed the connection reading {what}")
            except botocore.exceptions.BotoCoreError as exc:
                raise SecretError(self._transport_error(exc, what, deadline))

    def _backoff(self, attempt: int, deadline: Deadline, operation: str, why: str) -> bool:
        """Sleep before the next attempt; False when out of attempts or of time."""
        if attempt >= MAX_ATTEMPTS:
            return False
        delay = random.uniform(0, min(BACKOFF_MAX, BACKOFF_BASE * 2**attempt))  # full jitter
        if delay >= deadline.remaining():
            return False
        log.debug("aws: %s: %s, retry %d in %.0f ms", operation, why, attempt, delay * 1000)
        time.sleep(deadline.cap(delay))
        return True

    def _transport_error(
        self, exc: botocore.exceptions.BotoCoreError, what: str, deadline: Deadline
    ) -> str:
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return f"no AWS credentials found reading {what}"
        if isinstance(
            exc, (botocore.exceptions.ConnectTimeoutError, botocore.exceptions.ReadTimeoutError)
        ):
            if deadline.remaining() < 0.5:
                return deadline.timeout_error(f"reading {what} from {self.endpoint}")
            return f"timed out reading {what} from {self.endpoint} (region {self.region})"
        if isinstance(exc, botocore.exceptions.ProxyConnectionError):
            # botocore masks any user:password in the proxy URL.
            proxy = exc.kwargs.get("proxy_url", "")
            return (
                f"cannot connect to the proxy {proxy} reading {what} from {self.endpoint}: "
                f"{network_cause(exc)}; check HTTPS_PROXY / HTTP_PROXY and NO_PROXY in the "
                "Agent's environment"
            )
        if isinstance(exc, botocore.exceptions.SSLError):
            return (
                f"cannot connect to {self.endpoint} reading {what} (region {self.region}): "
                f"{network_cause(exc)}; behind a TLS-inspecting proxy or with a private "
                "endpoint, point AWS_CA_BUNDLE (or ca_bundle in the AWS profile) at its CA"
            )
        if isinstance(exc, botocore.exceptions.EndpointConnectionError):
            return (
                f"cannot connect to {self.endpoint} reading {what} (region {self.region}): "
                f"{network_cause(exc)}; check network access, proxy settings and the "
                "region / endpoint_url"
            )
        return f"AWS request for {what} failed ({type(exc).__name__}): {scrub(str(exc))}"


# The services a run can need: ours, STS (AssumeRole, web identity) and SSO (SSO profiles).
SERVICES = frozenset({"secretsmanager", "ssm", "sts", "sso", "sso-oidc"})


class _OurServicesLoader(botocore.loaders.Loader):
    """botocore's data loader, except that listing the available services (done before each
    model is loaded) does not scan the data directories of all 400+ services (~50 ms per run
    in a pip install; the frozen bundle only ships the services above anyway)."""

    def list_available_services(self, type_name: str) -> list[str]:
        if type_name in ("service-2", "endpoint-rule-set-1"):
            return sorted(SERVICES)
        return list(super().list_available_services(type_name))


def connect(
    service: str,
    cfg: AwsSessionConfig,
    deadline: Deadline,
    count_call: Callable[[], None],
    max_connections: int = 10,
) -> AwsClient:
    """A client for `service` with credentials resolved now, within the deadline."""
    if bool(cfg.aws_access_key_id) != bool(cfg.aws_secret_access_key):
        given = "aws_access_key_id" if cfg.aws_access_key_id else "aws_secret_access_key"
        raise ConfigError(
            f"aws_session: {given} is set without its pair: set both aws_access_key_id and "
            "aws_secret_access_key, or neither to use the default credential chain"
        )
    if cfg.aws_external_id and not cfg.aws_role_arn:
        raise ConfigError("aws_session.aws_external_id is only used with aws_session.aws_role_arn")
    # botocore directly (boto3 is only a wrapper): ~50 ms less start-up per run.
    core = botocore.session.Session(profile=cfg.aws_profile or None)
    core.register_component("data_loader", _OurServicesLoader())
    # Short, single instance-metadata probe, unless the operator configured one.
    if not os.environ.get("AWS_METADATA_SERVICE_TIMEOUT"):
        core.set_config_variable("metadata_service_timeout", deadline.cap(METADATA_TIMEOUT))
    if not os.environ.get("AWS_METADATA_SERVICE_NUM_ATTEMPTS"):
        core.set_config_variable("metadata_service_num_attempts", 1)
    if cfg.aws_access_key_id and cfg.aws_secret_access_key:
        core.set_credentials(cfg.aws_access_key_id, cfg.aws_secret_access_key)
    try:
        # botocore reads AWS_DEFAULT_REGION only; the Go SDK (and so the published
        # implementations) read AWS_REGION first: honour both.
        region = (
            cfg.aws_region or os.environ.get("AWS_REGION") or core.get_config_variable("region")
        )
        credentials = core.get_credentials()
    except botocore.exceptions.ProfileNotFound:
        raise ConfigError(_profile_missing(cfg.aws_profile, core))
    except botocore.exceptions.BotoCoreError as exc:
        raise SecretError(
            f"AWS credentials could not be loaded ({type(exc).__name__}): {scrub(str(exc))}"
        )
    if not region:
        raise ConfigError(
            "no AWS region: set aws_session.aws_region in the backend config (or AWS_REGION "
            "/ AWS_DEFAULT_REGION in the Agent's environment, or region in the AWS profile)"
        )
    if credentials is None:
        raise SecretError(_no_credentials(cfg, core))
    client_config = botocore.config.Config(
        connect_timeout=deadline.cap(CONNECT_TIMEOUT),
        read_timeout=deadline.cap(deadline.remaining()),
        retries={"mode": "standard", "total_max_attempts": 1},  # AwsClient.call retries
        max_pool_connections=max(10, max_connections),
    )
    temporary: dict[str, Any] = {}
    if cfg.aws_role_arn:
        temporary = _assume_role(core, cfg, region, client_config, deadline, count_call)
    try:
        client = core.create_client(
            service,
            region_name=region,
            endpoint_url=cfg.endpoint_url or None,
            config=client_config,
            **temporary,
        )
    except (botocore.exceptions.BotoCoreError, ValueError) as exc:
        # e.g. an empty AWS_CA_BUNDLE or a malformed endpoint URL in the environment.
        raise ConfigError(
            f"cannot create the AWS {service} client in region {region} "
            f"({type(exc).__name__}): {scrub(str(exc))}; check aws_session.endpoint_url and "
            "the AWS_* variables in the Agent's environment (AWS_ENDPOINT_URL, AWS_CA_BUNDLE)"
        )
    return AwsClient(client, region, client.meta.endpoint_url, count_call)


def _assume_role(
    core: Any,
    cfg: AwsSessionConfig,
    region: str,
    client_config: Any,
    deadline: Deadline,
    count_call: Callable[[], None],
) -> dict[str, Any]:
    """One STS AssumeRole; the temporary credentials as create_client() arguments."""
    sts = AwsClient(
        core.create_client("sts", region_name=region, config=client_config),
        region,
        "STS",
        count_call,
    )
    params: dict[str, Any] = {
        "RoleArn": cfg.aws_role_arn,
        "RoleSessionName": "datadog-secret-backend",
    }
    if cfg.aws_external_id:
        params["ExternalId"] = cfg.aws_external_id
    answer = sts.call(
        "assume_role",
        what=f"role {cfg.aws_role_arn}",
        action="sts:AssumeRole on the role (and a trust policy allowing these credentials)",
        deadline=deadline,
        **params,
    )
    temporary = answer["Credentials"]
    return {
        "aws_access_key_id": temporary["AccessKeyId"],
        "aws_secret_access_key": temporary["SecretAccessKey"],
        "aws_session_token": temporary["SessionToken"],
    }


def _profile_missing(profile: str | None, core: Any) -> str:
    files = (
        f"{core.get_config_variable('config_file')}, {core.get_config_variable('credentials_file')}"
    )
    if profile:
        return f'aws_session.aws_profile: profile "{profile}" not found in {files}'
    return (
        f'AWS profile "{core.get_config_variable("profile")}" (from AWS_PROFILE in the '
        f"environment) not found in {files}"
    )


def _no_credentials(cfg: AwsSessionConfig, core: Any) -> str:
    profile = cfg.aws_profile or core.get_config_variable("profile") or "default"
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        imds = "EC2 instance metadata (disabled by AWS_EC2_METADATA_DISABLED)"
    else:
        imds = "EC2 instance metadata (no answer: not on EC2, or IMDS unreachable)"
    return (
        "no AWS credentials found; looked in: aws_session.aws_access_key_id/"
        "aws_secret_access_key, the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), "
        "web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), profile "
        f'"{profile}" in {core.get_config_variable("credentials_file")} and '
        f"{core.get_config_variable('config_file')}, container credentials "
        f"(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/FULL_URI), {imds}. Give the Agent's host an "
        "instance profile / IRSA role, or set credentials in aws_session or the environment"
    )
