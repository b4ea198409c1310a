"""`check --datadog-yaml`: every ENC[] handle of an Agent configuration, resolved and reported
without its value, through the real command line."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import run_cli

SECRETS = {"api_key": "0123456789abcdef0123456789abcdef", "db_password": "hunter2!", "empty": ""}


def short(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


def check(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = run_cli(b"", args=["check", *args], env=env)
    assert result.stderr == "", result.stderr
    return result.returncode, result.stdout.decode()


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    """An /etc/datadog-agent look-alike: datadog.yaml (file.json backend) and conf.d."""
    (tmp_path / "secrets.json").write_text(json.dumps(SECRETS))
    (tmp_path / "datadog.yaml").write_text(
        "api_key: ENC[api_key]\n"
        "site: datadoghq.com\n"
        "secret_backend_type: file.json\n"
        "secret_backend_config:\n"
        f"  file_path: {tmp_path / 'secrets.json'}\n"
    )
    confd = tmp_path / "conf.d" / "postgres.d"
    confd.mkdir(parents=True)
    (confd / "conf.yaml").write_text(
        "init_config:\n"
        "instances:\n"
        "  - host: localhost\n"
        "    password: ' ENC[db_password]\t'\n"
        "    tags: [plain, 'ENC[api_key]']\n"
    )
    (confd / "conf.yaml.example").write_text("instances:\n  - password: ENC[not_scanned]\n")
    return tmp_path


def line_for(out: str, handle: str) -> str:
    lines = [line for line in out.splitlines() if f"ENC[{handle}]" in line]
    assert len(lines) == 1, out
    return lines[0]


def test_every_handle_found_and_resolved(agent_dir: Path) -> None:
    code, out = check("--datadog-yaml", str(agent_dir / "datadog.yaml"), "--confd", str(agent_dir))
    assert code == 0, out
    conf = agent_dir / "conf.d" / "postgres.d" / "conf.yaml"
    api = line_for(out, "api_key")
    assert api.startswith(f"ok   ENC[api_key] at {agent_dir / 'datadog.yaml'}:1 api_key; ")
    assert f"{conf}:5 instances[0].tags[1]" in api
    assert f"length 32, sha256 {short(SECRETS['api_key'])}..." in api
    db = line_for(out, "db_password")
    assert db.startswith(f"ok   ENC[db_password] at {conf}:4 instances[0].password: ")
    assert re.search(r": \d+ ms, length 8, sha256 " + short("hunter2!"), db)
    assert "not_scanned" not in out  # only *.yaml, as the Agent
    assert "mode typed (file.json), 2 distinct handles, secret_backend_timeout 30s" in out
    assert "2 handles: 2 ok, 0 failed" in out
    for value in SECRETS.values():
        if value:
            assert value not in out


def test_failures_are_reported_and_fail_the_check(agent_dir: Path) -> None:
    conf = agent_dir / "conf.d" / "extra.yaml"
    conf.write_text("a: ENC[empty]\nb:\n  c: ENC[missing]\n")
    code, out = check("--datadog-yaml", str(agent_dir / "datadog.yaml"), "--confd", str(agent_dir))
    assert code == 5
    assert line_for(out, "empty").startswith(f"FAIL ENC[empty] at {conf}:1 a: ")
    assert "the secret is empty" in line_for(out, "empty")
    missing = line_for(out, "missing")
    assert missing.startswith(f"FAIL ENC[missing] at {conf}:3 b.c: ")
    assert 'backend does not provide secret key "missing"' in missing
    assert "4 handles: 2 ok, 2 failed" in out


def test_command_rights_and_sha256_are_checked(agent_dir: Path) -> None:
    command = agent_dir / "bin" / "datadog-secret-backend"
    command.parent.mkdir()
    command.write_text("#!/bin/sh\n")
    command.chmod(0o700)
    digest = hashlib.sha256(command.read_bytes()).hexdigest()
    datadog_yaml = agent_dir / "datadog.yaml"
    base = datadog_yaml.read_text()
    datadog_yaml.write_text(base + f"secret_backend_command: {command}\n")
    code, out = check("--datadog-yaml", str(datadog_yaml))
    assert code == 0, out
    assert f"ok   '{command}' (mode 0700" in out
    assert f"sha256 {digest}" in out

    command.chmod(0o755)
    code, out = check("--datadog-yaml", str(datadog_yaml))
    assert code == 5
    assert f"invalid executable '{command}', 'group' or 'others' have rights on it" in out
    assert "ok   ENC[api_key]" in out  # the handles are still checked

    command.chmod(0o750)
    datadog_yaml.write_text(
        base + f"secret_backend_command: {command}\n"
        "secret_backend_command_allow_group_exec_perm: true\n"
        f"secret_backend_command_sha256: '{'0' * 64}'\n"  # quoted, or YAML reads 0
    )
    code, out = check("--datadog-yaml", str(datadog_yaml))
    assert code == 5
    assert f"ok   '{command}' (mode 0750" in out
    wrong = f"FAIL secret_backend_command_sha256 is {'0' * 64} but the file's SHA-256 is"
    assert f"{wrong} {digest}" in out


def test_multi_backend_file_next_to_the_command(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "datadog-secret-backend.yaml").write_text(
        "backends:\n  env:\n    backend_type: env\n"
    )
    datadog_yaml = tmp_path / "datadog.yaml"
    datadog_yaml.write_text(
        f"secret_backend_command: {tmp_path / 'bin' / 'datadog-secret-backend'}\n"
        "api_key: ENC[env:SB_CHECK_KEY]\napp_key: ENC[nocolon]\n"
    )
    code, out = check("--datadog-yaml", str(datadog_yaml), env={"SB_CHECK_KEY": "k3y-value"})
    assert code == 5  # the command itself does not exist, and one handle is malformed
    assert "can't stat it: no such file or directory" in out
    assert f"mode multi-backend ({tmp_path / 'bin' / 'datadog-secret-backend.yaml'})" in out
    assert line_for(out, "env:SB_CHECK_KEY").startswith("ok   ")
    assert 'invalid handle "nocolon"' in line_for(out, "nocolon")
    assert "k3y-value" not in out


def test_arguments_select_the_mode(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("tok\n")
    multi = tmp_path / "backends.yaml"
    multi.write_text(
        f"backends:\n  f:\n    backend_type: file.text\n    secrets_path: {tmp_path}\n"
    )
    datadog_yaml = tmp_path / "datadog.yaml"
    datadog_yaml.write_text(
        f"secret_backend_arguments: [--with-provider-prefixes, {tmp_path}]\n"
        "secret_backend_remove_trailing_line_break: true\n"
        f"a: ENC[file@{tmp_path / 'token'}]\nb: ENC[token]\n"
    )
    code, out = check("--datadog-yaml", str(datadog_yaml))
    assert code == 0, out
    assert "mode provider-prefix" in out
    assert f"length 3, sha256 {short('tok')}" in line_for(out, "token")  # line break cut

    datadog_yaml.write_text(f"secret_backend_arguments: ['-config', '{multi}']\na: ENC[f:token]\n")
    code, out = check("--datadog-yaml", str(datadog_yaml))
    assert code == 0, out
    assert f"mode multi-backend ({multi})" in out
    assert f"length 4, sha256 {short('tok' + chr(10))}" in line_for(out, "f:token")


def test_environment_overrides(agent_dir: Path) -> None:
    other = agent_dir / "other.json"
    other.write_text(json.dumps({"api_key": "from-env-config"}))
    code, out = check(
        "--datadog-yaml",
        str(agent_dir / "datadog.yaml"),
        env={"DD_SECRET_BACKEND_CONFIG": json.dumps({"file_path": str(other)})},
    )
    assert code == 0, out
    assert f"length 15, sha256 {short('from-env-config')}" in line_for(out, "api_key")


def test_no_handles(tmp_path: Path) -> None:
    (tmp_path / "datadog.yaml").write_text("api_key: plain\n")
    code, out = check("--datadog-yaml", str(tmp_path / "datadog.yaml"))
    assert code == 0
    assert f"no ENC[] handle found in {tmp_path / 'datadog.yaml'}" in out


def test_unreadable_configuration(tmp_path: Path) -> None:
    code, out = check("--datadog-yaml", str(tmp_path / "missing.yaml"))
    assert code == 5
    assert "FAIL cannot read" in out
    (tmp_path / "datadog.yaml").write_text("api_key: ENC[a]\n")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "bad.yaml").write_text("a: [1,\n")
    code, out = check(
        "--datadog-yaml", str(tmp_path / "datadog.yaml"), "--confd", str(tmp_path / "conf.d")
    )
    assert code == 5
    assert f"FAIL {tmp_path / 'conf.d' / 'bad.yaml'} is not valid YAML at line" in out


# --- AWS Secrets Manager through a real moto server -------------------------------------

AWS_PRESENT = importlib.util.find_spec("backends.aws_secrets") is not None


@pytest.fixture(scope="module")
def moto_env() -> Iterator[dict[str, str]]:
    from tests.moto_server import moto_with_secrets

    with moto_with_secrets({"prod/db": '{"user": "app", "password": "s3cr3t!"}'}) as env:
        yield env


@pytest.mark.skipif(not AWS_PRESENT, reason="backends/aws_secrets.py is not in this tree yet")
def test_aws_secrets_handles(tmp_path: Path, moto_env: dict[str, str]) -> None:
    datadog_yaml = tmp_path / "datadog.yaml"
    datadog_yaml.write_text(
        "secret_backend_type: aws.secrets\n"
        "secret_backend_config:\n  aws_session:\n    aws_region: us-east-1\n"
        "api_key: ENC[prod/db;password]\nuser: ENC[prod/db;user]\nbad: ENC[prod/nope;x]\n"
    )
    code, out = check("--datadog-yaml", str(datadog_yaml), env=moto_env)
    assert code == 5, out  # prod/nope does not exist
    assert f"length 7, sha256 {short('s3cr3t!')}" in line_for(out, "prod/db;password")
    assert f"length 3, sha256 {short('app')}" in line_for(out, "prod/db;user")
    assert line_for(out, "prod/nope;x").startswith("FAIL ")
    assert "s3cr3t!" not in out
