"""No over-admission, ever: 32 threads here and 4 processes of 4 threads race for one small limit
on the real Redis, for three windows of 1.5 s.

Every grant is logged with the server time the script decided at; an audit that knows nothing of
buckets then slides a window of the configured length over the log. No window may hold more
tokens than the TPM, more requests than the RPM, or more than RPM/6 requests in a sixth of it.
Grants given back by ``release`` while still counted are left out, as the limiter refunds them.

With an upstream margin the audit slides windows of the configured length plus the margin: a
request reaches the upstream up to the margin after its grant, so the requests in any upstream
window [s, s + W] were granted in [s - margin, s + W]. Bounding every such span bounds every
upstream window, whatever each request's delay.

The same race runs with every feature on (a model spilling over two deployments with different
limits, random interactive and batch lanes, an app share), audited per deployment, and on a real
three-master Redis Cluster through ``redis.cluster``.

And with leases (quota/leases.py, the counter server's way): each process's clients are asyncio
tasks granting from QuotaLeases, which writes behind; a grant is logged at its lease's stamp, the
time its charge is counted from, and must have been made within the lease time of it.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import subprocess
import sys
import threading
import time
from typing import IO

import pytest

from bench.quota_limiter import most_in_any_window
from quota import AsyncQuotaLimiter, QuotaLeases, QuotaLimiter
from settings import Settings, load_settings
from settings.state_redis import async_state_redis, state_redis
from tests.support.cluster import RedisClusterServers
from tests.support.processes import REPO_ROOT
from tests.support.quota import granted, retry_after

pytestmark = pytest.mark.slow

DEPLOYMENT = "audited"
WINDOW_S = 1.5
# A fifth of the window (12 buckets of 25 ms): long enough to matter, short enough to leave a race.
MARGIN_S = 0.3
WINDOWS = 3
TPM, RPM = 2000, 36  # RPM/6 = 6 requests per 0.25 s
THREADS, PROCESSES, THREADS_PER_PROCESS = 32, 4, 4
# Once every process is ready, everyone starts together this long after.
START_DELAY_S = 0.3
PROCESS_TIMEOUT_S = 60.0

# With every feature on: the model spills over two deployments with their own limits.
SPILL = {"audited-a": (TPM, RPM), "audited-b": (TPM // 2, RPM // 2)}
FEATURES = {
    "openai_engine": DEPLOYMENT,
    "openai_deployments": json.dumps(
        [{"name": name, "tpm": tpm, "rpm": rpm} for name, (tpm, rpm) in SPILL.items()]
    ),
    "quota_app_shares": "app0=0.4",
    "quota_interactive_reserve": 0.2,
}
INTERACTIVE_SHARE = 0.2
# QUOTA_WINDOW_BUCKETS for the "fine" race: twice the default.
FINE_BUCKETS = 120
# QUOTA_LEASE_SECONDS in the "leases" race: half the margin, the most it may be.
LEASE_S = MARGIN_S / 2
# Its limits: requests bind (a lease takes at most an eighth of the room left, so under the
# limits above no lease would ever be granted), tokens up to 300 a request do not.
LEASE_SPILL = {"audited-a": (180_000, 600), "audited-b": (90_000, 300)}
# How late after its lease's stamp the test may see a grant: the lease time, plus the time from
# the grant to the client's clock reading on a loaded machine.
LATEST_GRANT_S = LEASE_S + 0.5

Grant = tuple[int, int, str]  # (server time in µs, tokens still charged, deployment)


def hammer(limiter: QuotaLimiter, seed: int, start: float, until: float) -> list[Grant]:
    """Acquire random sizes until ``until``; report most grants, release some."""
    rng = random.Random(seed)
    grants: list[Grant] = []
    time.sleep(max(0.0, start - time.time()))
    while time.time() < until:
        tokens = rng.randint(1, 300)
        lane = "interactive" if rng.random() < INTERACTIVE_SHARE else "batch"
        decision, at_us = limiter.acquire_timed(
            "completion", DEPLOYMENT, tokens, f"app{seed % 3}", lane
        )
        if not decision.allowed:
            # Short, random naps keep every client in the race without burning both cores.
            time.sleep(rng.uniform(0, min(retry_after(decision), 0.02)))
            continue
        request_id, deployment = granted(decision), decision.deployment
        assert deployment is not None, decision  # a grant names the deployment that took it
        released = rng.random() < 0.15
        # Never more than locked, so nothing is charged after the grant's own time.
        settlement = (
            limiter.release(request_id)
            if released
            else limiter.report(request_id, rng.randint(0, tokens), 0)
        )
        if not (released and settlement.refunded_tokens):  # that one gave its request back too
            grants.append((at_us, tokens - settlement.refunded_tokens, deployment))
    return grants


def audit_settings(url: str, charge_model: str, margin_s: float, mode: str) -> Settings:
    """mode: "plain" (one deployment, no lanes or shares), "fine" (plain, the window in twice the
    default buckets), "features", "cluster" (features on a Redis Cluster at ``url``), or
    "leases" (the model spilling over two deployments, batch lane only, granted from leases)."""
    options: dict[str, object] = {
        "quota_charge_model": charge_model,
        "quota_upstream_margin_s": margin_s,
        "state_redis_url": url,
        "state_redis_cluster": mode == "cluster",
    }
    if mode == "fine":
        options["quota_window_buckets"] = FINE_BUCKETS
    elif mode == "leases":
        options["openai_engine"] = DEPLOYMENT
        options["openai_deployments"] = json.dumps(
            [{"name": name, "tpm": tpm, "rpm": rpm} for name, (tpm, rpm) in LEASE_SPILL.items()]
        )
        options["quota_lease_s"] = LEASE_S
    elif mode != "plain":
        options.update(FEATURES)
    return load_settings(**options)


def make_limiter(url: str, charge_model: str, margin_s: float, mode: str) -> QuotaLimiter:
    settings = audit_settings(url, charge_model, margin_s, mode)
    return QuotaLimiter(state_redis(settings), settings, window_s=WINDOW_S)


async def hammer_leases(
    quota: QuotaLeases, seed: int, start: float, until: float, leased: list[str]
) -> list[Grant]:
    """:func:`hammer` on leases, in the batch lane (leases grant nothing else); the ids of the
    grants that came from a lease are added to ``leased``."""
    rng = random.Random(seed)
    grants: list[Grant] = []
    await asyncio.sleep(max(0.0, start - time.time()))
    while time.time() < until:
        tokens = rng.randint(1, 300)
        decision, stamped_us = await quota.acquire_timed(
            "completion", DEPLOYMENT, tokens, f"app{seed % 3}"
        )
        if not decision.allowed:
            await asyncio.sleep(rng.uniform(0, min(retry_after(decision), 0.02)))
            continue
        assert time.time() * 1e6 - stamped_us <= LATEST_GRANT_S * 1e6, "granted too late"
        request_id, deployment = granted(decision), decision.deployment
        assert deployment is not None, decision
        if "." in request_id:  # t<lease>.<grant>
            leased.append(request_id)
        released = rng.random() < 0.15
        settlement = (
            await quota.release(request_id)
            if released
            else await quota.report(request_id, rng.randint(0, tokens), 0)
        )
        if not (released and settlement.refunded_tokens):
            grants.append((stamped_us, tokens - settlement.refunded_tokens, deployment))
    return grants


def race_leases(settings: Settings, seeds: range, start: float, until: float) -> list[list[Grant]]:
    """One asyncio task per seed on one QuotaLeases, all hammering until ``until``."""

    async def race() -> list[list[Grant]]:
        client = async_state_redis(settings)
        limiter = AsyncQuotaLimiter(client, settings, window_s=WINDOW_S)
        quota = QuotaLeases(limiter, settings.quota_lease_s)
        leased: list[str] = []
        try:
            results = await asyncio.gather(
                *(hammer_leases(quota, seed, start, until, leased) for seed in seeds)
            )
            assert leased, "no grant came from a lease: the race tested nothing of them"
            return list(results)
        finally:
            await quota.aclose()
            await client.aclose()

    return asyncio.run(race())


def race(limiter: QuotaLimiter, seeds: range, start: float, until: float) -> list[list[Grant]]:
    """One thread per seed, all hammering until ``until``; each thread's grants."""
    results: list[list[Grant]] = [[] for _ in seeds]

    def client(index: int) -> None:
        results[index] = hammer(limiter, seeds[index], start, until)

    threads = [threading.Thread(target=client, args=(index,)) for index in range(len(seeds))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def run_process() -> None:
    """The audit's subprocesses: argv url charge_model margin_s mode first_seed; says "ready",
    then reads "start until" from stdin, races, and prints its grants as JSON."""
    url, charge_model, margin_s, mode, first_seed = sys.argv[1:]
    limiter = make_limiter(url, charge_model, float(margin_s), mode)
    print("ready", flush=True)
    start, until = map(float, sys.stdin.readline().split())
    seeds = range(int(first_seed), int(first_seed) + THREADS_PER_PROCESS)
    if mode == "leases":
        settings = audit_settings(url, charge_model, float(margin_s), mode)
        results = race_leases(settings, seeds, start, until)
    else:
        results = race(limiter, seeds, start, until)
    print(json.dumps([grant for result in results for grant in result]))


def pipes(process: subprocess.Popen[str]) -> tuple[IO[str], IO[str]]:
    """A racing subprocess's stdin and stdout (it is started with both piped)."""
    assert process.stdin is not None and process.stdout is not None
    return process.stdin, process.stdout


def race_everyone(
    redis_url: str, charge_model: str, margin_s: float, mode: str = "plain"
) -> list[list[Grant]]:
    """This process's threads and the subprocesses race for three windows; every client's grants
    (this process's threads first, then one list per subprocess)."""
    limiter = make_limiter(redis_url, charge_model, margin_s, mode)
    if mode in ("plain", "fine"):
        limiter.set_limits("completion", DEPLOYMENT, tpm=TPM, rpm=RPM)
    code = "from tests.test_quota_audit import run_process; run_process()"
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                redis_url,
                charge_model,
                str(margin_s),
                mode,
                str(1000 * (n + 1)),
            ],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    try:
        for process in processes:
            assert pipes(process)[1].readline().strip() == "ready"
        start = time.time() + START_DELAY_S
        until = start + WINDOWS * WINDOW_S
        for process in processes:
            stdin = pipes(process)[0]
            stdin.write(f"{start} {until}\n")
            stdin.flush()
        if mode == "leases":
            settings = audit_settings(redis_url, charge_model, margin_s, mode)
            results = race_leases(settings, range(THREADS), start, until)
        else:
            results = race(limiter, range(THREADS), start, until)
        for process in processes:
            output, _ = process.communicate(timeout=PROCESS_TIMEOUT_S)
            assert process.returncode == 0
            results.append(json.loads(output))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
            for pipe in pipes(process):
                pipe.close()
    assert len(results) == THREADS + PROCESSES and all(results[THREADS:]), "a process got nothing"
    return results


def assert_no_span_holds_more_than_the_limit(
    results: list[list[Grant]],
    margin_s: float,
    deployment: str = DEPLOYMENT,
    tpm: int = TPM,
    rpm: int = RPM,
) -> None:
    """Every span of a window (or a sixth of one) plus the margin holds at most the limit of
    ``deployment``."""
    charged = [
        (at_us, tokens)
        for result in results
        for at_us, tokens, granted_on in result
        if granted_on == deployment
    ]
    requests = [(at_us, 1) for at_us, _ in charged]
    window_us, margin_us = round(WINDOW_S * 1_000_000), round(margin_s * 1_000_000)
    sub_window_us = math.ceil(window_us / 6)
    assert most_in_any_window(charged, window_us + margin_us) <= tpm
    assert most_in_any_window(requests, window_us + margin_us) <= rpm
    # "==", not "<=": the race was real, the limit was reached and held.
    assert most_in_any_window(requests, sub_window_us + margin_us) == rpm // 6


def assert_every_deployment_held_its_limits(results: list[list[Grant]]) -> None:
    for deployment, (tpm, rpm) in SPILL.items():
        assert_no_span_holds_more_than_the_limit(results, 0, deployment, tpm, rpm)


@pytest.mark.parametrize("charge_model", ["azure", "usage"])
def test_no_window_ever_holds_more_than_the_limit(redis_url, charge_model):
    results = race_everyone(redis_url, charge_model, margin_s=0)
    assert_no_span_holds_more_than_the_limit(results, margin_s=0)


def test_no_upstream_window_arriving_up_to_the_margin_later_holds_more(redis_url):
    results = race_everyone(redis_url, "azure", margin_s=MARGIN_S)
    assert_no_span_holds_more_than_the_limit(results, margin_s=MARGIN_S)


def test_finer_buckets_keep_every_upstream_window_within_the_limit(redis_url):
    results = race_everyone(redis_url, "azure", margin_s=MARGIN_S, mode="fine")
    assert_no_span_holds_more_than_the_limit(results, margin_s=MARGIN_S)


def test_no_deployment_window_holds_more_with_lanes_spill_over_and_shares(redis_url):
    results = race_everyone(redis_url, "azure", margin_s=0, mode="features")
    assert_every_deployment_held_its_limits(results)


@pytest.mark.parametrize("charge_model", ["azure", "usage"])
def test_no_upstream_window_holds_more_with_grants_from_leases(redis_url, charge_model):
    results = race_everyone(redis_url, charge_model, margin_s=MARGIN_S, mode="leases")
    for deployment, (tpm, rpm) in LEASE_SPILL.items():
        assert_no_span_holds_more_than_the_limit(results, MARGIN_S, deployment, tpm, rpm)


def test_no_deployment_window_holds_more_on_a_redis_cluster(tmp_path):
    with RedisClusterServers(tmp_path) as cluster:
        results = race_everyone(cluster.url, "usage", margin_s=0, mode="cluster")
        # The state really is spread over the cluster: the model's keys on one node (one hash
        # tag), the registry of deployments on its own slot.
        client = cluster.client()
        try:
            assert client.keyslot("conduit:quota:{completion:audited}:state") == client.keyslot(
                "conduit:quota:{completion:audited}:audited-b:expiry"
            )
        finally:
            client.close()
    assert_every_deployment_held_its_limits(results)


def test_the_audit_catches_an_over_admission():
    second = 1_000_000
    assert most_in_any_window([(0, 5), (second, 5)], second) == 10  # closed: both ends count
    assert most_in_any_window([(0, 5), (second + 1, 5)], second) == 5
    assert most_in_any_window([(0, 5), (second, 5), (second + 1, 7)], second) == 12
