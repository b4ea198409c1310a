"""Load: 50 simultaneous runs against moto and OpenBao, as a fleet refresh or an
autodiscovery burst looks on one host.

Every run asks for its own secrets plus one shared secret, so a run that answered with
another run's data (shared temporary state, a cache file) would show a wrong value. Every
run gets a private, empty TMPDIR, HOME and working directory, which must still be empty
afterwards: nothing is left behind.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.helpers import Result, make_request, run_cli
from tests.moto_server import moto_url
from tests.openbao_server import ApiError, OpenBao, openbao

__all__ = ["moto_url", "openbao"]  # fixtures

# 50 interpreters starting at once starve any other test of CPU, and the fault tests measure
# answers against 1-second deadlines: `make test` runs these after the parallel suite.
pytestmark = pytest.mark.exclusive

RUNS = 50
TIMEOUT = 60  # secret_backend_timeout: 50 interpreters share the machine's cores


def burst(
    tmp_path: Path, requests: list[dict[str, Any]], env: dict[str, str]
) -> list[tuple[Result, Path]]:
    """Start every run at once; return each result with its private directory."""

    def one(index: int) -> tuple[Result, Path]:
        home = tmp_path / f"run{index}"
        for sub in ("tmp", "home", "cwd"):
            (home / sub).mkdir(parents=True)
        run_env = {**env, "TMPDIR": str(home / "tmp"), "HOME": str(home / "home")}
        result = run_cli(requests[index], env=run_env, cwd=home / "cwd", timeout=TIMEOUT + 30)
        return result, home

    with cf.ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, range(len(requests))))


def run_requests(prefix: str, type_name: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Run i asks for its own secret s{i} (5 keys) and the shared one."""
    return [
        make_request(
            [f"{prefix}/s{i};k{j}" for j in range(5)] + [f"{prefix}/shared;k"],
            type=type_name,
            config=config,
            timeout=TIMEOUT,
        )
        for i in range(RUNS)
    ]


def check_runs(results: list[tuple[Result, Path]], prefix: str) -> None:
    """Every run got its own values and the shared one, in time, and left nothing behind."""
    for i, (result, _) in enumerate(results):
        assert result.returncode == 0, result.stderr
        for j in range(5):
            assert result.value(f"{prefix}/s{i};k{j}") == f"run{i}-key{j}"
        assert result.value(f"{prefix}/shared;k") == "shared-value"
        assert result.seconds < TIMEOUT
    check_nothing_left(results)


def check_nothing_left(results: list[tuple[Result, Path]]) -> None:
    for _, home in results:
        for sub in ("tmp", "home", "cwd"):
            left = sorted(p.name for p in (home / sub).iterdir())
            assert left == [], f"{home / sub}: {left}"


def test_fifty_simultaneous_aws_runs(moto_url: str, tmp_path: Path) -> None:
    prefix = f"load/{uuid.uuid4().hex[:8]}"
    sm = boto3.client(
        "secretsmanager",
        region_name="us-east-1",
        endpoint_url=moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    sm.create_secret(Name=f"{prefix}/shared", SecretString=json.dumps({"k": "shared-value"}))
    for i in range(RUNS):
        body = {f"k{j}": f"run{i}-key{j}" for j in range(5)}
        sm.create_secret(Name=f"{prefix}/s{i}", SecretString=json.dumps(body))
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_ENDPOINT_URL": moto_url,
    }
    check_runs(burst(tmp_path, run_requests(prefix, "aws.secrets", {}), env), prefix)


def test_fifty_simultaneous_vault_runs(openbao: OpenBao, tmp_path: Path) -> None:
    mount = f"load{uuid.uuid4().hex[:8]}"
    openbao.mount_kv(mount, 2)
    openbao.write(f"{mount}/data/shared", {"data": {"k": "shared-value"}})
    for i in range(RUNS):
        openbao.write(f"{mount}/data/s{i}", {"data": {f"k{j}": f"run{i}-key{j}" for j in range(5)}})
    openbao.put_policy(mount, f'path "{mount}/data/*" {{ capabilities = ["read"] }}')
    with contextlib.suppress(ApiError):  # enabled by another test of this worker
        openbao.write("sys/auth/approle", {"type": "approle"})
    openbao.write(f"auth/approle/role/{mount}", {"token_policies": [mount]})
    role_id = openbao.api("GET", f"auth/approle/role/{mount}/role-id")["data"]["role_id"]
    secret_id = openbao.api("POST", f"auth/approle/role/{mount}/secret-id")["data"]["secret_id"]
    # Every run logs in on its own (50 AppRole logins at once), then reads.
    config = {
        "vault_address": openbao.url,
        "vault_session": {"vault_role_id": role_id, "vault_secret_id": secret_id},
    }
    env = {"VAULT_ADDR": "", "VAULT_TOKEN": "", "DD_SECRETS_IMPLICIT_AUTH": ""}
    check_runs(burst(tmp_path, run_requests(mount, "hashicorp.vault", config), env), mount)
