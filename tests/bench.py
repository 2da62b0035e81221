"""``make bench``: provisioning latency through nsprov vs. the raw API calls it makes.

Prints figures; asserts nothing (speed targets do not belong in timed tests).
Uses the local control plane (fresh, or ``make cluster``'s if it is up).

    python -m tests.bench [--requests 100] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from kubernetes import client, config

from tests.cluster import controlplane
from tests.integration.service import running_service

_REPO = Path(__file__).resolve().parents[1]
SELECTOR = "controller.observatorium.io=namespace-provisioner"


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    return (
        f"n={len(ordered)} p50={pct(50):.1f}ms p95={pct(95):.1f}ms "
        f"max={ordered[-1] * 1000:.1f}ms mean={statistics.fmean(ordered) * 1000:.1f}ms"
    )


@contextlib.contextmanager
def _kubeconfig() -> Iterator[Path]:
    local = _REPO / ".cluster" / "kubeconfig"
    if local.exists():
        yield local
        return
    with controlplane.running() as plane:
        yield plane.kubeconfig


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def raw_calls(api: client.ApiClient, n: int) -> list[float]:
    """The four calls of one provisioning, made directly with the official client."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    totals, names = [], []
    for i in range(n):
        name = f"bench-raw-{i}-{int(time.time())}"
        names.append(name)

        def provision(name: str = name) -> None:
            core.create_namespace(
                client.V1Namespace(
                    metadata=client.V1ObjectMeta(name=name, labels={"nsprov-bench": "raw"})
                )
            )
            core.create_namespaced_service_account(
                name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="sa"))
            )
            rbac.create_namespaced_role_binding(
                name,
                client.V1RoleBinding(
                    metadata=client.V1ObjectMeta(name="rb"),
                    role_ref=client.V1RoleRef(
                        api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="view"
                    ),
                    subjects=[
                        client.RbacV1Subject(kind="ServiceAccount", name="sa", namespace=name)
                    ],
                ),
            )
            core.create_namespaced_service_account_token(
                "sa",
                name,
                client.AuthenticationV1TokenRequest(
                    spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
                ),
            )

        totals.append(_timed(provision))
    for name in names:
        core.delete_namespace(name)
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    with _kubeconfig() as kubeconfig, tempfile.TemporaryDirectory() as tmp:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        core = client.CoreV1Api(api)
        raw = raw_calls(api, args.requests)
        print(f"raw client, 4 sequential calls:  {percentiles(raw)}")
        with running_service(kubeconfig, Path(tmp)) as service, service.client() as http:
            auth = service.auth()
            sequential = []
            for _ in range(args.requests):
                started = time.perf_counter()
                response = http.post("/api/v1/namespaces", params={"ttl": "10m"}, headers=auth)
                sequential.append(time.perf_counter() - started)
                assert response.status_code == 201, response.text
            print(f"nsprov POST, sequential:         {percentiles(sequential)}")

            def one(_: int) -> float:
                with httpx.Client(base_url=service.url, timeout=120) as own:
                    started = time.perf_counter()
                    response = own.post("/api/v1/namespaces", headers=auth)
                    assert response.status_code == 201, response.text
                    return time.perf_counter() - started

            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
                burst = list(pool.map(one, range(args.concurrency)))
            wall = time.perf_counter() - started
            print(
                f"nsprov POST, {args.concurrency} concurrent:       {percentiles(burst)} "
                f"wall={wall:.2f}s ({args.concurrency / wall:.0f}/s)"
            )
        for ns in core.list_namespace(label_selector=SELECTOR).items:
            core.delete_namespace(ns.metadata.name)
        api.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
