"""How cost grows with the number of handles: AWS Secrets Manager (moto) and Vault (OpenBao)
behind an emulated network round trip, ours vs the published strategy vs the floor.

The real executable runs as a subprocess (as the Agent runs it). tests/proxy.py's TcpProxy
with `rtt` sits in front of each server: every chunk arrives rtt/2 after it was sent (no
extra cost for headers and body written separately) and every new connection costs one rtt,
as a TCP handshake would. Requests are counted behind it (CountingProxy for moto, the audit
log for OpenBao). Peak memory is the child's maximum RSS from wait4(2).

* ours: default settings (dedupe, BatchGetSecretValue for AWS, concurrent reads).
* published strategy: one provider call per handle, one after the other. Run by our own
  backends with `batch: false` + `concurrency: 1` over as many distinct secrets as handles
  (our resolver never fetches one secret twice, so distinct secrets are needed to make it
  pay one call per handle). The published code pays the same for handles over fewer
  secrets, so this row is its cost for every row with the same number of handles.
* floor: the cheapest possible run of the same backend: 1 handle, 1 secret (process start,
  SDK import, one connection and one request; for Vault path;key also the mount lookup).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from measure import run_measured  # noqa: E402

from tests.moto_server import (  # noqa: E402
    CountingProxy,
    isolated_aws_env,
    secretsmanager_client,
    start_moto_server,
    stop_moto_server,
)
from tests.openbao_server import OpenBao  # noqa: E402
from tests.proxy import TcpProxy  # noqa: E402

SETUP_MS: dict[str, float] = {}  # backend type -> set-up time of a 1-handle run
RTT = float(os.environ.get("BENCH_RTT_MS", "50")) / 1000
RUNS = int(os.environ.get("BENCH_RUNS", "7"))
# (handles, distinct secrets): 10 keys per secret, and all handles on distinct secrets.
SCENARIOS = [(1, 1), (10, 1), (10, 10), (100, 10), (100, 100), (1000, 100), (1000, 1000)]
SEQUENTIAL_MEASURED = (1, 10, 100)  # 1,000 sequential calls are extrapolated from 100
REGION = "us-east-1"
CMD = [sys.executable, "-m", "secret_backend"]


def run_once(payload: dict[str, Any], env: dict[str, str]) -> tuple[float, int, dict[str, Any]]:
    """Wall seconds, peak RSS in KiB, parsed answer."""
    full_env = {**os.environ, **env}
    full_env.pop("DD_SECRET_BACKEND_LOG_LEVEL", None)
    elapsed, peak, out = run_measured(CMD, json.dumps(payload).encode(), full_env, REPO)
    return elapsed, peak, json.loads(out)


def setup_ms(payload: dict[str, Any], env: dict[str, str]) -> float:
    """The backend's set-up time (SDK import, client, credentials), from its --debug log."""
    proc = subprocess.run(
        [*CMD, "--debug"],
        input=json.dumps(payload).encode(),
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    match = re.search(r"ready in ([0-9.]+) ms", proc.stderr.decode())
    assert match, proc.stderr
    return float(match.group(1))


class Measured:
    def __init__(self, seconds: float, requests: int, peak_kib: int, extrapolated: bool = False):
        self.seconds = seconds
        self.requests = requests
        self.peak_kib = peak_kib
        self.extrapolated = extrapolated


def measure(
    kind: str,
    handles: list[str],
    expected: dict[str, str],
    config: dict[str, Any],
    env: dict[str, str],
    count: Any,
    runs: int = RUNS,
) -> Measured:
    payload = {
        "version": "1.1",
        "secrets": handles,
        "secret_backend_timeout": 120,
        "type": kind,
        "config": config,
    }
    times, peaks, requests = [], [], set()
    for _ in range(runs):
        before = count()
        seconds, peak, answers = run_once(payload, env)
        for handle in handles:  # every handle resolved, or the bench is meaningless
            assert answers[handle] == {"value": expected[handle], "error": None}, answers[handle]
        requests.add(count() - before)
        times.append(seconds)
        peaks.append(peak)
    assert len(requests) == 1, f"request count varies between runs: {requests}"
    if len(handles) == 1 and kind not in SETUP_MS:
        SETUP_MS[kind] = setup_ms(payload, env)
    return Measured(statistics.median(times), requests.pop(), max(peaks))


def workload(n: int, d: int, name: Any) -> tuple[list[str], dict[str, str]]:
    """n handles over d secrets with 10 keys each: handle i reads key i % 10 of secret i % d."""
    handles, expected = [], {}
    for i in range(n):
        s, k = i % d, (i // d) % 10
        handle = name(s, k)
        handles.append(handle)
        expected[handle] = f"s{s}-value-{k}"
    return handles, expected


def body(s: int) -> dict[str, str]:
    return {f"key{k}": f"s{s}-value-{k}" for k in range(10)}


def aws_rows() -> list[tuple[int, int, Measured, Measured]]:
    proc, moto_url = start_moto_server()
    try:
        sm = secretsmanager_client(moto_url, REGION)
        for s in range(max(d for _, d in SCENARIOS)):
            sm.create_secret(Name=f"bench/s{s}", SecretString=json.dumps(body(s)))
        with (
            CountingProxy(moto_url) as counter,
            TcpProxy(counter.port, rtt=RTT) as network,
            tempfile.TemporaryDirectory() as tmp,
        ):
            env = isolated_aws_env(f"http://127.0.0.1:{network.port}", tmp, REGION)

            def count() -> int:
                return len(counter.operations)

            def name(s: int, k: int) -> str:
                return f"bench/s{s};key{k}"

            def run(n: int, d: int, runs: int = RUNS, sequential: bool = False) -> Measured:
                handles, expected = workload(n, d, name)
                config = {"batch": False, "concurrency": 1} if sequential else {}
                return measure("aws.secrets", handles, expected, config, env, count, runs)

            return scaling(run)
    finally:
        stop_moto_server(proc)


def vault_rows() -> list[tuple[int, int, Measured, Measured]]:
    with OpenBao() as server, TcpProxy(server.port, rtt=RTT) as network:
        server.mount_kv("bench", 2)
        for s in range(max(d for _, d in SCENARIOS)):
            server.write(f"bench/data/s{s}", {"data": body(s)})
        config = {
            "vault_address": f"http://127.0.0.1:{network.port}",
            "vault_token": server.root_token,
        }
        env = {"VAULT_ADDR": "", "VAULT_TOKEN": "", "DD_SECRETS_IMPLICIT_AUTH": ""}

        def count() -> int:
            return sum(1 for e in server.audit_entries() if e["type"] == "request")

        def name(s: int, k: int) -> str:
            return f"bench/s{s};key{k}"

        def run(n: int, d: int, runs: int = RUNS, sequential: bool = False) -> Measured:
            handles, expected = workload(n, d, name)
            extra = {"concurrency": 1} if sequential else {}
            return measure(
                "hashicorp.vault", handles, expected, {**config, **extra}, env, count, runs
            )

        return scaling(run)


def scaling(run: Any) -> list[tuple[int, int, Measured, Measured]]:
    """Every scenario with ours, and the per-handle sequential strategy for its size."""
    sequential: dict[int, Measured] = {}
    for n in SEQUENTIAL_MEASURED:
        sequential[n] = run(n, n, runs=3, sequential=True)
    # 1,000 sequential calls: 10x the per-call cost measured at 100, over the same base.
    one, hundred = sequential[1], sequential[100]
    per_call = (hundred.seconds - one.seconds) / 99
    sequential[1000] = Measured(
        one.seconds + 999 * per_call,
        one.requests + 999 * (hundred.requests - one.requests) // 99,
        hundred.peak_kib,
        extrapolated=True,
    )
    # Ours: round-robin over the scenarios, so that a busy moment of the machine does not
    # land on one scenario only (the floor and the target are compared in round trips).
    samples: dict[tuple[int, int], list[Measured]] = {scenario: [] for scenario in SCENARIOS}
    for round_ in range(RUNS):
        for n, d in SCENARIOS:
            if n < 1000 or round_ < 3:
                samples[(n, d)].append(run(n, d, runs=1))
    rows = []
    for n, d in SCENARIOS:
        got = samples[(n, d)]
        assert len({m.requests for m in got}) == 1, f"request count varies: {n}, {d}"
        seconds = statistics.median(m.seconds for m in got)
        ours = Measured(seconds, got[0].requests, max(m.peak_kib for m in got))
        rows.append((n, d, ours, sequential[n]))
    return rows


def table(title: str, rows: list[tuple[int, int, Measured, Measured]], how: str) -> list[str]:
    by = {(n, d): ours for n, d, ours, _ in rows}
    floor = by[(1, 1)]
    lines = [
        f"### {title}",
        "",
        "| handles | distinct secrets | ours | requests | above the floor | peak RSS "
        "| published strategy (sequential) | its requests | speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, d, ours, seq in rows:
        above = (ours.seconds - floor.seconds) / RTT
        mark = " (extrapolated)" if seq.extrapolated else ""
        lines.append(
            f"| {n:,} | {d:,} | {ours.seconds * 1000:,.0f} ms | {ours.requests:,} "
            f"| {above:+.1f} RTT | {ours.peak_kib / 1024:.0f} MiB "
            f"| {seq.seconds * 1000:,.0f} ms{mark} | {seq.requests:,} "
            f"| {seq.seconds / ours.seconds:.1f}x |"
        )
    seq_by = {n: seq for n, _, _, seq in rows}
    per_call = (seq_by[100].seconds - seq_by[1].seconds) / 99
    per_handle = (by[(1000, 100)].seconds - by[(100, 100)].seconds) / 900
    per_secret = (by[(1000, 1000)].seconds - by[(1000, 100)].seconds) / 900
    lines += [
        "",
        f"The floor is the first row (1 handle, 1 secret: process start, SDK import, one "
        f"connection, {floor.requests} request(s)). How cost grows: the published strategy "
        f"pays {per_call * 1000:.0f} ms per extra handle (one request each, about one round "
        f"trip). Ours pays per distinct secret, not per handle ({how}): at a fixed 100 "
        f"secrets, going from 100 to 1,000 handles costs {per_handle * 1e6:+.0f} µs per extra "
        f"handle (no request, only a lookup in the fetched secret; within run-to-run noise), "
        f"and at 1,000 handles each extra distinct secret costs {per_secret * 1000:.2f} ms.",
    ]
    return lines


def main() -> str:
    aws = aws_rows()
    vault = vault_rows()
    env_start = statistics.median(
        run_once({"version": "1.1", "secrets": ["B"], "type": "env"}, {"B": "x"})[0]
        for _ in range(RUNS)
    )
    target = next(ours for n, d, ours, _ in aws if (n, d) == (100, 10))
    target_seq = next(seq for n, d, _, seq in aws if (n, d) == (100, 10))
    floor = next(ours for n, d, ours, _ in aws if (n, d) == (1, 1))
    above = (target.seconds - floor.seconds) / RTT
    speedup = target_seq.seconds / target.seconds
    strict = env_start + RTT
    lines = [
        f"## Scaling with the number of handles, {RTT * 1000:.0f} ms round trip",
        "",
        "The real executable against moto (AWS Secrets Manager) and OpenBao (Vault, token "
        f"auth, one KV v2 mount) behind a proxy emulating a {RTT * 1000:.0f} ms network round "
        "trip (every chunk delayed by half of it each way, one round trip per new "
        f"connection). Median of {RUNS} runs, taken round-robin over the scenarios (3 for "
        "1,000 handles, and 3 in a row for the sequential strategy); requests counted at "
        "the server; peak RSS of the child from wait4(2). "
        "Each secret holds 10 keys; handle i reads key i // secrets of secret i % secrets.",
        "",
        "The published strategy is one provider call per handle, in sequence: our backends "
        "with `batch: false` and `concurrency: 1` over as many distinct secrets as handles "
        "(the published code pays this whatever the number of distinct secrets). Its "
        "1,000-handle figure is extrapolated from the measured 1- and 100-handle runs "
        "(cost per call times 1,000), not measured.",
        "",
        f"Process start alone (the network-free `env` backend, 1 handle): "
        f"{env_start * 1000:.0f} ms; the floors below add the SDK import and the requests.",
        "",
        f"**Target** (100 handles over 10 AWS secrets): {target.seconds * 1000:.0f} ms, "
        f"{above:+.1f} round trips from the floor (target: within 3; below 0 is run-to-run "
        f"noise) and {speedup:.1f}x "
        f"faster than the per-handle sequential strategy (target: at least 10x): "
        f"{'met' if above <= 3 and speedup >= 10 else 'NOT met'}.",
        "",
        f"Against the stricter floor of interpreter start plus one round trip "
        f"({strict * 1000:.0f} ms), the same run is {(target.seconds - strict) / RTT:+.1f} "
        f"round trips away. Where that time goes (`--debug` timings of a 1-handle run): "
        f"setting up the backend takes {SETUP_MS['aws.secrets']:.0f} ms for AWS "
        f"(importing botocore, about 0.2 s by `python -X importtime`, and building the "
        f"client) and {SETUP_MS['hashicorp.vault']:.0f} ms for Vault; the requests are the "
        "rest. That set-up is paid once per run, whatever the number of handles.",
        "",
        *table(
            "AWS Secrets Manager (`aws.secrets`)",
            aws,
            "one BatchGetSecretValue per 20 distinct secrets, 8 in flight",
        ),
        "",
        *table(
            "HashiCorp Vault (`hashicorp.vault`)",
            vault,
            "one mount lookup, then one read per distinct path, 16 in flight",
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(main())
