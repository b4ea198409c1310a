"""The frozen executable, built once per session and driven the way the Agent drives it."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from secret_backend import __version__
from secret_backend.registry import BACKENDS
from tests import frozen
from tests.helpers import run_cli
from tests.proxy import TcpProxy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> frozen.Build:
    # One build for all xdist workers: they share the parent of their base temp directory.
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent
    return frozen.build_once(shared / "frozen-build")


@pytest.fixture(scope="session")
def exe(build: frozen.Build) -> Path:
    return build.installed


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets.json"
    path.write_text(
        json.dumps({f"key{i}": f"value-{i}" for i in range(100)} | {"empty": "", "port": 3306})
    )
    return path


def present_backends() -> dict[str, str]:
    """type -> module, for the registry's backends whose module exists in this tree."""
    found = {}
    for type_name, entry in BACKENDS.items():
        module = entry.target.partition(":")[0]
        if importlib.util.find_spec(module) is not None:
            found[type_name] = module
    return found


def test_version_literal_is_in_the_file(exe: Path) -> None:
    data = exe.read_bytes()
    assert b"--version" in data  # what the Agent looks for before probing
    # ...and it comes from the uncompressed run-time option, not by luck.
    assert b"datadog-secret-backend-probe=--version" in data


def test_version_probe_like_the_agent(exe: Path) -> None:
    # The Agent runs `<cmd> --version` without writing stdin and shows the trimmed stdout;
    # stdin stays open: a build that read it would hang until the timeout.
    proc = subprocess.Popen([str(exe), "--version"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert out.decode().strip() == f"datadog-secret-backend {__version__}"
    source = subprocess.run(
        [sys.executable, "-m", "secret_backend", "--version"], capture_output=True, check=True
    )
    assert out == source.stdout  # the frozen shortcut prints what the CLI prints


def test_installed_bundle_passes_the_agent_rights_check(exe: Path) -> None:
    frozen.agent_check_rights(exe)
    for path in [exe.parent, *exe.parent.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, f"{path} has group/other bits {mode:04o}"


def test_pyinstaller_output_is_refused_by_the_agent(build: frozen.Build) -> None:
    # Why install.sh exists: PyInstaller leaves 0755.
    with pytest.raises(frozen.AgentError, match="'group' or 'others' have rights on it"):
        frozen.agent_check_rights(build.bundle / frozen.NAME)


def test_file_json_100_handles_like_the_agent(exe: Path, secrets_file: Path) -> None:
    handles = [f"key{i}" for i in range(100)] + ["port"]
    run = frozen.agent_run(
        exe, handles, type="file.json", config={"file_path": str(secrets_file)}, timeout=30
    )
    assert run.values == {f"key{i}": f"value-{i}" for i in range(100)} | {"port": "3306"}
    assert run.stderr == ""


def test_one_bad_handle_fails_the_whole_batch(exe: Path, secrets_file: Path) -> None:
    with pytest.raises(frozen.AgentError, match=r"resolving 'empty': the secret is empty"):
        frozen.agent_run(
            exe, ["key1", "empty", "key2"], "file.json", {"file_path": str(secrets_file)}
        )


def test_answer_over_the_agent_output_cap(exe: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps({f"k{i}": "x" * 20_000 for i in range(60)}))  # ~1.2 MB answer
    with pytest.raises(frozen.AgentError, match="command output was too long"):
        frozen.agent_run(exe, [f"k{i}" for i in range(60)], "file.json", {"file_path": str(big)})
    # The same run with a raised secret_backend_output_max_size works, and we warned.
    run = frozen.agent_run(
        exe, [f"k{i}" for i in range(60)], "file.json", {"file_path": str(big)}, output_max=2**21
    )
    assert len(run.values) == 60
    assert "secret_backend_output_max_size" in run.stderr


def test_multi_backend_file_next_to_the_executable(exe: Path, tmp_path: Path) -> None:
    bundle = frozen.copy_bundle(exe.parent, tmp_path / "copy")
    (tmp_path / "copy" / "datadog-secret-backend.yaml").write_text(
        "backends:\n  env:\n    backend_type: env\n"
    )
    run = frozen.agent_run(bundle, ["env:SB_TEST_VALUE"], env={"SB_TEST_VALUE": "from-env"})
    assert run.values == {"env:SB_TEST_VALUE": "from-env"}


def test_every_present_backend_is_frozen(exe: Path) -> None:
    # An empty config is wrong for most backends: the answer must be a config error from the
    # backend itself, never "not available in this build" or a missing SDK.
    for type_name in present_backends():
        proc = subprocess.run(
            [str(exe)],
            input=json.dumps(
                {"version": "1.1", "secrets": ["h"], "type": type_name, "config": {}}
            ).encode(),
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        answer = json.loads(proc.stdout)["h"]
        text = answer["error"] or ""
        assert "not available in this build" not in text, (type_name, text)
        assert "needs the Python package" not in text, (type_name, text)


def test_answers_before_the_agent_kills_it(exe: Path) -> None:
    # A provider that accepts the connection and never answers: the run must still answer
    # every handle (with a timeout error) before the Agent's kill at secret_backend_timeout.
    if "aws.secrets" not in present_backends():
        pytest.skip("backends/aws_secrets.py is not in this tree: no network backend to stall")
    with TcpProxy(upstream_port=9, delay=0) as proxy:
        proxy.mode = "blackhole"
        with pytest.raises(frozen.AgentError, match=r"resolving 'db;password': .*timed out"):
            frozen.agent_run(
                exe,
                ["db;password"],
                "aws.secrets",
                {"aws_session": {"aws_region": "us-east-1"}},
                timeout=3,
                env={
                    "AWS_ENDPOINT_URL": proxy.url,
                    "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing",
                },
            )


def test_botocore_data_is_trimmed(build: frozen.Build) -> None:
    data = build.bundle / "_internal" / "botocore" / "data"
    if "aws.secrets" not in present_backends():
        pytest.skip("backends/aws_secrets.py is not in this tree: boto3 is not frozen")
    services = {p.name for p in data.iterdir() if p.is_dir()}
    assert {"secretsmanager", "ssm", "sts"} <= services
    assert services <= {"secretsmanager", "ssm", "sts", "sso", "sso-oidc"}
    assert (data / "endpoints.json").exists() and (data / "partitions.json").exists()


def test_botocore_endpoints_keep_our_services_whole(build: frozen.Build) -> None:
    # endpoints.json is trimmed to our services: every partition, its regions and defaults,
    # and the entries of the services we call must be exactly botocore's.
    if "aws.secrets" not in present_backends():
        pytest.skip("backends/aws_secrets.py is not in this tree: boto3 is not frozen")
    import botocore

    original_path = Path(botocore.__file__).parent / "data" / "endpoints.json"
    original = json.loads(original_path.read_text())
    bundled_path = build.bundle / "_internal" / "botocore" / "data" / "endpoints.json"
    bundled = json.loads(bundled_path.read_text())
    ours = {"secretsmanager", "ssm", "sts", "sso", "sso-oidc"}
    assert len(bundled["partitions"]) == len(original["partitions"]) >= 5
    for full, trimmed in zip(original["partitions"], bundled["partitions"], strict=True):
        assert {k: v for k, v in trimmed.items() if k != "services"} == {
            k: v for k, v in full.items() if k != "services"
        }
        assert trimmed["services"] == {k: v for k, v in full["services"].items() if k in ours}
    assert "secretsmanager" in bundled["partitions"][0]["services"]
    assert bundled_path.stat().st_size < original_path.stat().st_size / 20


def test_bundle_under_60_mb(build: frozen.Build) -> None:
    size = sum(p.stat().st_size for p in build.bundle.rglob("*") if p.is_file())
    assert size < 60 * 1024 * 1024, f"{size / 2**20:.1f} MiB"


def test_run_cli_suite_works_against_the_binary(exe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The whole suite can run against the build: SECRET_BACKEND_EXE=<exe> make test.
    monkeypatch.setenv("SECRET_BACKEND_EXE", str(exe))
    result = run_cli(
        {"version": "1.0", "secrets": ["SB_A", "SB_B"], "type": "env", "config": {}},
        env={"SB_A": "a"},
    )
    assert result.value("SB_A") == "a"
    assert "SB_B" in result.error("SB_B")
    bad = run_cli(b"not json")
    assert bad.returncode == 3 and bad.stdout == b""


def test_check_permissions_frozen(exe: Path, tmp_path: Path) -> None:
    proc = subprocess.run([str(exe), "check-permissions"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    digest = hashlib.sha256(exe.read_bytes()).hexdigest()
    assert f"sha256 {digest}" in proc.stdout

    copy = frozen.copy_bundle(exe.parent, tmp_path / "copy")
    lib = sorted((tmp_path / "copy" / "_internal").glob("libpython*"))[0]
    lib.chmod(0o620)  # an attacker-writable library: the Agent would not notice
    proc = subprocess.run([str(copy), "check-permissions"], capture_output=True, text=True)
    assert proc.returncode == 5
    assert f"invalid bundle file '{lib}', 'group' or 'others' have rights on it" in proc.stdout
    assert "mode 0620" in proc.stdout


def test_check_frozen(exe: Path, secrets_file: Path, tmp_path: Path) -> None:
    datadog_yaml = tmp_path / "datadog.yaml"
    datadog_yaml.write_text(
        f"api_key: ENC[key7]\nsecret_backend_command: {exe}\nsecret_backend_type: file.json\n"
        f"secret_backend_config:\n  file_path: {secrets_file}\n"
    )
    proc = subprocess.run(
        [str(exe), "check", "--datadog-yaml", str(datadog_yaml)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout
    assert f"ok   ENC[key7] at {datadog_yaml}:1 api_key" in proc.stdout
    assert "value-7" not in proc.stdout


def test_install_keeps_the_multi_backend_file(build: frozen.Build, tmp_path: Path) -> None:
    frozen.install(build.bundle, tmp_path)
    kept = tmp_path / frozen.NAME / "datadog-secret-backend.yaml"
    kept.write_text("backends: {}\n")
    out = frozen.install(build.bundle, tmp_path, "--allow-group-exec").stdout
    assert kept.read_text() == "backends: {}\n"
    exe = tmp_path / frozen.NAME / frozen.NAME
    assert stat.S_IMODE(exe.stat().st_mode) == 0o550
    assert stat.S_IMODE(kept.stat().st_mode) == 0o440
    frozen.agent_check_rights(exe, allow_group_exec=True)
    digest = hashlib.sha256(exe.read_bytes()).hexdigest()
    assert f"secret_backend_command: {exe}\n" in out
    assert f"secret_backend_command_sha256: {digest}\n" in out
    assert "secret_backend_command_allow_group_exec_perm: true\n" in out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_build_is_reproducible(build: frozen.Build, tmp_path: Path) -> None:
    # A second build of the same tree, in other directories: byte-identical executable.
    env = {**os.environ, "PY": sys.executable}
    env |= {"DIST": str(tmp_path / "dist"), "WORK": str(tmp_path / "work")}
    subprocess.run([str(frozen.BUILD_SCRIPT)], env=env, check=True, capture_output=True)
    again = tmp_path / "dist" / frozen.NAME

    def digests(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert digests(again) == digests(build.bundle)
