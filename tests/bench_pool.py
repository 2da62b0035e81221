"""``python -m tests.bench pool``: warm pools and first calls (issue 21), in one run.

    python -m tests.bench pool [--requests 60] [--pool 40] [--first-calls 1000]
        On one control plane (``make cluster``'s if it is up, else a fresh one) and one
        nsprov with two tenants that differ only in the pool (``pooled``: --pool ready
        namespaces; ``plain``: none), both bound to a grant with rules (so the first-call
        check has something to ask):
        - POST p50/p95, sequential, pooled (the pool refilled between batches, so every
          POST is a hit) and plain, against the raw floor (the four raw calls);
        - a burst of --pool POSTs at concurrency 16 from a full pool vs. the raw API
          making the same count at the same concurrency, and steady state (6x as many
          POSTs, the pool draining) at concurrency 16;
        - refill: claims per second the keeper makes good after the burst emptied it;
        - first calls: --first-calls creates at concurrency 16 per tenant, each kubeconfig
          used at once (list ConfigMaps with it); 403s counted, and the first-call
          check's wait (nsprov_first_call_wait_seconds) per create.

Prints figures; asserts nothing but that every POST answers 201.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client, config

from tests import bench
from tests.integration.service import RunningService, running_service
from tests.support import wait_until

GRANT = "nsprov-bench-configmaps"
CONCURRENCY = 16


def _grant(kubeconfig: Path) -> None:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    role = client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name=GRANT),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"],
                                   verbs=["get", "list", "create"])],
    )  # fmt: skip
    try:
        client.RbacAuthorizationV1Api(api).create_cluster_role(role)
    except client.exceptions.ApiException as exc:
        if exc.status != 409:
            raise
    finally:
        api.close()


def _policy(path: Path, pool: int) -> Path:
    path.write_text(
        "tenants:\n"
        f"  - name: pooled\n    match: {{token: alice}}\n    clusterRole: {GRANT}\n"
        f"    pool: {{size: {pool}, maxAge: 1h}}\n"
        f"  - name: plain\n    match: {{token: bob}}\n    clusterRole: {GRANT}\n"
    )
    return path


def _metric(service: RunningService, name: str, *labels: str) -> float:
    text = httpx.get(f"{service.internal_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.startswith(name) and all(label in head for label in labels):
            total += float(value)
    return total


def _ready(service: RunningService) -> float:
    return _metric(service, "nsprov_pool_ready{", 'tenant="pooled"')


def _wait_full(service: RunningService, pool: int, timeout: float = 300) -> float:
    """Seconds until the pool holds ``pool`` ready namespaces again."""
    started = time.perf_counter()
    wait_until(lambda: _ready(service) >= pool, timeout=timeout, interval=0.05,
               message="pool full")  # fmt: skip
    return time.perf_counter() - started


def _post(http: httpx.Client, service: RunningService, owner: str) -> httpx.Response:
    response = http.post(
        "/api/v1/namespaces",
        params={"ttl": "10m"},
        headers={**service.auth(owner), "Accept": "application/json"},
    )
    assert response.status_code == 201, response.text
    return response


def _first_call(response: httpx.Response) -> int:
    """The status of the kubeconfig's first call (list ConfigMaps in its namespace)."""
    body = response.json()
    kubeconfig: dict[str, Any] = yaml.safe_load(body["kubeconfig"])
    cluster = kubeconfig["clusters"][0]["cluster"]
    token = kubeconfig["users"][0]["user"]["token"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    with httpx.Client(base_url=cluster["server"], verify=context, timeout=30) as api:
        answer = api.get(
            f"/api/v1/namespaces/{body['namespace']}/configmaps",
            headers={"Authorization": f"Bearer {token}"},
        )
    return answer.status_code


def _concurrently(work: Callable[[int], Any], n: int) -> tuple[list[Any], float]:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(work, range(n)))
    return results, time.perf_counter() - started


def _raw_burst(kubeconfig: Path, n: int) -> float:
    """Seconds the raw API takes for ``n`` provisionings (four calls) at concurrency 16."""
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = CONCURRENCY
    api = client.ApiClient(configuration)
    stamp = int(time.time())
    try:
        _, wall = _concurrently(lambda i: bench._raw_provision(api, f"bench-pb-{stamp}-{i}"), n)
    finally:
        core = client.CoreV1Api(api)
        for i in range(n):
            with contextlib.suppress(client.exceptions.ApiException):
                core.delete_namespace(f"bench-pb-{stamp}-{i}")
        api.close()
    return wall


def pool(args: argparse.Namespace) -> None:
    bench._print_header()
    with bench._kubeconfig() as kubeconfig, tempfile.TemporaryDirectory() as tmp:
        _grant(kubeconfig)
        api = config.new_client_from_config(config_file=str(kubeconfig))
        core = client.CoreV1Api(api)
        raw = bench.raw_calls(api, args.requests)
        print(f"raw client, 4 sequential calls:    {bench.percentiles(raw)}")
        print(f"raw namespaces finalized after     {bench._wait_raw_gone(core):.1f}s")
        raw_wall = _raw_burst(kubeconfig, args.pool)
        print(f"raw namespaces finalized after     {bench._wait_raw_gone(core):.1f}s")
        policy = _policy(Path(tmp) / "policy.yaml", args.pool)
        service_args = [f"--policy-file={policy}", "--leader-elect=false"]
        with (
            running_service(kubeconfig, Path(tmp) / "svc", service_args) as service,
            service.client() as http,
        ):
            filled = _wait_full(service, args.pool)
            print(f"pool of {args.pool} filled from empty in {filled:.1f}s "
                  f"({args.pool / filled:.1f}/s)")  # fmt: skip
            # Each POST from a full pool, the refill of the one before done: the claim alone.
            quiet: list[float] = []
            for _ in range(args.requests):
                _wait_full(service, args.pool)
                time.sleep(0.05)
                quiet.append(bench._timed(lambda: _post(http, service, "alice")))
            # Back to back, the keeper refilling at the same time on the same cores.
            racing: list[float] = []
            batch = max(1, args.pool // 2)
            while len(racing) < args.requests:
                _wait_full(service, args.pool)
                for _ in range(min(batch, args.requests - len(racing))):
                    racing.append(bench._timed(lambda: _post(http, service, "alice")))
            misses = _metric(service, "nsprov_pool_claims_total", 'result="miss"')
            plain = [
                bench._timed(lambda: _post(http, service, "bob")) for _ in range(args.requests)
            ]
            floor = statistics.median(raw)
            print(
                f"nsprov POST, pooled, one at a time: {bench.percentiles(quiet)} "
                f"({statistics.median(quiet) / floor:.2f}x the floor)"
            )
            print(
                f"nsprov POST, pooled, back to back: {bench.percentiles(racing)} "
                f"({statistics.median(racing) / floor:.2f}x the floor; misses {misses:.0f})"
            )
            print(f"nsprov POST, no pool, sequential:  {bench.percentiles(plain)} "
                  f"({statistics.median(plain) / floor:.2f}x the floor)")  # fmt: skip
            # nsprov's own cost per request (HTTP, auth, routing, JSON), no Kubernetes call:
            # a GET of one namespace, answered from the informer cache.
            one = _post(http, service, "bob").json()["namespace"]
            gets = [
                bench._timed(
                    lambda: http.get(f"/api/v1/namespaces/{one}", headers=service.auth("bob"))
                )
                for _ in range(args.requests)
            ]
            print(f"nsprov GET of one namespace:       {bench.percentiles(gets)} "
                  f"({statistics.median(gets) / floor:.2f}x the floor: nsprov's own)")  # fmt: skip

            # A burst no larger than the pool, then the refill it leaves behind.
            _wait_full(service, args.pool)
            hits_before = _metric(service, "nsprov_pool_claims_total", 'result="hit"')
            limits = httpx.Limits(max_connections=CONCURRENCY)
            with httpx.Client(base_url=service.url, timeout=120, limits=limits) as shared:
                _, wall = _concurrently(lambda _: _post(shared, service, "alice"), args.pool)
                hits = _metric(service, "nsprov_pool_claims_total", 'result="hit"') - hits_before
                print(f"burst of {args.pool} at concurrency {CONCURRENCY}, pooled: {wall:.2f}s "
                      f"({args.pool / wall:.0f}/s, {hits:.0f} hits); raw API, same count: "
                      f"{raw_wall:.2f}s ({args.pool / raw_wall:.0f}/s): "
                      f"{raw_wall / wall:.2f}x as fast")  # fmt: skip
                refill = _wait_full(service, args.pool)
                print(f"refill after the burst:            {args.pool} in {refill:.1f}s "
                      f"({args.pool / refill:.1f} claims/s made good)")  # fmt: skip
                steady = 6 * args.pool
                hits_before = _metric(service, "nsprov_pool_claims_total", 'result="hit"')
                _, wall = _concurrently(lambda _: _post(shared, service, "alice"), steady)
                hits = _metric(service, "nsprov_pool_claims_total", 'result="hit"') - hits_before
                _, plain_wall = _concurrently(lambda _: _post(shared, service, "bob"), steady)
                print(f"steady state, {steady} POSTs at concurrency {CONCURRENCY}: pooled "
                      f"{steady / wall:.1f}/s ({hits:.0f} hits), no pool "
                      f"{steady / plain_wall:.1f}/s")  # fmt: skip

                for owner, label in (("alice", "pool"), ("bob", "no pool")):
                    _wait_full(service, args.pool)
                    waited = _metric(service, "nsprov_first_call_wait_seconds_sum")
                    counted = _metric(service, "nsprov_first_call_wait_seconds_count")
                    unready = _metric(service, "nsprov_first_call_unready_total")
                    hits_before = _metric(service, "nsprov_pool_claims_total", 'result="hit"')

                    def create_and_use(_: int, owner: str = owner) -> int:
                        return _first_call(_post(shared, service, owner))

                    statuses, wall = _concurrently(create_and_use, args.first_calls)
                    refused = sum(1 for s in statuses if s == 403)
                    other = sum(1 for s in statuses if s not in (200, 403))
                    checks = _metric(service, "nsprov_first_call_wait_seconds_count") - counted
                    wait = _metric(service, "nsprov_first_call_wait_seconds_sum") - waited
                    hits = _metric(service, "nsprov_pool_claims_total", 'result="hit"')
                    print(
                        f"first calls, {label:<7}: {args.first_calls} creates at concurrency "
                        f"{CONCURRENCY} in {wall:.1f}s, {refused} refused (403), {other} other; "
                        f"{hits - hits_before:.0f} pool hits; first-call check on {checks:.0f} "
                        f"creates, mean wait {1000 * wait / max(checks, 1):.1f} ms, "
                        f"{_metric(service, 'nsprov_first_call_unready_total') - unready:.0f} "
                        "past its deadline"
                    )
        # The same creates with the check off: what it spares the jobs.
        unchecked = _policy(Path(tmp) / "unchecked.yaml", 0)
        unchecked_args = [
            f"--policy-file={unchecked}",
            "--leader-elect=false",
            "--first-call-check=false",
        ]
        with (
            running_service(kubeconfig, Path(tmp) / "unchecked", unchecked_args) as service,
            httpx.Client(
                base_url=service.url, timeout=120, limits=httpx.Limits(max_connections=CONCURRENCY)
            ) as shared,
        ):
            statuses, wall = _concurrently(
                lambda _: _first_call(_post(shared, service, "bob")), args.first_calls
            )
            refused = sum(1 for s in statuses if s == 403)
            print(f"first calls, no pool, check off: {args.first_calls} creates at concurrency "
                  f"{CONCURRENCY} in {wall:.1f}s, {refused} refused (403)")  # fmt: skip
        for ns in core.list_namespace(label_selector=bench.SELECTOR).items:
            with contextlib.suppress(client.exceptions.ApiException):
                core.delete_namespace(ns.metadata.name)
        api.close()
