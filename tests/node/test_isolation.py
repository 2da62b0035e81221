"""Isolation on a real node: what ``networkPolicy: isolated`` promises, proved with connections.

The NetworkPolicy nsprov writes is only a promise until something enforces it. On
this node kube-router's firewall enforces it, kube-proxy routes Services and
CoreDNS serves names (tests/cluster/addons.py), so these tests open real TCP
connections between tenants' pods and check which ones the policy stops.

Every tenant's namespace is asked of the deployed nsprov with the tenant's own
token, under a policy file that gives each tenant its template; the pods in it are
then made as admin: a web server (busybox httpd, answering with its namespace's
name) behind a Service ``web``, and a client to probe from. A probe is one bounded
``nc`` run in the client with ``kubectl exec``, sending an HTTP GET; what it read
(or why it could not connect) is the result (busybox's wget crashes in an image
without glibc's NSS modules, even for an IP address; its nc and nslookup do not).
Every "cannot" has a "can" beside it that goes to the same server from elsewhere,
so a broken network fails these tests instead of passing them.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.cluster import addons, build, images
from tests.node.conftest import REPO, Deployed, NodeCluster, pod_ip
from tests.support import wait_until

pytestmark = pytest.mark.timeout(900)

# Tenant name = token name; two namespaces of "open" so that one can reach the other.
POLICY = {
    "tenants": [
        {"name": "iso-a", "match": {"token": "iso-a"}, "template": {"networkPolicy": "isolated"}},
        {"name": "iso-b", "match": {"token": "iso-b"}, "template": {"networkPolicy": "isolated"}},
        {
            "name": "iso-egress",
            "match": {"token": "iso-egress"},
            "template": {"networkPolicy": "isolated", "isolatedEgress": True},
        },
        {"name": "open", "match": {"token": "open"}, "template": {"networkPolicy": "none"}},
        # The other node tests' token keeps the behaviour the flags give it.
        {"name": "everyone-else", "match": {"token": "*"}},
    ]
}
NAMESPACES = {"a": "iso-a", "b": "iso-b", "egress": "iso-egress", "open": "open", "open2": "open"}
# A probe's bound: nc gives up after 3 s without a connection or an answer, the exec after 5 s.
PROBE = 'printf "GET / HTTP/1.0\\r\\n\\r\\n" | timeout 5 nc -w 3 "$0" "$1"'
# How long a policy may take to be enforced, or a route to appear, after its objects exist.
CONVERGE_SECONDS = 30.0


@dataclass(frozen=True)
class Tenancy:
    """One provisioned namespace with its web server and client running."""

    namespace: str
    web_ip: str
    service_ip: str

    @property
    def greeting(self) -> str:
        return f"hello from {self.namespace}"


@dataclass(frozen=True)
class Probe:
    """What a client saw: whether a TCP connection opened, and the body it read."""

    connected: bool
    body: str
    detail: str


def _probe(cluster: NodeCluster, client: Tenancy, address: str) -> Probe:
    host, port = address.rsplit(":", 1)
    result = subprocess.run(
        [*_kubectl(cluster), "-n", client.namespace, "exec", "client", "--",
         "sh", "-c", PROBE, host, port],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    # nc exits 1 when it cannot connect (refused, or no answer within -w), timeout with
    # 143; an answer of any kind, even an HTTP error, means the connection opened.
    connected = result.returncode == 0 and "can't connect" not in result.stderr
    return Probe(connected, result.stdout, f"rc={result.returncode} {result.stderr.strip()}")


def _kubectl(cluster: NodeCluster) -> list[str]:
    return [str(build.binaries().kubectl), f"--kubeconfig={cluster.plane.kubeconfig}"]


def reaches(cluster: NodeCluster, client: Tenancy, server: Tenancy, address: str) -> Probe:
    """Wait until ``client`` reads ``server``'s greeting at ``address``; fail if it never does."""

    return _converge(
        cluster,
        client,
        address,
        lambda seen: server.greeting in seen.body,
        f"{client.namespace} reads {server.namespace}'s server at {address}",
    )


def _converge(
    cluster: NodeCluster,
    client: Tenancy,
    address: str,
    wanted: Callable[[Probe], bool],
    what: str,
) -> Probe:
    """Probe until ``wanted`` holds; the assertion names the last probe's outcome."""
    seen: list[Probe] = []

    def probe() -> Probe | None:
        seen.append(_probe(cluster, client, address))
        return seen[-1] if wanted(seen[-1]) else None

    try:
        return wait_until(probe, timeout=CONVERGE_SECONDS, interval=0.5, message=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last probe: {seen[-1] if seen else None}") from None


def opens(cluster: NodeCluster, client: Tenancy, address: str) -> Probe:
    """Wait until ``client`` opens a connection to ``address`` (whatever the answer)."""

    what = f"{client.namespace} connects to {address}"
    return _converge(cluster, client, address, lambda seen: seen.connected, what)


def blocked(cluster: NodeCluster, client: Tenancy, address: str) -> Probe:
    """Wait until ``client`` cannot open a connection to ``address``; fail if it always can.

    Waiting (rather than probing once) lets the firewall catch up with a pod that has
    just started; a policy that is never enforced still fails after the deadline.
    """

    return _converge(
        cluster,
        client,
        address,
        lambda seen: not seen.connected,
        f"{client.namespace} blocked from {address}",
    )


def _restricted(container: dict[str, Any]) -> dict[str, Any]:
    """A busybox container fit for Pod Security ``restricted``, whatever the tenant's level."""
    return {
        "image": images.BUSYBOX_IMAGE,
        "imagePullPolicy": "Never",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
        **container,
    }


def _pods_and_service(namespace: str) -> list[dict[str, Any]]:
    pod_security = {
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "runAsGroup": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    web = _restricted(
        {
            "name": "web",
            "command": [
                "sh", "-c",
                f"echo 'hello from {namespace}' > /www/index.html && exec httpd -f -p 8080 -h /www",
            ],
            "ports": [{"containerPort": 8080}],
            "volumeMounts": [{"name": "www", "mountPath": "/www"}],
        }
    )  # fmt: skip
    client = _restricted({"name": "client", "command": ["sleep", "3600"]})
    meta = {"namespace": namespace}
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "web", "labels": {"app": "web"}, **meta},
            "spec": {
                "securityContext": pod_security,
                "terminationGracePeriodSeconds": 1,
                "containers": [web],
                "volumes": [{"name": "www", "emptyDir": {}}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "client", **meta},
            "spec": {
                "securityContext": pod_security,
                "terminationGracePeriodSeconds": 1,
                "containers": [client],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", **meta},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    ]


def _nsprov_api(cluster: NodeCluster) -> str:
    """nsprov's API at one of its Ready pods' IPs (the host routes to pods)."""
    listed = cluster.json("-n", "nsprov", "get", "pods", "-l", "app.kubernetes.io/name=nsprov")
    ready = [
        p
        for p in listed["items"]
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions") or []
        )
    ]
    assert ready, "no Ready nsprov pod"
    return f"http://{pod_ip(ready[0])}:8080"


def _install_policy(cluster: NodeCluster, deployed: Deployed, work: Path) -> dict[str, str]:
    """The tenants' tokens and the policy file, mounted as k8s/examples/policy-patch.yaml
    does; nsprov rolls out with them. Returns each tenant's token."""
    tokens = {name: secrets.token_hex(32) for name in set(NAMESPACES.values())}
    token_file = work / "tokens"
    token_file.write_text(
        "".join(f"{n}: {t}\n" for n, t in {"node-test": deployed.token, **tokens}.items())
    )
    secret = cluster.kubectl(
        "-n", "nsprov", "create", "secret", "generic", "nsprov-tokens",
        f"--from-file=tokens={token_file}", "--dry-run=client", "-o", "yaml",
    )  # fmt: skip
    (work / "secret.yaml").write_text(secret)
    policy = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "nsprov-policy", "namespace": "nsprov"},
        "data": {"policy.yaml": yaml.safe_dump(POLICY)},
    }
    (work / "policy.yaml").write_text(yaml.safe_dump(policy))
    cluster.kubectl("apply", "-f", str(work / "secret.yaml"), "-f", str(work / "policy.yaml"))
    patch = REPO / "k8s" / "examples" / "policy-patch.yaml"
    cluster.kubectl("-n", "nsprov", "patch", "deployment", "nsprov", "--patch-file", str(patch))
    cluster.kubectl(
        "-n", "nsprov", "rollout", "status", "deployment/nsprov", "--timeout=180s", timeout=200
    )  # fmt: skip
    return tokens


@pytest.fixture(scope="module")
def tenancies(
    node: NodeCluster, deployed: Deployed, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Tenancy]]:
    """A namespace per entry of NAMESPACES, asked of nsprov, with web, Service and client."""
    work = tmp_path_factory.mktemp("isolation")
    tokens = _install_policy(node, deployed, work)
    api = _nsprov_api(node)
    namespaces: dict[str, str] = {}
    for key, tenant in NAMESPACES.items():
        created = httpx.post(
            f"{api}/api/v1/namespaces",
            params={"ttl": "15m"},
            headers={"Authorization": f"Bearer {tokens[tenant]}", "Accept": "application/json"},
            timeout=60,
        )
        assert created.status_code == 201, created.text
        namespaces[key] = created.json()["namespace"]
    objects = [obj for name in namespaces.values() for obj in _pods_and_service(name)]
    addons.apply(node.plane, objects)
    for name in namespaces.values():
        node.kubectl(
            "-n", name, "wait", "--for=condition=Ready", "pod/web", "pod/client", "--timeout=120s",
            timeout=150,
        )  # fmt: skip
    made = {}
    for key, name in namespaces.items():
        web = node.json("-n", name, "get", "pod", "web")
        service = node.json("-n", name, "get", "service", "web")
        made[key] = Tenancy(name, pod_ip(web), service["spec"]["clusterIP"])
    yield made
    # Gone with the module, so no later test meets them (nor their pods on the node).
    for key, name in namespaces.items():
        httpx.delete(
            f"{_nsprov_api(node)}/api/v1/namespaces/{name}",
            headers={"Authorization": f"Bearer {tokens[NAMESPACES[key]]}"},
            timeout=60,
        )


def _web(server: Tenancy) -> str:
    return f"{server.web_ip}:8080"


def _service(server: Tenancy) -> str:
    return f"{server.service_ip}:80"


def test_isolated_tenants_reach_their_own_and_not_each_other(
    node: NodeCluster, tenancies: dict[str, Tenancy]
) -> None:
    a, b = tenancies["a"], tenancies["b"]
    policies = node.json("-n", a.namespace, "get", "networkpolicies")["items"]
    assert [p["spec"]["policyTypes"] for p in policies] == [["Ingress"]]
    for own in (a, b):
        reaches(node, own, own, _web(own))
        reaches(node, own, own, _service(own))
    for client, server in ((a, b), (b, a)):
        blocked(node, client, _web(server))
        blocked(node, client, _service(server))


def test_a_tenant_without_a_policy_is_reached_from_both(
    node: NodeCluster, tenancies: dict[str, Tenancy]
) -> None:
    """The control: traffic between namespaces flows where no policy forbids it."""
    a, b, o, o2 = (tenancies[k] for k in ("a", "b", "open", "open2"))
    assert node.json("-n", o.namespace, "get", "networkpolicies")["items"] == []
    for client in (a, b, o2):
        reaches(node, client, o, _web(o))
        reaches(node, client, o, _service(o))
    # ... and an isolated tenant is not, from a namespace without a policy either.
    blocked(node, o, _web(a))


def resolve(cluster: NodeCluster, client: Tenancy, name: str) -> list[str]:
    """The addresses ``client``'s resolver (the kubelet's clusterDNS) answers for ``name``."""
    found = subprocess.run(
        [*_kubectl(cluster), "-n", client.namespace, "exec", "client", "--",
         "timeout", "5", "nslookup", name],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )  # fmt: skip
    # busybox prints the server's address first, then "Name:" and the answers.
    answers = found.stdout.split("Name:", 1)[1] if "Name:" in found.stdout else ""
    return re.findall(r"^Address: ([0-9.]+)$", answers, flags=re.MULTILINE)


def test_isolated_egress_resolves_names_and_stays_in_its_namespace(
    node: NodeCluster, tenancies: dict[str, Tenancy]
) -> None:
    e, o = tenancies["egress"], tenancies["open"]
    api = wait_until(
        lambda: resolve(node, e, "kubernetes.default.svc.cluster.local"),
        timeout=CONVERGE_SECONDS,
        interval=0.5,
        message="kubernetes.default.svc.cluster.local resolved",
    )
    assert api == ["10.0.0.1"]
    own = resolve(node, e, f"web.{e.namespace}.svc.{addons.CLUSTER_DOMAIN}")
    assert own == [e.service_ip]
    # Through the DNS answer and the Service, and directly: its own pods stay open.
    reaches(node, e, e, f"{own[0]}:80")
    reaches(node, e, e, _web(e))
    # The server every other namespace reaches (the control test) is closed to this
    # one: the refusal is its egress policy, not the server's ingress.
    reaches(node, tenancies["open2"], o, _web(o))
    blocked(node, e, _web(o))
    blocked(node, e, _service(o))
    # Nor does it reach the cluster's API, which the control namespace does.
    opens(node, o, "10.0.0.1:443")
    blocked(node, e, "10.0.0.1:443")
    # kube-system is open to it on port 53 only: CoreDNS's health port is not.
    dns = node.json("-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns")["items"]
    health = f"{pod_ip(dns[0])}:8080"
    opens(node, o, health)
    blocked(node, e, health)


def test_tenant_reaches_nsprov_api_and_not_its_metrics(
    node: NodeCluster, deployed: Deployed, tenancies: dict[str, Tenancy]
) -> None:
    """nsprov's own NetworkPolicy (k8s/): the API port is open to every namespace, the
    metrics port only to namespaces labelled for monitoring, which a tenant's is not and a
    monitoring namespace is."""
    policies = node.json("-n", "nsprov", "get", "networkpolicies")["items"]
    if not policies:
        pytest.skip(
            "no NetworkPolicy in namespace nsprov after kubectl apply -k deploy/overlay "
            "(k8s/ has none on this branch)"
        )
    pods = node.json("-n", "nsprov", "get", "pods", "-l", "app.kubernetes.io/name=nsprov")
    running = [p for p in pods["items"] if p["status"].get("podIP")]
    assert running, "no nsprov pod to probe"
    nsprov = Tenancy("nsprov", pod_ip(running[0]), "")
    for client in (tenancies["a"], tenancies["open"]):
        opens(node, client, f"{nsprov.web_ip}:8080")
        blocked(node, client, f"{nsprov.web_ip}:9090")
    # The way in for Prometheus: a namespace labelled for monitoring reaches the metrics
    # port (so the refusal above is the policy's, not a dead port).
    monitoring = f"nsprov-test-monitoring-{secrets.token_hex(3)}"
    node.kubectl("create", "namespace", monitoring)
    try:
        node.kubectl("label", "namespace", monitoring, "nsprov.io/monitoring=true")
        client = next(o for o in _pods_and_service(monitoring) if o["metadata"]["name"] == "client")
        addons.apply(node.plane, [client])
        node.kubectl(
            "-n", monitoring, "wait", "--for=condition=Ready", "pod/client", "--timeout=120s",
            timeout=150,
        )  # fmt: skip
        scraper = Tenancy(monitoring, "", "")
        opens(node, scraper, f"{nsprov.web_ip}:9090")
    finally:
        node.kubectl("delete", "namespace", monitoring, "--wait=false", check=False)
