"""``python -m tests.bench pool``: warm pools and first calls (issue 21), in one run.

    python -m tests.bench pool [--requests 60] [--pool 40] [--first-calls 1000] [--bursts 7]
        On one control plane (``make cluster``'s if it is up, else a fresh one), with two
        tenants that differ only in the pool (``pooled``: --pool ready namespaces;
        ``plain``: none), both bound to a grant with rules (so the first-call check has
        something to ask); once with tokens minted alongside each claim (the default),
        once with ``--pool-tokens-ahead=true``:
        - the raw floor (the four calls a create makes), one at a time, back to back,
          through the typed client, through nsprov's JSON client on a thread (kube.Kube)
          and through its event-loop client (kubeasync.AsyncKube, what nsprov's requests
          use), beside that nsprov;
        - pooled POST p50/p95, one at a time (each after the refill) and back to back
          (every POST a hit), against both floors;
        - --bursts times: the raw API making --pool provisionings at concurrency 16 (one
          reused connection per thread, and the event-loop client with 16 at a time), then
          a burst of --pool POSTs from a full pool at the same concurrency; the ratios,
          and their median, quartiles and range. All sides start warm (an untimed burst
          each first: every connection open) and with the pool full (no refill loading
          either side); where kube-apiserver runs on this machine, the CPU it spent on
          each side's burst, and nsprov's on the pooled one;
        then, with tokens ahead only:
        - POST without a pool, and a cached GET (nsprov's own cost per request);
        - refill: claims per second the keeper makes good after a burst emptied the pool;
        - steady state: 6x --pool POSTs at concurrency 16, the middle half timed, pooled,
          without a pool and for the raw API;
        - first calls: --first-calls creates at concurrency 16 per tenant, each kubeconfig
          used at once (list ConfigMaps with it); 403s counted, and the first-call
          check's wait (nsprov_first_call_wait_seconds) per create; then the same
          without a pool on an nsprov with ``--first-call-check=false``.

Prints figures; asserts nothing but that every POST answers 201.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import os
import secrets
import ssl
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from kubernetes import client, config

from nsprov.core.kube import Kube, load_api_client
from nsprov.core.kubeasync import AsyncKube
from tests import bench
from tests.integration.service import RunningService, metric, running_service
from tests.support import wait_until

GRANT = "nsprov-bench-configmaps"
CONCURRENCY = 16
T = TypeVar("T")
SETTLE_SECONDS = 1.0


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
        # ttl: what _post asks, so tokens minted ahead (for the default ttl) fit its claims.
        "tenants:\n"
        f"  - name: pooled\n    match: {{token: alice}}\n    clusterRole: {GRANT}\n"
        f"    pool: {{size: {pool}, maxAge: 1h}}\n    ttl: 10m\n"
        f"  - name: plain\n    match: {{token: bob}}\n    clusterRole: {GRANT}\n    ttl: 10m\n"
    )
    return path


def _metric(service: RunningService, name: str, *labels: str) -> float:
    """A metric's sum over the samples with ``labels``; 0 when it has none yet."""
    return metric(service, name, *labels) or 0.0


def _ready(service: RunningService) -> float:
    return _metric(service, "nsprov_pool_ready", 'tenant="pooled"')


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


def _process_cpu(pid: int) -> float:
    """CPU seconds process ``pid`` has used (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _apiserver_cpu() -> float | None:
    """CPU seconds the local kube-apiserver has used (``make cluster``'s, on this machine);
    None when there is none here."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            command = (entry / "cmdline").read_bytes().split(b"\0")[0]
            if command.endswith(b"/kube-apiserver"):
                return _process_cpu(int(entry.name))
    return None


def _since(before: float | None, now: float | None) -> float | None:
    return None if before is None or now is None else now - before


def _own_cpu() -> float:
    """CPU seconds this bench process has used (its 16 client threads share the 2 cores)."""
    times = os.times()
    return times.user + times.system


def _steady(work: Callable[[int], Any], n: int) -> float:
    """Completions per second at concurrency 16 between the n/4-th and the 3n/4-th: the
    ramp-up (threads and connections starting, a full pool draining) and the tail (fewer
    than 16 left in flight) are left out."""
    done: list[float] = []

    def timed(i: int) -> None:
        work(i)
        done.append(time.perf_counter())

    _concurrently(timed, n)
    done.sort()
    first, last = n // 4, (3 * n) // 4
    return (last - first) / (done[last] - done[first])


def _raw_api(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = CONCURRENCY  # one connection per thread, reused
    return client.ApiClient(configuration)


@dataclass(frozen=True)
class _Timed:
    seconds: float
    client_cpu: float
    """CPU seconds the bench process spent meanwhile (its client threads)."""
    server_cpu: float | None = None
    """CPU seconds kube-apiserver spent meanwhile, when it runs on this machine."""
    nsprov_cpu: float | None = None


def _raw_many(
    api: client.ApiClient, n: int, *, typed: bool, steady: bool = False
) -> tuple[float, float, float | None]:
    """The raw API making ``n`` provisionings (four calls each) at concurrency 16 through
    ``api`` (one connection per thread, reused: warm it first to keep their set-up out),
    with the typed client or nsprov's JSON one: (seconds, or with ``steady`` completions
    per second in steady state; the bench process's CPU seconds meanwhile). Then waits
    until the namespaces are gone, so their deletion does not load what is measured next."""
    kube = Kube(api)
    stamp = f"{int(time.time())}-{secrets.token_hex(2)}"

    def one(i: int) -> None:
        if typed:
            bench._raw_provision(api, f"bench-pb-{stamp}-{i}")
        else:
            _raw_provision_json(kube, f"bench-pb-{stamp}-{i}")

    cpu, server = _own_cpu(), _apiserver_cpu()
    try:
        figure = _steady(one, n) if steady else _concurrently(one, n)[1]
        cpu, server = _own_cpu() - cpu, _since(server, _apiserver_cpu())
    finally:
        core = client.CoreV1Api(api)
        for i in range(n):
            with contextlib.suppress(client.exceptions.ApiException):
                core.delete_namespace(f"bench-pb-{stamp}-{i}")
        bench._wait_raw_gone(core)
    return figure, cpu, server


def _raw_calls(name: str) -> list[tuple[str, dict[str, Any]]]:
    """The four POSTs of one provisioning (namespace, ServiceAccount, RoleBinding, token)."""
    return [
        ("/api/v1/namespaces", {"metadata": {"name": name}}),
        (f"/api/v1/namespaces/{name}/serviceaccounts", {"metadata": {"name": "sa"}}),
        (
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{name}/rolebindings",
            {
                "metadata": {"name": "rb"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "view"},
                "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": name}],
            },
        ),
        (f"/api/v1/namespaces/{name}/serviceaccounts/sa/token",
         {"spec": {"expirationSeconds": 600}}),
    ]  # fmt: skip


def _raw_provision_json(kube: Kube, name: str) -> None:
    """The four calls of one provisioning through nsprov's own JSON client (kube.Kube: no
    typed models), so the floor is the API server's work and not the bench client's."""
    for path, body in _raw_calls(name):
        kube.post(path, body)


def _raw_json_calls(kubeconfig: Path, n: int) -> list[float]:
    """The raw floor through the JSON client, one provisioning at a time."""
    kube = Kube(load_api_client(str(kubeconfig), 4))
    stamp = f"{int(time.time())}-{secrets.token_hex(2)}"
    try:
        return [
            bench._timed(functools.partial(_raw_provision_json, kube, f"bench-pj-{stamp}-{i}"))
            for i in range(n)
        ]
    finally:
        for i in range(n):
            with contextlib.suppress(Exception):
                kube.delete(f"/api/v1/namespaces/bench-pj-{stamp}-{i}")
        kube.api.close()


class _LoopClient:
    """nsprov's event-loop client (kubeasync.AsyncKube) on one event loop of the bench's
    own, kept between runs so its connections stay open as nsprov's do."""

    def __init__(self, kubeconfig: Path) -> None:
        configuration = load_api_client(str(kubeconfig), CONCURRENCY).configuration
        self.kube = AsyncKube(configuration, pool_size=CONCURRENCY)
        self.loop = asyncio.new_event_loop()

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def close(self) -> None:
        self.loop.run_until_complete(self.kube.aclose())
        self.loop.close()


async def _raw_provision_loop(kube: AsyncKube, name: str) -> None:
    """The same four calls as _raw_provision_json, through the event-loop client."""
    for path, body in _raw_calls(name):
        await kube.post(path, body)


def _raw_loop_calls(kubeconfig: Path, n: int) -> list[float]:
    """The raw floor through the event-loop client, one provisioning at a time."""
    loop = _LoopClient(kubeconfig)
    stamp = f"{int(time.time())}-{secrets.token_hex(2)}"
    names = [f"bench-pl-{stamp}-{i}" for i in range(n)]

    async def timed(name: str) -> float:
        started = time.perf_counter()
        await _raw_provision_loop(loop.kube, name)
        return time.perf_counter() - started

    try:
        return [loop.run(timed(name)) for name in names]
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                loop.run(loop.kube.delete(f"/api/v1/namespaces/{name}"))
        loop.close()


def _raw_many_loop(
    loop: _LoopClient, core: client.CoreV1Api, n: int
) -> tuple[float, float, float | None]:
    """_raw_many through the event-loop client: n provisionings, 16 at a time."""
    stamp = f"{int(time.time())}-{secrets.token_hex(2)}"
    names = [f"bench-pb-{stamp}-{i}" for i in range(n)]

    async def burst() -> float:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(name: str) -> None:
            async with gate:
                await _raw_provision_loop(loop.kube, name)

        started = time.perf_counter()
        await asyncio.gather(*(one(name) for name in names))
        return time.perf_counter() - started

    cpu, server = _own_cpu(), _apiserver_cpu()
    try:
        wall = loop.run(burst())
        cpu, server = _own_cpu() - cpu, _since(server, _apiserver_cpu())
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                loop.run(loop.kube.delete(f"/api/v1/namespaces/{name}"))
        bench._wait_raw_gone(core)
    return wall, cpu, server


def _settle() -> None:
    """Let the cluster finish what the last refill set off before a timed burst: each new
    namespace has kube-controller-manager make its ``default`` ServiceAccount and
    ``kube-root-ca.crt`` ConfigMap a moment later, which would otherwise land in the next
    burst's timing, on either side. Not a wait for a condition: there is none to watch."""
    time.sleep(SETTLE_SECONDS)


def _held(service: RunningService) -> float:
    return _metric(service, "nsprov_pool_tokens_held")


def _full(service: RunningService, pool: int, ahead: bool) -> float:
    """Seconds until the pool is full again (and, minting ahead, each holds a token)."""
    started = time.perf_counter()
    wait_until(lambda: _ready(service) >= pool and (not ahead or _held(service) >= pool),
               timeout=300, interval=0.05, message="pool full")  # fmt: skip
    return time.perf_counter() - started


def _sequential(
    service: RunningService, http: httpx.Client, args: argparse.Namespace, ahead: bool
) -> tuple[list[float], list[float]]:
    """Pooled POSTs one at a time (each after the refill of the one before) and back to
    back (half a pool in a row, the keeper's refill racing): every one a hit."""
    quiet: list[float] = []
    for _ in range(args.requests):
        _full(service, args.pool, ahead)
        time.sleep(0.05)
        quiet.append(bench._timed(lambda: _post(http, service, "alice")))
    racing: list[float] = []
    while len(racing) < args.requests:
        _full(service, args.pool, ahead)
        for _ in range(min(max(1, args.pool // 2), args.requests - len(racing))):
            racing.append(bench._timed(lambda: _post(http, service, "alice")))
    return quiet, racing


def _ratio(samples: list[float], floor: list[float]) -> str:
    return f"{statistics.median(samples) / statistics.median(floor):.2f}x"


def _spread(ratios: list[float]) -> str:
    """Median, quartiles and range of ``ratios``: one number would hide how much they swing."""
    ordered = sorted(ratios)
    if len(ordered) < 4:
        quartiles = ""
    else:
        low, _, high = statistics.quantiles(ordered, n=4)
        quartiles = f", quartiles {low:.2f}-{high:.2f}x"
    return (f"median of {len(ordered)}: {statistics.median(ordered):.2f}x{quartiles}, "
            f"range {ordered[0]:.2f}-{ordered[-1]:.2f}x")  # fmt: skip


def _bursts(
    service: RunningService, kubeconfig: Path, args: argparse.Namespace, ahead: bool
) -> list[float]:
    """--bursts times: the raw API making --pool at concurrency 16, then nsprov serving a
    burst of --pool from a full pool at the same concurrency; the ratios raw/pooled.

    Fair to both sides: each starts with its connections open (one untimed warm-up burst
    each: the raw client's 16, the bench's 16 to nsprov and nsprov's own to the API
    server; a TLS handshake is CPU on the same two cores), each is timed with the pool
    full (the keeper's refill after a burst, and tokens minted ahead, would otherwise
    load the raw API's run), and the raw API's namespaces are gone before nsprov's.
    """
    ratios: list[float] = []
    loop_ratios: list[float] = []
    limits = httpx.Limits(max_connections=CONCURRENCY)
    api = _raw_api(kubeconfig)
    loop = _LoopClient(kubeconfig)
    core = client.CoreV1Api(api)
    with httpx.Client(base_url=service.url, timeout=120, limits=limits) as shared:

        def pooled_burst() -> _Timed:
            _full(service, args.pool, ahead)
            _settle()
            cpu, server = _own_cpu(), _apiserver_cpu()
            nsprov = _process_cpu(service.process.pid)
            _, wall = _concurrently(lambda _: _post(shared, service, "alice"), args.pool)
            return _Timed(wall, _own_cpu() - cpu, _since(server, _apiserver_cpu()),
                          _process_cpu(service.process.pid) - nsprov)  # fmt: skip

        def raw_burst(typed: bool) -> _Timed:
            _full(service, args.pool, ahead)  # no refill under way
            _settle()
            return _Timed(*_raw_many(api, args.pool, typed=typed))

        def raw_loop_burst() -> _Timed:
            _full(service, args.pool, ahead)
            _settle()
            return _Timed(*_raw_many_loop(loop, core, args.pool))

        raw_burst(typed=False)  # the warm-ups
        raw_loop_burst()
        pooled_burst()
        for _ in range(args.bursts):
            typed, raw = raw_burst(typed=True), raw_burst(typed=False)
            on_loop = raw_loop_burst()
            hits = _metric(service, "nsprov_pool_claims_total", 'result="hit"')
            pooled = pooled_burst()
            hits = _metric(service, "nsprov_pool_claims_total", 'result="hit"') - hits
            ratios.append(raw.seconds / pooled.seconds)
            loop_ratios.append(on_loop.seconds / pooled.seconds)
            print(f"  burst of {args.pool} at concurrency {CONCURRENCY}: pooled "
                  f"{pooled.seconds:.3f}s ({hits:.0f} hits, bench client CPU "
                  f"{pooled.client_cpu:.2f}s); raw API, JSON client {raw.seconds:.3f}s "
                  f"(client CPU {raw.client_cpu:.2f}s): {raw.seconds / pooled.seconds:.2f}x as "
                  f"fast; event-loop client {on_loop.seconds:.3f}s (client CPU "
                  f"{on_loop.client_cpu:.2f}s): {on_loop.seconds / pooled.seconds:.2f}x; "
                  f"typed client {typed.seconds:.3f}s: "
                  f"{typed.seconds / pooled.seconds:.2f}x")  # fmt: skip
            if pooled.server_cpu is not None and on_loop.server_cpu is not None:
                print(f"    CPU: kube-apiserver {pooled.server_cpu:.2f}s pooled, "
                      f"{on_loop.server_cpu:.2f}s raw (event-loop client); nsprov "
                      f"{pooled.nsprov_cpu:.2f}s")  # fmt: skip
    api.close()
    loop.close()
    print(f"burst ratio, pooled vs the raw API (event-loop client), {_spread(loop_ratios)}")
    return ratios


def _service_args(policy: Path, ahead: bool) -> list[str]:
    return [f"--policy-file={policy}", "--leader-elect=false", f"--pool-tokens-ahead={ahead}"]


def pool(args: argparse.Namespace) -> None:
    bench._print_header()
    with bench._kubeconfig() as kubeconfig, tempfile.TemporaryDirectory() as tmp:
        _grant(kubeconfig)
        api = config.new_client_from_config(config_file=str(kubeconfig))
        core = client.CoreV1Api(api)
        policy = _policy(Path(tmp) / "policy.yaml", args.pool)
        for ahead in (False, True):
            print(f"--- nsprov --pool-tokens-ahead={str(ahead).lower()}")
            with (
                running_service(kubeconfig, Path(tmp) / f"svc-{ahead}",
                                _service_args(policy, ahead)) as service,
                service.client() as http,
            ):  # fmt: skip
                filled = _full(service, args.pool, ahead)
                print(f"pool of {args.pool} filled from empty in {filled:.1f}s "
                      f"({args.pool / filled:.1f}/s)")  # fmt: skip
                # The floors right before the POSTs, the same nsprov idling beside them.
                typed = bench.raw_calls(api, args.requests)
                bench._wait_raw_gone(core)
                plain_json = _raw_json_calls(kubeconfig, args.requests)
                bench._wait_raw_gone(core)
                on_loop = _raw_loop_calls(kubeconfig, args.requests)
                bench._wait_raw_gone(core)
                print(f"raw floor, 4 calls, typed client:  {bench.percentiles(typed)}")
                print(f"raw floor, 4 calls, JSON client:   {bench.percentiles(plain_json)}")
                print(f"raw floor, 4 calls, event loop:    {bench.percentiles(on_loop)}")
                quiet, racing = _sequential(service, http, args, ahead)
                tokens = _metric(service, "nsprov_pool_tokens_total", 'minted="ahead"')
                for label, samples in (("one at a time", quiet), ("back to back", racing)):
                    print(f"nsprov POST, pooled, {label + ':':<14} {bench.percentiles(samples)} "
                          f"({_ratio(samples, typed)} the typed floor, "
                          f"{_ratio(samples, plain_json)} the JSON floor, "
                          f"{_ratio(samples, on_loop)} the event-loop floor)")  # fmt: skip
                print(f"  of them claimed with a token minted ahead: {tokens:.0f}")
                ratios = _bursts(service, kubeconfig, args, ahead)
                print(f"burst ratio, pooled vs the raw API (JSON client), {_spread(ratios)}")
                if ahead:
                    _rest(service, http, kubeconfig, args, typed)
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


def _rest(
    service: RunningService,
    http: httpx.Client,
    kubeconfig: Path,
    args: argparse.Namespace,
    typed: list[float],
) -> None:
    """No pool, nsprov's own cost, refill, steady state and first calls (one nsprov)."""
    plain = [bench._timed(lambda: _post(http, service, "bob")) for _ in range(args.requests)]
    print(f"nsprov POST, no pool, sequential:  {bench.percentiles(plain)} "
          f"({_ratio(plain, typed)} the typed floor)")  # fmt: skip
    # nsprov's own cost per request (HTTP, auth, routing, JSON), no Kubernetes call: a GET
    # of one namespace, answered from the informer cache.
    one = _post(http, service, "bob").json()["namespace"]
    gets = [
        bench._timed(lambda: http.get(f"/api/v1/namespaces/{one}", headers=service.auth("bob")))
        for _ in range(args.requests)
    ]
    print(f"nsprov GET of one namespace:       {bench.percentiles(gets)} "
          f"({_ratio(gets, typed)} the typed floor: nsprov's own)")  # fmt: skip
    limits = httpx.Limits(max_connections=CONCURRENCY)
    with httpx.Client(base_url=service.url, timeout=120, limits=limits) as shared:
        _full(service, args.pool, True)
        made = _metric(service, "nsprov_pool_made_total")
        hits = _metric(service, "nsprov_pool_claims_total", 'result="hit"')
        # Timed from the burst's start: the keeper begins making good the first claims
        # while the burst still runs, and what it made then counts below.
        started = time.perf_counter()
        _concurrently(lambda _: _post(shared, service, "alice"), args.pool)
        hits = _metric(service, "nsprov_pool_claims_total", 'result="hit"') - hits
        # Made good: as many made anew as were claimed, and the pool full (with tokens)
        # again. Waiting on the pool alone could pass before the claims have left it.
        wait_until(lambda: _metric(service, "nsprov_pool_made_total") - made >= hits,
                   timeout=300, interval=0.05, message="claims made good")  # fmt: skip
        _full(service, args.pool, True)
        refill = time.perf_counter() - started
        print(
            f"refill from the start of a burst of {args.pool} ({hits:.0f} claimed): {refill:.1f}s "
            f"({hits / refill:.1f} claims/s made good, tokens minted ahead included)"
        )
        # Steady state: 6 pools' worth at concurrency 16, the middle half timed (the pool
        # drains within the first quarter, so what is timed is claims as fast as the keeper
        # refills, and creates for the rest), against the raw API the same way.
        steady = 6 * args.pool
        api = _raw_api(kubeconfig)
        raw_rate, _, _ = _raw_many(api, steady, typed=False, steady=True)
        api.close()
        _full(service, args.pool, True)
        hits = _metric(service, "nsprov_pool_claims_total", 'result="hit"')
        pooled_rate = _steady(lambda _: _post(shared, service, "alice"), steady)
        hits = _metric(service, "nsprov_pool_claims_total", 'result="hit"') - hits
        plain_rate = _steady(lambda _: _post(shared, service, "bob"), steady)
        print(f"steady state, {steady} POSTs at concurrency {CONCURRENCY}, middle half: pooled "
              f"{pooled_rate:.0f}/s ({hits:.0f} hits of {steady}), no pool {plain_rate:.0f}/s, "
              f"raw API {raw_rate:.0f}/s ({pooled_rate / raw_rate:.2f}x and "
              f"{plain_rate / raw_rate:.2f}x the raw API)")  # fmt: skip
        for owner, label in (("alice", "pool"), ("bob", "no pool")):
            _full(service, args.pool, True)
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
