"""``make bench``: figures for provisioning and for the controller.

Prints figures; asserts nothing (speed targets do not belong in timed tests).

    python -m tests.bench provision [--requests 100] [--concurrency 50]
        POST latency through nsprov vs. the four raw API calls it makes, on the
        local control plane (``make cluster``'s if it is up, else a fresh one);
        throughput at concurrency 1, 4, 16 and 64 vs. the raw calls at the same
        concurrency, and the probes' latency while 64 concurrent POSTs run.
    python -m tests.bench controller [--expiring 50] [--live 1000] [--idle 30]
        expiry lag over short-TTL namespaces, then the service's RSS and idle CPU
        with many live namespaces, on a fresh control plane.
    python -m tests.bench burst [--count 500] [--window 10] [--lead 40]
        expiry lag of a burst: ``count`` namespaces created through the API with
        ttls chosen so that all expire within one ``window``-second window, which
        starts ``lead`` seconds after the first create (after the last one), on a
        fresh control plane; lag from each expiry instant to nsprov's accepted DELETE.
    python -m tests.bench oidc [--requests 100] [--rotations 5]
        POST latency with an OIDC ID token (loopback issuer, warm key cache) vs a
        static token, interleaved; then the first request after each key rotation.
    python -m tests.bench expiry-pods [--namespaces 3] [--pods 10] [--ttl 60]
        time from each namespace's expiry to the namespace being gone, each holding
        ``pods`` running pods that ignore SIGTERM, on a fresh control plane with a node
        (root, containerd: see docs/development.md; not in ``make bench``; where others use the
        node, run it under ``flock /tmp/nsprov-node.lock``). nsprov runs as a local
        process with k8s/'s admission policies applied (maxGracePeriod 30 s).
    python -m tests.bench client [--runs 20]
        time from `nsprov run` start to CMD start vs. the same POST through curl,
        and the installed size of `pip install nsprov` vs. `pip install 'nsprov[server]'`.
    python -m tests.bench hostile [--attacks abBcd] [--objects 100] [--heads 800]
                                  [--slow 1000] [--tokens 10000]
        nsprov's RSS (before, peak, after) and a legitimate GET's p95 during each of
        (a) labelled 1 MB ServiceAccounts made as admin in an unrelated namespace (the
        caches, not admission), (b) unfinished 250 KiB heads, (B) the same kept coming
        for --sustain seconds (a CPU flood: the attacker shares the machine), (c) clients
        sending a byte a second, (d) requests with 64 KiB bearer tokens; a fresh nsprov
        (default limits) for each, loopback only, every attack bounded in count and time.
    python -m tests.bench pool [--requests 60] [--pool 40] [--first-calls 1000] [--bursts 7]
        warm pools and first calls (issue 21): tests/bench_pool.py says what it measures.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from kubernetes import client, config

from nsprov.identity.oidc import Verifier
from nsprov.policy.file import parse_policy
from tests import hostile
from tests.cluster import build, controlplane, images
from tests.cluster import node as node_module
from tests.integration.service import RunningService, running_service
from tests.oidc_issuer import LoopbackIssuer

_REPO = Path(__file__).resolve().parents[1]
SELECTOR = "controller.observatorium.io=namespace-provisioner"


def percentiles(samples: list[float], points: tuple[int, ...] = (50, 95)) -> str:
    if not samples:
        return "no samples"
    ordered = sorted(samples)

    def ms(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    shown = " ".join(f"p{p}={ms(p):.1f}ms" for p in points)
    return (
        f"n={len(ordered)} {shown} max={ordered[-1] * 1000:.1f}ms "
        f"mean={statistics.fmean(ordered) * 1000:.1f}ms"
    )


GRANT = "namespace-provisioner-grant"


def _ensure_grant(kubeconfig: Path) -> None:
    """The empty default grant ClusterRole, as k8s/ installs it: without it nsprov
    pauses provisioning (503), and a fresh control plane has none.
    """
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        client.RbacAuthorizationV1Api(api).create_cluster_role(
            client.V1ClusterRole(metadata=client.V1ObjectMeta(name=GRANT), rules=[])
        )
    except client.exceptions.ApiException as exc:
        if exc.status != 409:
            raise
    finally:
        api.close()


@contextlib.contextmanager
def _kubeconfig() -> Iterator[Path]:
    local = _REPO / ".cluster" / "kubeconfig"
    if local.exists():
        _ensure_grant(local)
        yield local
        return
    with controlplane.running() as plane:
        _ensure_grant(plane.kubeconfig)
        yield plane.kubeconfig


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def raw_calls(api: client.ApiClient, n: int) -> list[float]:
    """The four calls of one provisioning, made directly with the official client."""
    core = client.CoreV1Api(api)
    totals, names = [], []
    for i in range(n):
        name = f"bench-raw-{i}-{int(time.time())}"
        names.append(name)
        totals.append(_timed(functools.partial(_raw_provision, api, name)))
    for name in names:
        core.delete_namespace(name)
    return totals


def _machine() -> str:
    """The machine a figure was measured on: kernel, CPU model and count, Python."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.system()} {platform.release()} {platform.machine()}, {model} x "
        f"{os.cpu_count()}, Python {platform.python_version()}"
    )


def _print_header() -> None:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {_machine()}; load average at start {load}")
    print(f"command: python -m tests.bench {' '.join(sys.argv[1:])}".rstrip())


def _raw_provision(api: client.ApiClient, name: str) -> None:
    """One provisioning as the four raw calls nsprov makes (the floor it is measured against)."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"nsprov-bench": "raw"}))
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
            subjects=[client.RbacV1Subject(kind="ServiceAccount", name="sa", namespace=name)],
        ),
    )
    core.create_namespaced_service_account_token(
        "sa",
        name,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    )


def _throughput(work: Callable[[int], object], concurrency: int, n: int) -> float:
    """Calls of ``work`` per second with ``concurrency`` of them in flight, over ``n`` calls."""
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(work, range(n)))
    return n / (time.perf_counter() - started)


LEVELS = (1, 4, 16, 64)


def _calls_at(concurrency: int) -> int:
    return max(32, 2 * concurrency)


def raw_throughput(kubeconfig: Path) -> dict[int, float]:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = max(LEVELS)
    api = client.ApiClient(configuration)
    names: list[str] = []
    rates = {}
    try:
        for level in LEVELS:
            stamp = f"{level}-{int(time.time())}"

            def one(i: int, stamp: str = stamp) -> None:
                name = f"bench-tp-{stamp}-{i}"
                names.append(name)
                _raw_provision(api, name)

            rates[level] = _throughput(one, level, _calls_at(level))
    finally:
        core = client.CoreV1Api(api)
        for name in names:
            with contextlib.suppress(client.exceptions.ApiException):
                core.delete_namespace(name)
        api.close()
    return rates


def _wait_raw_gone(core: client.CoreV1Api, timeout: float = 300) -> float:
    """Seconds until no ``bench-`` namespace is left (deleted ones finalized)."""
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        if not any(ns.metadata.name.startswith("bench-") for ns in core.list_namespace().items):
            break
        time.sleep(0.5)
    return time.monotonic() - started


def _probe_latencies(internal_url: str, stop: threading.Event) -> dict[str, list[float]]:
    seen: dict[str, list[float]] = {"/healthz": [], "/readyz": [], "/metrics": []}
    with httpx.Client(base_url=internal_url, timeout=30) as http:
        while not stop.is_set():
            for path, samples in seen.items():
                started = time.perf_counter()
                http.get(path).raise_for_status()
                samples.append(time.perf_counter() - started)
            stop.wait(0.05)
    return seen


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def controller(args: argparse.Namespace) -> None:
    _print_header()
    with controlplane.running() as plane, tempfile.TemporaryDirectory() as tmp:
        _ensure_grant(plane.kubeconfig)
        service_args = ["--max-ttl=24h", "--min-ttl=1s"]
        with running_service(plane.kubeconfig, Path(tmp), service_args) as service:
            pid = service.process.pid
            auth = service.auth()
            print(f"service RSS at start:            {_rss_mib(pid):.1f} MiB")

            def create(ttl: str) -> str:
                with httpx.Client(base_url=service.url, timeout=120) as http:
                    response = http.post("/api/v1/namespaces", params={"ttl": ttl}, headers=auth)
                    assert response.status_code == 201, response.text
                    return response.headers["x-namespace"]

            # Short TTLs spread over a few seconds, so expiries do not all share one instant.
            ttls = [f"{3 + i % 5}s" for i in range(args.expiring)]
            with concurrent.futures.ThreadPoolExecutor(10) as pool:
                names = set(pool.map(create, ttls))
            deadline = time.monotonic() + 120
            lags: dict[str, float] = {}
            while len(lags) < len(names) and time.monotonic() < deadline:
                for line in service.log().splitlines():
                    match = re.search(r"deleted namespace=(\S+) .*lag_seconds=([0-9.]+)", line)
                    if match and match.group(1) in names:
                        lags[match.group(1)] = float(match.group(2))
                time.sleep(0.5)
            lag = percentiles(list(lags.values()), (50, 99))
            print(f"expiry lag, {len(lags)} of {len(names)} expired: {lag}")

            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(20) as pool:
                list(pool.map(create, ["12h"] * args.live))
            print(f"created {args.live} live namespaces in {time.monotonic() - started:.1f}s")
            metrics_url = f"{service.internal_url}/metrics"

            def live() -> float:
                # By tenant since issue 10: the sum of every tenant's series.
                series = [
                    float(line.rsplit(" ", 1)[1])
                    for line in httpx.get(metrics_url).text.splitlines()
                    if line.startswith("nsprov_live_namespaces{")
                ]
                return sum(series) if series else -1

            while live() < args.live and time.monotonic() < started + 300:
                time.sleep(0.5)
            while float(_metric_value(metrics_url, "nsprov_queue_depth")) > 0:
                time.sleep(0.5)
            time.sleep(2)  # let the last reconciles (settle window) finish
            print(f"service RSS with {args.live} live:     {_rss_mib(pid):.1f} MiB")
            cpu_before, wall_before = _cpu_seconds(pid), time.monotonic()
            time.sleep(args.idle)
            cpu = _cpu_seconds(pid) - cpu_before
            wall = time.monotonic() - wall_before
            print(
                f"idle CPU with {args.live} live:        {cpu:.2f}s over {wall:.0f}s "
                f"= {100 * cpu / wall:.2f}% of one core"
            )
            _at_scale(service, args.live)


_DELETED = re.compile(r"deleted namespace=(\S+) .*lag_seconds=([0-9.]+)")


def burst(args: argparse.Namespace) -> None:
    """Lag of ``count`` expiries that all fall within one ``window``-second window.

    The expiry label has whole seconds (the provisioner rounds up), so the burst
    is ``count / window`` namespaces sharing each second of the window: each
    request's ttl is computed when it is sent, so that its namespace expires at
    the second chosen for it, whatever the time creating the others took.
    """
    _print_header()
    with controlplane.running() as plane, tempfile.TemporaryDirectory() as tmp:
        _ensure_grant(plane.kubeconfig)
        with running_service(plane.kubeconfig, Path(tmp), ["--min-ttl=1s"]) as service:
            auth = service.auth()
            window_start = math.ceil(time.time() + args.lead)
            limits = httpx.Limits(max_connections=16)

            with httpx.Client(base_url=service.url, timeout=120, limits=limits) as http:

                def create(i: int) -> str:
                    # 0.2 s below the target second: ceil() lands on it despite the
                    # client's and the service's clocks reading a few ms apart.
                    target = window_start + (i * args.window) // args.count
                    ttl = f"{target - time.time() - 0.2:.3f}s"
                    response = http.post("/api/v1/namespaces", params={"ttl": ttl}, headers=auth)
                    assert response.status_code == 201, response.text
                    return str(response.headers["x-namespace"])

                started = time.time()
                with concurrent.futures.ThreadPoolExecutor(16) as pool:
                    names = set(pool.map(create, range(args.count)))
            created = time.time()
            print(f"created {len(names)} in {created - started:.1f}s through the API "
                  f"(16 concurrent); window {window_start - created:.1f}s after the last, "
                  f"{args.window}s long")  # fmt: skip
            if created >= window_start:
                raise SystemExit("creating took longer than --lead; raise it")
            lags: dict[str, float] = {}
            deadline = window_start + args.window + 120
            while len(lags) < len(names) and time.time() < deadline:
                for match in _DELETED.finditer(service.log()):
                    if match.group(1) in names:
                        lags[match.group(1)] = float(match.group(2))
                time.sleep(0.5)
            lag = percentiles(list(lags.values()), (50, 99))
            print(f"burst expiry lag, {len(lags)} of {len(names)} deleted: {lag}")
            print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


def _at_scale(service: RunningService, live: int) -> None:
    """With ``live`` namespaces of alice's: bob's list (10 of his), POST p50, restart-to-ready."""
    bob = service.auth("bob")
    with service.client() as http:
        for _ in range(10):
            http.post("/api/v1/namespaces", params={"ttl": "12h"}, headers=bob).raise_for_status()
        lists = []
        for _ in range(50):
            started = time.perf_counter()
            answer = http.get("/api/v1/namespaces", headers=bob)
            lists.append(time.perf_counter() - started)
            assert len(answer.json()["items"]) == 10, answer.text
        print(f"GET list, owner with 10 of {live + 10}: {percentiles(lists)}")
        pages = []
        for _ in range(20):
            started = time.perf_counter()
            http.get("/api/v1/namespaces", headers=service.auth()).raise_for_status()
            pages.append(time.perf_counter() - started)
        print(f"GET list, first page of {live}:     {percentiles(pages)}")
        posts = []
        for _ in range(20):
            started = time.perf_counter()
            http.post("/api/v1/namespaces", params={"ttl": "12h"}, headers=bob).raise_for_status()
            posts.append(time.perf_counter() - started)
        print(f"POST with {live} live:               {percentiles(posts)}")
    service.stop()
    started = time.monotonic()
    service.start_again(timeout=120)
    print(f"restart-to-ready with {live} live:  {time.monotonic() - started:.2f}s "
          "(process start to /readyz 200, polled every 0.1s)")  # fmt: skip
    print(f"service RSS after restart:        {_rss_mib(service.process.pid):.1f} MiB")


def _metric_value(url: str, name: str) -> str:
    for line in httpx.get(url).text.splitlines():
        if line.startswith(name + " "):
            return line.split()[1]
    return "0"


def _p50(samples: list[float]) -> str:
    ordered = sorted(samples)
    return (
        f"p50={statistics.median(ordered) * 1000:.0f}ms min={ordered[0] * 1000:.0f}ms "
        f"max={ordered[-1] * 1000:.0f}ms (n={len(ordered)})"
    )


def _site_size(venv: Path) -> int:
    site = next(venv.glob("lib/python*/site-packages"))
    return sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and not p.is_symlink())


def _installed_size(extra: str, workdir: Path) -> tuple[int, str]:
    """Bytes that ``pip install nsprov<extra>`` adds to a fresh virtualenv's site-packages."""
    venv = workdir / f"venv{extra or '-client'}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    before = _site_size(venv)
    command = f"pip install '{_REPO}{extra}'"
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"{_REPO}{extra}"],
        check=True,
    )
    return _site_size(venv) - before, command


def client_figures(args: argparse.Namespace) -> None:
    print(f"machine: {_machine()}")
    load_before = f"{os.getloadavg()[0]:.1f}"
    nsprov = str(Path(sys.executable).parent / "nsprov")
    with _kubeconfig() as kubeconfig, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with running_service(kubeconfig, work) as service:
            env = {
                **os.environ,
                "NSPROV_URL": service.url,
                "NSPROV_TOKEN": service.tokens["alice"],
            }
            stamp = work / "cmd-started"
            header = work / "auth-header"
            header.write_text(f"Authorization: Bearer {service.tokens['alice']}\n")
            curl_argv = [
                "curl", "--silent", "--fail", "--header", f"@{header}", "--request", "POST",
                "--output", str(work / "kubeconfig"), f"{service.url}/api/v1/namespaces?ttl=10m",
            ]  # fmt: skip
            # Interleaved, one nsprov run then one curl, so that a machine whose load drifts
            # weighs on both alike; the difference of each pair is nsprov's own cost.
            to_cmd, with_curl, beyond = [], [], []
            for run in range(args.runs + 1):
                started = time.time()
                subprocess.run(
                    [nsprov, "run", "--ttl=10m", "--", "sh", "-c", f"date +%s.%N > {stamp}"],
                    env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                to_cmd.append(float(stamp.read_text()) - started)
                started = time.time()
                subprocess.run(curl_argv, check=True)
                with_curl.append(time.time() - started)
                beyond.append(to_cmd[-1] - with_curl[-1])
                if run == 0:  # a warm-up pair: bytecode written, caches filled
                    to_cmd, with_curl, beyond = [], [], []
        print(f"load average before: {load_before}; after: {os.getloadavg()[0]:.1f}")
        print("$ nsprov run --ttl=10m -- sh -c 'date +%s.%N > file'   (start -> CMD starts)")
        print(f"  {_p50(to_cmd)}")
        print(f"$ {' '.join(curl_argv[:7])} ... '{service.url}/api/v1/namespaces?ttl=10m'")
        print(f"  {_p50(with_curl)}")
        print("nsprov run beyond the same POST through curl (each pair's difference):")
        print(f"  {_p50(beyond)}")
        api = config.new_client_from_config(config_file=str(kubeconfig))
        core = client.CoreV1Api(api)
        for ns in core.list_namespace(label_selector=SELECTOR).items:
            core.delete_namespace(ns.metadata.name)
        api.close()
        for extra in ("", "[server]"):
            size, command = _installed_size(extra, work)
            print(f"$ {command}: {size / 2**20:.1f} MiB added to site-packages (.pyc included)")


HOSTILE_RSS_CEILING_MIB = 1024
"""(a) stops making objects once nsprov is this large: a figure, not the machine's memory."""


def hostile_figures(args: argparse.Namespace) -> None:
    """One figure per attack of issue 19, each against a freshly started nsprov."""
    _print_header()
    print(f"open files: {hostile.raise_fd_limit()} (raised for this process and nsprov)")
    attacks = {
        "a": (f"(a) {args.objects} labelled {args.object_mb:g} MB ServiceAccounts elsewhere",
              _labelled_objects),
        "b": (f"(b) {args.heads} unfinished {args.head_kib} KiB heads (the issue's attack)",
              lambda service, kubeconfig, args: hostile.push(
                  service.url, hostile.unfinished_head(args.head_kib * 1024),
                  connections=args.heads, timeout=30)),
        "B": (f"(B) the same, each cut connection replaced at once for {args.sustain:g}s",
              lambda service, kubeconfig, args: hostile.push(
                  service.url, hostile.unfinished_head(args.head_kib * 1024),
                  connections=args.heads, timeout=args.sustain + 30, sustain=args.sustain)),
        "c": (f"(c) {args.slow} connections sending a byte a second",
              lambda service, kubeconfig, args: hostile.push(
                  service.url, hostile.slow_head(), connections=args.slow, timeout=60,
                  bytes_per_second=1)),
        "d": (f"(d) {args.tokens} requests with {args.token_kib} KiB bearer tokens",
              lambda service, kubeconfig, args: hostile.big_tokens(
                  service.url, requests=args.tokens, token_bytes=args.token_kib * 1024)),
    }  # fmt: skip
    with _kubeconfig() as kubeconfig, tempfile.TemporaryDirectory() as tmp:
        for key in args.attacks:
            title, attack = attacks[key]
            with running_service(kubeconfig, Path(tmp) / key) as service:
                with service.client() as http:  # what a first request loads, before measuring
                    http.get("/api/v1/namespaces", headers=service.auth()).raise_for_status()
                with (
                    hostile.PeakRss(service.process.pid) as rss,
                    hostile.Legitimate(service.url, service.auth()) as legit,
                ):
                    outcome = attack(service, kubeconfig, args)
                alive = "up" if service.process.poll() is None else "DOWN"
                print(f"{title}:")
                print(
                    f"  nsprov RSS {rss.before:.1f} -> peak {rss.peak:.1f} MiB "
                    f"(+{rss.growth:.1f}), {rss.after:.1f} after; nsprov {alive}"
                )
                print(
                    f"  legitimate GET /api/v1/namespaces during it: "
                    f"{percentiles(legit.latencies)} statuses {dict(legit.statuses)}"
                )
                print(f"  attack: {outcome if isinstance(outcome, str) else outcome.summary()}")
                print(f"  load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
                if key == "a":
                    service.stop()
                    started = time.monotonic()
                    service.start_again(timeout=120)
                    print(
                        f"  a fresh replica with them there: ready in "
                        f"{time.monotonic() - started:.1f}s at "
                        f"{hostile.rss_mib(service.process.pid):.1f} MiB"
                    )
                    _delete_namespace(kubeconfig, _HOSTILE_NAMESPACE)


_HOSTILE_NAMESPACE = "bench-hostile-elsewhere"


def _labelled_objects(service: RunningService, kubeconfig: Path, args: argparse.Namespace) -> str:
    """ServiceAccounts of about ``object_mb`` MB each, carrying nsprov's selector label, made
    by the admin in a namespace nsprov does not manage; then 10 s for the caches to settle."""
    api = config.new_client_from_config(config_file=str(kubeconfig))
    core = client.CoreV1Api(api)
    key, _, value = SELECTOR.partition("=")
    try:
        core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=_HOSTILE_NAMESPACE))
        )
    except client.exceptions.ApiException as exc:
        if exc.status != 409:
            raise
    # {"name": "pull-secret-000001"} is 27 bytes of JSON.
    secrets = [{"name": f"pull-secret-{i:06d}"} for i in range(int(args.object_mb * 1e6 / 27))]
    made, started = 0, time.monotonic()
    try:
        for i in range(args.objects):
            if hostile.rss_mib(service.process.pid) > HOSTILE_RSS_CEILING_MIB:
                break
            body = {
                "metadata": {"name": f"big-{i:03d}", "labels": {key: value}},
                "imagePullSecrets": secrets,
            }
            core.create_namespaced_service_account(_HOSTILE_NAMESPACE, body)
            made += 1
        time.sleep(10)
    finally:
        api.close()
    stopped = (
        "" if made == args.objects else f" (stopped: nsprov above {HOSTILE_RSS_CEILING_MIB} MiB)"
    )
    return f"{made} objects made in {time.monotonic() - started - 10:.1f}s, then 10s{stopped}"


def _delete_namespace(kubeconfig: Path, name: str) -> None:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        client.CoreV1Api(api).delete_namespace(name)
    except client.exceptions.ApiException as exc:
        if exc.status != 404:
            raise
    finally:
        api.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command")
    provision_ = commands.add_parser("provision")
    provision_.add_argument("--requests", type=int, default=100)
    provision_.add_argument("--concurrency", type=int, default=50)
    controller_ = commands.add_parser("controller")
    controller_.add_argument("--expiring", type=int, default=50)
    controller_.add_argument("--live", type=int, default=1000)
    controller_.add_argument("--idle", type=float, default=30.0)
    oidc_ = commands.add_parser("oidc")
    oidc_.add_argument("--requests", type=int, default=100)
    oidc_.add_argument("--rotations", type=int, default=5)
    burst_ = commands.add_parser("burst")
    burst_.add_argument("--count", type=int, default=500)
    burst_.add_argument("--window", type=int, default=10)
    burst_.add_argument("--lead", type=float, default=40.0)
    client_ = commands.add_parser("client")
    client_.add_argument("--runs", type=int, default=20)
    pods_ = commands.add_parser("expiry-pods")
    pods_.add_argument("--namespaces", type=int, default=3)
    pods_.add_argument("--pods", type=int, default=10)
    pods_.add_argument("--ttl", type=int, default=60)
    pool_ = commands.add_parser("pool")
    pool_.add_argument("--requests", type=int, default=60)
    pool_.add_argument("--pool", type=int, default=40)
    pool_.add_argument("--first-calls", type=int, default=1000)
    pool_.add_argument("--bursts", type=int, default=7)
    hostile_ = commands.add_parser("hostile")
    hostile_.add_argument("--attacks", default="abBcd", help="which of a, b, B, c, d")
    hostile_.add_argument("--objects", type=int, default=100)
    hostile_.add_argument("--object-mb", type=float, default=1.0)
    hostile_.add_argument("--heads", type=int, default=800)
    hostile_.add_argument("--head-kib", type=int, default=250)
    hostile_.add_argument("--sustain", type=float, default=10.0)
    hostile_.add_argument("--slow", type=int, default=1000)
    hostile_.add_argument("--tokens", type=int, default=10000)
    hostile_.add_argument("--token-kib", type=int, default=64)
    args = parser.parse_args()
    if args.command == "expiry-pods":
        expiry_pods(args)
    elif args.command == "controller":
        controller(args)
    elif args.command == "burst":
        burst(args)
    elif args.command == "oidc":
        oidc(args)
    elif args.command == "client":
        client_figures(args)
    elif args.command == "hostile":
        hostile_figures(args)
    elif args.command == "pool":
        from tests import bench_pool  # it builds on this module's raw floor

        bench_pool.pool(args)
    else:
        provision(args if args.command else provision_.parse_args([]))
    return 0


def provision(args: argparse.Namespace) -> None:
    _print_header()
    with _kubeconfig() as kubeconfig, tempfile.TemporaryDirectory() as tmp:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        core = client.CoreV1Api(api)
        raw = raw_calls(api, args.requests)
        print(f"raw client, 4 sequential calls:  {percentiles(raw)}")
        # The raw calls' namespaces are deleted once measured; measure the next figures
        # only once kube-controller-manager has finalized them, not while it empties
        # hundreds of namespaces (it made nsprov's sequential POSTs look 1.7-2x the floor).
        print(f"raw namespaces finalized after   {_wait_raw_gone(core):.1f}s")
        raw_rates = raw_throughput(kubeconfig)
        print(f"raw namespaces finalized after   {_wait_raw_gone(core):.1f}s")
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
            seq_ratio = statistics.median(sequential) / statistics.median(raw)
            print(f"POST p50 vs raw-API floor:       {seq_ratio:.2f}x")
            limits = httpx.Limits(max_connections=max(LEVELS))
            with httpx.Client(base_url=service.url, timeout=120, limits=limits) as shared:

                def post(_: int) -> None:
                    shared.post("/api/v1/namespaces", headers=auth).raise_for_status()

                for level in LEVELS:
                    rate = _throughput(post, level, _calls_at(level))
                    print(
                        f"throughput at concurrency {level:>2}:     nsprov {rate:6.1f}/s, raw "
                        f"{raw_rates[level]:6.1f}/s ({rate / raw_rates[level]:.2f}x)"
                    )
                # Probes as a kubelet and a scraper send them, while the API is saturated.
                stop = threading.Event()
                with concurrent.futures.ThreadPoolExecutor(1) as prober:
                    probes = prober.submit(_probe_latencies, service.internal_url, stop)
                    _throughput(post, max(LEVELS), 4 * max(LEVELS))
                    stop.set()
                for path, samples in probes.result().items():
                    print(f"  {path:<9} during {4 * max(LEVELS)} POSTs at concurrency "
                          f"{max(LEVELS)}: {percentiles(samples)}")  # fmt: skip
        for ns in core.list_namespace(label_selector=SELECTOR).items:
            core.delete_namespace(ns.metadata.name)
        api.close()


def oidc(args: argparse.Namespace) -> None:
    """What verifying an ID token costs on top of a static token, and after a key rotation."""
    print(f"machine: {_machine()}")
    print(f"command: python -m tests.bench oidc --requests {args.requests} "
          f"--rotations {args.rotations}")  # fmt: skip
    with (
        _kubeconfig() as kubeconfig,
        tempfile.TemporaryDirectory() as tmp,
        LoopbackIssuer() as issuer,
    ):
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(
            f"issuers: [{{name: github, issuer: '{issuer.url}', audience: nsprov, "
            f"caFile: '{issuer.ca_file}'}}]\n"
            "tenants:\n"
            "  - {name: web, match: {issuer: github, claims: {repository: 'acme/*'}}, "
            "owner: 'github:{repository}'}\n"
            "  - {name: tokens, match: {token: alice}}\n"
        )
        claims = {"sub": "repo:acme/web:ref:refs/heads/main", "repository": "acme/web"}
        parsed, verifier = parse_policy(policy.read_text()), Verifier()
        tokens = [issuer.mint(claims) for _ in range(args.requests + 1)]
        verifier.verify(tokens.pop(), parsed)  # warms the key cache
        in_process = [_timed(lambda t=t: verifier.verify(t, parsed)) for t in tokens]
        print(f"Verifier.verify in process (RS256, warm): {percentiles(in_process)}")
        service_args = [f"--policy-file={policy}", "--controller=false"]
        with (
            running_service(kubeconfig, Path(tmp), service_args) as service,
            service.client() as http,
        ):

            def post(headers: dict[str, str]) -> float:
                started = time.perf_counter()
                response = http.post("/api/v1/namespaces", params={"ttl": "10m"}, headers=headers)
                elapsed = time.perf_counter() - started
                assert response.status_code == 201, response.text
                return elapsed

            static = service.auth("alice")
            post({"Authorization": f"Bearer {issuer.mint(claims)}"})  # warms the key cache
            post(static)
            with_static, with_oidc = [], []
            for _ in range(args.requests):  # interleaved, so drift hits both alike
                with_static.append(post(static))
                with_oidc.append(post({"Authorization": f"Bearer {issuer.mint(claims)}"}))
            print(f"POST, static token:              {percentiles(with_static)}")
            print(f"POST, OIDC token (warm keys):    {percentiles(with_oidc)}")
            after_rotation = []
            for _ in range(args.rotations):
                # Unknown kids refresh the keys at most every 10 s
                # (nsprov.identity.oidc.REFRESH_INTERVAL).
                time.sleep(10.5)
                kid = issuer.rotate("RS256")
                token = issuer.mint(claims, kid=kid)
                after_rotation.append(post({"Authorization": f"Bearer {token}"}))
            print(f"POST, first after key rotation:  {percentiles(after_rotation)}")
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        for ns in core.list_namespace(label_selector=SELECTOR).items:
            core.delete_namespace(ns.metadata.name)
        core.api_client.close()


# busybox sh ignoring SIGTERM; its child inherits the ignored signal: only the SIGKILL at
# the end of the grace period ends the pod.
_STUBBORN = "trap '' TERM; sleep 3600 & wait"


def expiry_pods(args: argparse.Namespace) -> None:
    """Expiry to namespace gone, with pods that ignore SIGTERM (issue 18's target: at most
    the tenant's maxGracePeriod, 30 s here, + 15 s)."""
    _print_header()
    reason = node_module.unavailable()
    if reason:
        print(f"no node here: {reason}")
        return
    with controlplane.running(with_node=True) as plane, tempfile.TemporaryDirectory() as tmp:
        admin = config.new_client_from_config(config_file=str(plane.kubeconfig))
        rbac = client.RbacAuthorizationV1Api(admin)
        rule = client.V1PolicyRule(api_groups=[""], resources=["pods"],
                                   verbs=["get", "list", "create", "delete"])  # fmt: skip
        rbac.create_cluster_role(
            client.V1ClusterRole(metadata=client.V1ObjectMeta(name=GRANT), rules=[rule])
        )
        kubectl = str(build.binaries().kubectl)
        subprocess.run(
            [kubectl, f"--kubeconfig={plane.kubeconfig}", "apply", "-f",
             str(_REPO / "k8s" / "admission-policy.yaml")],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        core = client.CoreV1Api(admin)
        with running_service(plane.kubeconfig, Path(tmp), ["--min-ttl=1s"]) as service:

            def one(index: int) -> tuple[str, float]:
                with httpx.Client(base_url=service.url, timeout=60) as http:
                    response = http.post(
                        "/api/v1/namespaces", params={"ttl": f"{args.ttl}s"},
                        headers=service.auth(),
                    )  # fmt: skip
                assert response.status_code == 201, response.text
                name = response.headers["x-namespace"]
                path = Path(tmp) / f"tenant-{index}"
                path.write_text(response.text)
                tenant = config.new_client_from_config(config_file=str(path))
                try:
                    pods = client.CoreV1Api(tenant)
                    for i in range(args.pods):
                        pods.create_namespaced_pod(name, _stubborn_pod(f"p{i}"))
                finally:
                    tenant.close()
                while True:
                    phases = [p.status.phase for p in core.list_namespaced_pod(name).items]
                    if phases.count("Running") == args.pods:
                        break
                    time.sleep(0.5)
                labels = core.read_namespace(name).metadata.labels
                expires_at = int(labels["nsprov.io/expires-at"])
                if time.time() >= expires_at:
                    raise RuntimeError(f"{name}: pods not running before expiry; raise --ttl")
                while True:
                    try:
                        core.read_namespace(name)
                    except client.exceptions.ApiException as exc:
                        if exc.status == 404:
                            return name, time.time() - expires_at
                        raise
                    time.sleep(0.2)

            with concurrent.futures.ThreadPoolExecutor(args.namespaces) as pool:
                results = list(pool.map(one, range(args.namespaces)))
        admin.close()
    for name, past in results:
        print(f"{name}: gone {past:.1f}s after its expiry ({args.pods} pods ignoring SIGTERM)")
    gone = [past for _, past in results]
    print(
        f"expiry to gone, {len(gone)} namespaces x {args.pods} pods: "
        f"p50={statistics.median(gone):.1f}s max={max(gone):.1f}s "
        f"(target: maxGracePeriod 30s + 15s = 45s)"
    )


def _stubborn_pod(name: str) -> client.V1Pod:
    image = images.BUSYBOX_IMAGE
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="c", image=image, image_pull_policy="Never",
                    command=["sh", "-c", _STUBBORN],
                )
            ]
        ),
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
