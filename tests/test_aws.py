"""aws.secrets and aws.ssm against a real moto server, through the real executable.

Requests go executable -> CountingProxy (counts operations, injects AWS errors) -> moto.
Every test uses its own name prefix, so tests share one moto server per xdist worker.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.helpers import free_port, make_request, run_cli
from tests.moto_server import CountingProxy, moto_url  # noqa: F401  (fixture)
from tests.proxy import TcpProxy

REGION = "us-east-1"
KEY_ID, SECRET_KEY = "AKIAEXAMPLEKEY123456", "dummy-secret-access-key-must-not-leak"

DB = {
    "user": "admin",
    "password": "p@ss;word",
    "port": 3306,
    "ratio": 0.75,
    "price": 1.50,
    "pi": 123456789.123456789,
    "big": 12345678901234567890,
    "enabled": True,
    "disabled": False,
    "nested": {"a": {"b": [1, "x"]}},
}
# The JSON text as stored, so numbers keep the exact spelling users wrote.
DB_TEXT = (
    '{"user": "admin", "password": "p@ss;word", "port": 3306, "ratio": 0.75, "price": 1.50, '
    '"pi": 123456789.123456789, "big": 12345678901234567890, "enabled": true, '
    '"disabled": false, "nested": {"a": {"b": [1, "x"]}}}'
)


@pytest.fixture
def proxy(moto_url: str) -> Iterator[CountingProxy]:  # noqa: F811
    with CountingProxy(moto_url) as p:
        yield p


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def env(proxy: CountingProxy, tmp_path: Path) -> dict[str, str]:
    """Dummy credentials, no shared files, no instance metadata, AWS reached via the proxy."""
    return {
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": "",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_ENDPOINT_URL": proxy.url,
    }


def client(service: str, moto_url: str) -> Any:  # noqa: F811
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def sm(moto_url: str) -> Any:  # noqa: F811
    return client("secretsmanager", moto_url)


@pytest.fixture
def ssm(moto_url: str) -> Any:  # noqa: F811
    return client("ssm", moto_url)


def secrets_request(handles: list[str], **config: Any) -> dict[str, Any]:
    return make_request(handles, type="aws.secrets", config=config, timeout=20)


def ssm_request(handles: list[str], **config: Any) -> dict[str, Any]:
    return make_request(handles, type="aws.ssm", config=config, timeout=20)


# -- aws.secrets: values -----------------------------------------------------------------


def test_json_secret_keys_numbers_booleans_nested(sm, env, proxy, prefix):
    sm.create_secret(Name=f"{prefix}/db", SecretString=DB_TEXT)
    keys = ["user", "password", "port", "ratio", "price", "pi", "big", "enabled", "disabled"]
    handles = [f"{prefix}/db;{k}" for k in [*keys, "nested"]]
    result = run_cli(secrets_request(handles), env=env)
    got = {h.split(";")[1]: result.value(h) for h in handles}
    assert got == {
        "user": "admin",
        "password": "p@ss;word",
        "port": "3306",
        "ratio": "0.75",
        "price": "1.50",
        "pi": "123456789.123456789",
        "big": "12345678901234567890",
        "enabled": "true",
        "disabled": "false",
        "nested": '{"a":{"b":[1,"x"]}}',
    }
    # Ten handles on one secret: one GetSecretValue, no batch call.
    assert proxy.operations == ["GetSecretValue"]


def test_plain_text_secret_any_key_and_force_string(sm, env, prefix):
    sm.create_secret(Name=f"{prefix}/plain", SecretString="just-a-token")
    sm.create_secret(Name=f"{prefix}/db", SecretString=DB_TEXT)
    handles = [f"{prefix}/plain;anything", f"{prefix}/plain;", f"{prefix}/db;user"]
    result = run_cli(secrets_request(handles), env=env)
    assert result.value(handles[0]) == "just-a-token"
    assert result.value(handles[1]) == "just-a-token"
    forced = run_cli(secrets_request(handles, force_string=True), env=env)
    assert forced.value(f"{prefix}/db;user") == DB_TEXT
    assert forced.value(handles[0]) == "just-a-token"


def test_missing_secret_missing_key_bad_handle(sm, env, proxy, prefix):
    sm.create_secret(Name=f"{prefix}/db", SecretString=DB_TEXT)
    handles = [f"{prefix}/db;user", f"{prefix}/db;nope", f"{prefix}/gone;user", "no-separator"]
    result = run_cli(secrets_request(handles), env=env)
    assert result.value(handles[0]) == "admin"
    assert result.error(handles[1]).startswith(
        f'backend does not provide secret key "nope" in secret "{prefix}/db"'
    )
    missing = result.error(handles[2])
    assert f'secret "{prefix}/gone" not found in region {REGION}' in missing
    assert result.error("no-separator") == "invalid secret format, expected 'secret_id;key'"
    # Two ids: one BatchGetSecretValue, whose per-id Errors became the missing one's error.
    assert proxy.operations == ["BatchGetSecretValue"]


def test_binary_secrets(sm, env, prefix):
    sm.create_secret(Name=f"{prefix}/bin-text", SecretBinary="héllo".encode())
    sm.create_secret(Name=f"{prefix}/bin-raw", SecretBinary=b"\xff\xfe\x00\x81")
    handles = [f"{prefix}/bin-text;x", f"{prefix}/bin-raw;x"]
    for config in ({}, {"batch": False}):
        result = run_cli(secrets_request(handles, **config), env=env)
        assert result.value(handles[0]) == "héllo"
        error = result.error(handles[1])
        assert "binary data (4 bytes) that is not UTF-8 text" in error
        assert f"{prefix}/bin-raw" in error


def test_arn_and_name_in_one_batch(sm, env, prefix):
    arn = sm.create_secret(Name=f"{prefix}/a", SecretString='{"k": "A"}')["ARN"]
    sm.create_secret(Name=f"{prefix}/b", SecretString='{"k": "B"}')
    result = run_cli(secrets_request([f"{arn};k", f"{prefix}/b;k"]), env=env)
    assert result.value(f"{arn};k") == "A"
    assert result.value(f"{prefix}/b;k") == "B"


# -- aws.secrets: request counts, fallback, retries --------------------------------------


def test_twenty_handles_over_five_secrets_cost_one_batch_call(sm, env, proxy, prefix):
    for i in range(5):
        body = {f"k{j}": f"value-{i}-{j}" for j in range(4)}
        sm.create_secret(Name=f"{prefix}/s{i}", SecretString=json.dumps(body))
    handles = [f"{prefix}/s{i};k{j}" for i in range(5) for j in range(4)]
    result = run_cli(secrets_request(handles), env=env)
    for i in range(5):
        for j in range(4):
            assert result.value(f"{prefix}/s{i};k{j}") == f"value-{i}-{j}"
    assert proxy.operations == ["BatchGetSecretValue"]


def test_access_denied_on_batch_falls_back_to_single_calls(sm, env, proxy, prefix):
    for i in range(25):
        sm.create_secret(Name=f"{prefix}/s{i}", SecretString=f"v{i}")
    proxy.fail(
        "BatchGetSecretValue",
        "AccessDeniedException",
        times=None,
        message="User: arn:aws:iam::123456789012:user/agent is not authorized to perform: "
        "secretsmanager:BatchGetSecretValue",
    )
    handles = [f"{prefix}/s{i};_" for i in range(25)]
    # concurrency 1: chunks run one after the other, so the second chunk (5 ids) already
    # knows that batch calls are denied.
    result = run_cli(secrets_request(handles, concurrency=1), env=env)
    for i in range(25):
        assert result.value(f"{prefix}/s{i};_") == f"v{i}"
    assert proxy.count("BatchGetSecretValue") == 1
    assert proxy.count("GetSecretValue") == 25


def test_batch_false_uses_single_calls(sm, env, proxy, prefix):
    for i in range(3):
        sm.create_secret(Name=f"{prefix}/s{i}", SecretString=f"v{i}")
    handles = [f"{prefix}/s{i};x" for i in range(3)] + [f"{prefix}/s0;y"]
    result = run_cli(secrets_request(handles, batch=False), env=env)
    assert [result.value(h) for h in handles] == ["v0", "v1", "v2", "v0"]
    assert sorted(proxy.operations) == ["GetSecretValue"] * 3


def test_throttling_and_5xx_are_retried(sm, env, proxy, prefix):
    sm.create_secret(Name=f"{prefix}/a", SecretString="A")
    sm.create_secret(Name=f"{prefix}/b", SecretString="B")
    proxy.fail("GetSecretValue", "ThrottlingException", times=2)
    proxy.fail("BatchGetSecretValue", "InternalServiceError", status=500, times=1)
    one = run_cli(secrets_request([f"{prefix}/a;x"]), env=env)
    assert one.value(f"{prefix}/a;x") == "A"
    assert proxy.count("GetSecretValue") == 3
    two = run_cli(secrets_request([f"{prefix}/a;x", f"{prefix}/b;x"]), env=env)
    assert two.value(f"{prefix}/b;x") == "B"
    assert proxy.count("BatchGetSecretValue") == 2


def test_endless_throttling_stops_at_the_deadline(sm, env, proxy, prefix):
    proxy.fail("GetSecretValue", "TooManyRequestsException", times=None)
    request = make_request([f"{prefix}/a;x"], type="aws.secrets", config={}, timeout=5)
    result = run_cli(request, env=env)
    error = result.error(f"{prefix}/a;x")
    assert f'throttled by AWS reading secret "{prefix}/a" in region {REGION}' in error
    assert result.seconds < 5  # answered before the Agent would kill us
    assert 2 <= proxy.count("GetSecretValue") <= 6


def test_access_denied_names_the_iam_action(env, proxy, prefix):
    proxy.fail("GetSecretValue", "AccessDeniedException", times=1)
    proxy.fail(
        "GetSecretValue", "AccessDeniedException", times=1, message="Access to KMS is not allowed"
    )
    handle = f"{prefix}/x;k"
    first = run_cli(secrets_request([handle]), env=env).error(handle)
    assert f'access denied reading secret "{prefix}/x" in region {REGION}' in first
    assert "secretsmanager:GetSecretValue" in first
    second = run_cli(secrets_request([handle]), env=env).error(handle)
    assert "kms:Decrypt" in second


def test_unreachable_endpoint_times_out_within_the_deadline(env, prefix):
    with TcpProxy(1) as blackhole:
        blackhole.mode = "blackhole"
        request = make_request([f"{prefix}/a;x"], type="aws.secrets", config={}, timeout=5)
        result = run_cli(request, env={**env, "AWS_ENDPOINT_URL": blackhole.url})
    assert "timed out" in result.error(f"{prefix}/a;x")
    assert result.seconds < 5  # answered before the Agent would kill us


def test_unreachable_proxy_is_named_with_the_regional_endpoint(env, prefix):
    # No endpoint_url: the region's real endpoint, reached through a proxy that refuses.
    proxy = f"http://agent:proxy-password@127.0.0.1:{free_port()}"
    proxied = {**env, "AWS_ENDPOINT_URL": "", "HTTPS_PROXY": proxy, "https_proxy": proxy}
    proxied.update({"NO_PROXY": "", "no_proxy": "", "AWS_REGION": "eu-west-3"})
    result = run_cli(make_request([f"{prefix}/a;x"], type="aws.secrets", config={}), env=proxied)
    error = result.error(f"{prefix}/a;x")
    assert "cannot connect to the proxy" in error and "connection refused" in error
    assert "https://secretsmanager.eu-west-3.amazonaws.com" in error
    assert "proxy-password" not in error + result.stderr


# -- sessions and credentials ------------------------------------------------------------


def test_endpoint_url_and_static_keys_in_config(sm, env, proxy, prefix):
    sm.create_secret(Name=f"{prefix}/a", SecretString="A")
    bare = {**env, "AWS_ENDPOINT_URL": "", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    session = {
        "aws_region": REGION,
        "endpoint_url": proxy.url,
        "aws_access_key_id": KEY_ID,
        "aws_secret_access_key": SECRET_KEY,
    }
    result = run_cli(secrets_request([f"{prefix}/a;x"], aws_session=session), env=bare)
    assert result.value(f"{prefix}/a;x") == "A"
    assert proxy.operations == ["GetSecretValue"]


def test_profile_from_shared_files(sm, env, tmp_path, prefix):
    sm.create_secret(Name=f"{prefix}/a", SecretString="A")
    config = tmp_path / "config"
    config.write_text(
        f"[profile agent]\nregion = {REGION}\naws_access_key_id = {KEY_ID}\n"
        f"aws_secret_access_key = {SECRET_KEY}\n"
    )
    # The region comes from the profile: leave the region variables unset.
    bare = {k: v for k, v in env.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    bare.update(AWS_CONFIG_FILE=str(config), AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    ok = run_cli(secrets_request([f"{prefix}/a;x"], aws_session={"aws_profile": "agent"}), env=bare)
    assert ok.value(f"{prefix}/a;x") == "A"
    bad = run_cli(secrets_request(["a;x"], aws_session={"aws_profile": "nope"}), env=bare)
    assert bad.error(
        "a;x"
    ) == f'aws_session.aws_profile: profile "nope" not found in {config}, ' + str(
        tmp_path / "no-credentials"
    )


def test_assume_role_with_external_id(sm, env, proxy, prefix):
    sm.create_secret(Name=f"{prefix}/a", SecretString="A")
    session = {
        "aws_role_arn": "arn:aws:iam::123456789012:role/datadog-agent",
        "aws_external_id": "ext-123",
    }
    result = run_cli(secrets_request([f"{prefix}/a;x"], aws_session=session), env=env)
    assert result.value(f"{prefix}/a;x") == "A"
    assert proxy.operations == ["AssumeRole", "GetSecretValue"]


def test_region_from_aws_region_alone(sm, env, prefix):
    sm.create_secret(Name=f"{prefix}/a", SecretString="A")
    only = {k: v for k, v in env.items() if k != "AWS_DEFAULT_REGION"}
    result = run_cli(secrets_request([f"{prefix}/a;x"]), env=only)
    assert result.value(f"{prefix}/a;x") == "A"


def test_config_errors(env):
    handle = "a;x"
    cases = [
        (
            {"aws_session": {"aws_access_key_id": KEY_ID}},
            "aws_access_key_id is set without its pair",
        ),
        ({"aws_session": {"aws_external_id": "e"}}, "aws_external_id is only used with"),
        (
            {"aws_session": {"aws_regoin": "x"}},
            'config.aws_session.aws_regoin: unknown setting (did you mean "aws_region"?)',
        ),
        ({"batch": "maybe"}, "config.batch: expected a boolean"),
    ]
    for config, expected in cases:
        assert expected in run_cli(secrets_request([handle], **config), env=env).error(handle)
    bad_endpoint = {"aws_session": {"aws_region": "us-east-1", "endpoint_url": "not a url"}}
    error = run_cli(secrets_request([handle], **bad_endpoint), env=env).error(handle)
    assert "cannot create the AWS secretsmanager client" in error and "not a url" in error
    error = run_cli(secrets_request([handle]), env={**env, "AWS_CA_BUNDLE": ""}).error(handle)
    assert "Invalid CA bundle" in error and "AWS_CA_BUNDLE" in error
    no_region = {**env, "AWS_REGION": "", "AWS_DEFAULT_REGION": ""}
    error = run_cli(secrets_request([handle]), env=no_region).error(handle)
    assert "no AWS region: set aws_session.aws_region" in error
    assert "AWS_REGION" in error


def test_no_credentials_fails_fast_and_says_where_it_looked(env):
    handle = "a;x"
    bare = {**env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    error = run_cli(secrets_request([handle]), env=bare).error(handle)
    assert error.startswith("no AWS credentials found; looked in:")
    assert "AWS_EC2_METADATA_DISABLED" in error
    # Off-cloud: instance metadata does not answer; the probe is short and bounded.
    with TcpProxy(1) as imds:
        imds.mode = "blackhole"
        off_cloud = {
            **bare,
            "AWS_EC2_METADATA_DISABLED": "",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url,
        }
        result = run_cli(secrets_request([handle]), env=off_cloud)
    assert result.error(handle).startswith("no AWS credentials found; looked in:")
    assert "EC2 instance metadata (no answer" in result.error(handle)
    assert result.seconds < 10  # the request allows 20 s


def test_no_secret_or_credential_in_output_or_debug_log(sm, env, prefix):
    sm.create_secret(Name=f"{prefix}/db", SecretString=DB_TEXT)
    handles = [f"{prefix}/db;password", f"{prefix}/db;missing", f"{prefix}/gone;x"]
    session = {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET_KEY}
    result = run_cli(secrets_request(handles, aws_session=session), args=["--debug"], env=env)
    errors = " ".join(result.error(h) for h in handles[1:])
    for leak in (SECRET_KEY, KEY_ID, "p@ss;word", "admin"):
        assert leak not in result.stderr
        assert leak not in errors


# -- v0 multi-backend file mode -----------------------------------------------------------


def test_v0_file_mode_secret_id_and_whole_value(sm, env, proxy, tmp_path, prefix):
    sm.create_secret(Name=f"{prefix}/prod", SecretString=DB_TEXT)
    config = tmp_path / "datadog-secret-backend.yaml"
    config.write_text(
        "backends:\n"
        f"  prod:\n    backend_type: aws.secrets\n    secret_id: {prefix}/prod\n"
        f"    aws_session: {{aws_region: {REGION}, endpoint_url: '{proxy.url}'}}\n"
        f"  raw:\n    backend_type: aws.secrets\n    secret_id: {prefix}/prod\n"
        "    force_string: true\n"
    )
    handles = ["prod:user", "prod:port", "prod:_", "prod:nope", "raw:user"]
    result = run_cli(make_request(handles), args=["--config", str(config)], env=env)
    assert result.value("prod:user") == "admin"
    assert result.value("prod:port") == "3306"
    assert result.value("prod:_") == DB_TEXT
    assert result.value("raw:user") == DB_TEXT
    assert "backend does not provide secret key" in result.error("prod:nope")
    assert proxy.count("GetSecretValue") == 2  # one per backend, whatever the handles


def test_v0_file_mode_parameter_path_and_parameters(ssm, env, proxy, tmp_path, prefix):
    base = f"/{prefix}/prod"
    for i in range(15):  # more than one page of GetParametersByPath
        ssm.put_parameter(Name=f"{base}/p{i}", Value=f"v{i}", Type="String")
    ssm.put_parameter(Name=f"{base}/db/password", Value="s3cret", Type="SecureString")
    ssm.put_parameter(Name=f"/{prefix}/other", Value="other", Type="String")
    config = tmp_path / "datadog-secret-backend.yaml"
    config.write_text(
        "backends:\n"
        f"  prod:\n    backend_type: aws.ssm\n    parameter_path: {base}\n"
        f"  list:\n    backend_type: aws.ssm\n    parameters: [/{prefix}/other]\n"
    )
    handles = [
        f"prod:{base}/p3",  # full name, as v0
        "prod:p14",  # relative to the path
        "prod:db/password",
        "prod:nope",
        f"list:/{prefix}/other",
        f"list:{base}/p1",
    ]
    result = run_cli(make_request(handles), args=["--config", str(config)], env=env)
    assert result.value(f"prod:{base}/p3") == "v3"
    assert result.value("prod:p14") == "v14"
    assert result.value("prod:db/password") == "s3cret"
    assert f'parameter "nope" not found under parameter_path "{base}"' in result.error("prod:nope")
    assert result.value(f"list:/{prefix}/other") == "other"
    assert "not in this backend's `parameters` list" in result.error(f"list:{base}/p1")
    assert proxy.count("GetParametersByPath") == 2  # 16 parameters, 10 per page
    assert proxy.count("GetParameters") == 1


# -- aws.ssm --------------------------------------------------------------------------------


def test_ssm_types_and_missing_names(ssm, env, proxy, prefix):
    ssm.put_parameter(Name=f"/{prefix}/api_key", Value="s3cret-key", Type="SecureString")
    ssm.put_parameter(Name=f"/{prefix}/site", Value="datadoghq.eu", Type="String")
    ssm.put_parameter(Name=f"/{prefix}/tags", Value="a,b,c", Type="StringList")
    handles = [f"/{prefix}/api_key", f"/{prefix}/site", f"/{prefix}/tags", f"/{prefix}/missing"]
    result = run_cli(ssm_request(handles), env=env)
    assert result.value(handles[0]) == "s3cret-key"
    assert result.value(handles[1]) == "datadoghq.eu"
    assert result.value(handles[2]) == "a,b,c"
    missing = result.error(handles[3])
    assert f'parameter "/{prefix}/missing" not found in region {REGION}' in missing
    assert proxy.operations == ["GetParameters"]


def test_ssm_25_names_cost_3_calls(ssm, env, proxy, prefix):
    for i in range(25):
        ssm.put_parameter(Name=f"/{prefix}/p{i}", Value=f"v{i}", Type="SecureString")
    handles = [f"/{prefix}/p{i}" for i in range(25)]
    result = run_cli(ssm_request(handles), env=env)
    assert [result.value(h) for h in handles] == [f"v{i}" for i in range(25)]
    assert proxy.operations == ["GetParameters"] * 3


def test_ssm_access_denied_and_throttling(ssm, env, proxy, prefix):
    ssm.put_parameter(Name=f"/{prefix}/a", Value="A", Type="String")
    proxy.fail("GetParameters", "ThrottlingException", times=1)
    assert run_cli(ssm_request([f"/{prefix}/a"]), env=env).value(f"/{prefix}/a") == "A"
    assert proxy.count("GetParameters") == 2
    proxy.fail("GetParameters", "AccessDeniedException", times=1)
    error = run_cli(ssm_request([f"/{prefix}/a"]), env=env).error(f"/{prefix}/a")
    assert f'access denied reading parameter "/{prefix}/a" in region {REGION}' in error
    assert "ssm:GetParameters" in error


def test_batch_answers_are_matched_by_name_full_or_partial_arn():
    from backends.aws_secrets import _match

    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf"
    entry = {"Name": "prod/db", "ARN": arn}
    assert _match(entry, ["other", "prod/db"]) == "prod/db"
    assert _match(entry, ["other", arn]) == arn
    partial = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db"
    assert _match(entry, [partial]) == partial
    assert (
        _match(entry, ["prod/d", "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod"])
        is None
    )
