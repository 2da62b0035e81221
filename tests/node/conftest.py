"""A control plane with a real node, and nsprov deployed on it as an admin would.

The node (tests/cluster/node.py) needs root, network namespaces, containerd, runc,
the CNI plugins, socat, buildah and debootstrap; every test here skips with the
reason where one is missing. One node per session: starting it costs seconds,
building its binaries and images the first time costs minutes (then cached).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.cluster import build, controlplane, images
from tests.cluster import node as node_module
from tests.support import wait_until

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.node)


@dataclass
class NodeCluster:
    """The control plane, its node, and kubectl as admin."""

    plane: controlplane.ControlPlane
    node: node_module.Node

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        result = subprocess.run(
            [str(build.binaries().kubectl), f"--kubeconfig={self.plane.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))


@pytest.fixture(scope="session")
def node() -> Iterator[NodeCluster]:
    reason = node_module.unavailable()
    if reason:
        pytest.skip(f"no node here: {reason}")
    try:
        nsprov = images.nsprov_image()
    except (images.ImageError, build.BuildError) as exc:
        pytest.skip(f"no nsprov image here: {exc}")
    plane = controlplane.start(with_node=True)
    try:
        assert plane.node is not None
        plane.node.import_image(nsprov)
        yield NodeCluster(plane, plane.node)
    finally:
        plane.stop()


@dataclass
class Deployed:
    """nsprov applied with ``kubectl apply -k`` and rolled out; its token and pods."""

    token: str
    rollout_seconds: float

    def pods(self, cluster: NodeCluster) -> list[Any]:
        listed = cluster.json("-n", "nsprov", "get", "pods", "-l", "app.kubernetes.io/name=nsprov")
        return list(listed["items"])


def write_overlay(directory: Path, server: str) -> Path:
    """deploy/overlay (k8s/ + the app-deploying grant, as docs/operator/install.md installs
    it), pointed at the locally built image, with kubeconfigs naming the API URL the tests
    reach."""
    directory.mkdir(parents=True, exist_ok=True)
    image_name, image_tag = images.NSPROV_IMAGE.rsplit(":", 1)
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "nsprov", "namespace": "nsprov"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "nsprov",
                            "imagePullPolicy": "Never",
                            "env": [
                                {"name": "NSPROV_SERVER", "value": server},
                                {"name": "NSPROV_LEADER_ELECT_LEASE_DURATION", "value": "6s"},
                                {"name": "NSPROV_RESYNC_PERIOD", "value": "30s"},
                                # Expiry tests use namespaces of a few seconds.
                                {"name": "NSPROV_MIN_TTL", "value": "1s"},
                            ],
                        }
                    ]
                }
            }
        },
    }
    (directory / "deployment-patch.yaml").write_text(yaml.safe_dump(patch))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(REPO / "deploy" / "overlay", directory)],
        "images": [{"name": "ghcr.io/nsprov/nsprov", "newName": image_name, "newTag": image_tag}],
        "patches": [{"path": "deployment-patch.yaml"}],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return directory


@pytest.fixture(scope="session")
def deployed(node: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    work = tmp_path_factory.mktemp("deploy")
    overlay = write_overlay(work / "overlay", node.plane.server)
    started = time.monotonic()
    node.kubectl("apply", "-k", str(overlay))
    token = secrets.token_hex(32)
    tokens = work / "tokens"
    tokens.write_text(f"node-test: {token}\n")
    node.kubectl("-n", "nsprov", "create", "secret", "generic", "nsprov-tokens",
                 f"--from-file=tokens={tokens}")  # fmt: skip
    node.kubectl(
        "-n", "nsprov", "rollout", "status", "deployment/nsprov", "--timeout=180s", timeout=200
    )  # fmt: skip
    return Deployed(token=token, rollout_seconds=time.monotonic() - started)


def pod_ip(pod: Any) -> str:
    return str(pod["status"]["podIP"])


def wait_for_pod_phase(cluster: NodeCluster, namespace: str, name: str, phases: set[str]) -> str:
    def phase() -> str | None:
        got = cluster.kubectl(
            "-n", namespace, "get", "pod", name, "-o", "jsonpath={.status.phase}", check=False
        )  # fmt: skip
        return got if got in phases else None

    return wait_until(phase, timeout=120, interval=0.5, message=f"pod {name} in {phases}")


@dataclass
class HelmRelease:
    """nsprov installed with ``helm install`` (charts/nsprov) beside the kustomize one.

    Its own namespace, full name, selector and grant, so it shares no object, no
    admission policy and no namespace with the ``deployed`` installation: both can run
    in one node session, and neither sees the other's namespaces.
    """

    name: str
    namespace: str
    selector: str
    grant: str
    token: str
    values: Path
    install_seconds: float

    def helm(self, cluster: NodeCluster, *args: str, timeout: float = 300) -> str:
        result = subprocess.run(
            [str(build.ensure_tools_built().helm), f"--kubeconfig={cluster.plane.kubeconfig}",
             "--namespace", self.namespace, *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def pods(self, cluster: NodeCluster) -> list[Any]:
        listed = cluster.json("-n", self.namespace, "get", "pods", "-l",
                              "app.kubernetes.io/name=nsprov")  # fmt: skip
        return list(listed["items"])


@pytest.fixture(scope="module")
def helm_release(
    node: NodeCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HelmRelease]:
    try:
        build.ensure_tools_built()
    except build.BuildError as exc:
        pytest.skip(f"no helm here: {exc}")
    work = tmp_path_factory.mktemp("helm")
    image_name, image_tag = images.NSPROV_IMAGE.rsplit(":", 1)
    token = secrets.token_hex(32)
    release = HelmRelease(
        name="nsprov-helm",
        namespace="nsprov-helm",
        selector="nsprov-helm.test/provisioner=helm",
        grant="nsprov-helm-grant",
        token=token,
        values=work / "values.yaml",
        install_seconds=0.0,
    )
    values = {
        "image": {"repository": image_name, "tag": image_tag, "pullPolicy": "Never"},
        "selector": release.selector,
        "grant": {
            "name": release.grant,
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create"]}
            ],
        },
        "tokens": {"create": {"helm-test": token}},
        "env": [
            {"name": "NSPROV_SERVER", "value": node.plane.server},
            {"name": "NSPROV_LEADER_ELECT_LEASE_DURATION", "value": "6s"},
        ],
    }
    release.values.write_text(yaml.safe_dump(values))
    # Helm installs into a namespace it does not own: made first, with the Pod Security
    # level k8s/namespace.yaml gives nsprov's (the Helm steps of docs/operator/install.md).
    node.kubectl("create", "namespace", release.namespace)
    node.kubectl("label", "namespace", release.namespace,
                 "pod-security.kubernetes.io/enforce=restricted")  # fmt: skip
    started = time.monotonic()
    try:
        chart = str(REPO / "charts" / "nsprov")
        release.helm(node, "install", release.name, chart, "--values", str(release.values),
                     "--wait", "--timeout=180s", timeout=240)  # fmt: skip
        release.install_seconds = time.monotonic() - started
        yield release
    finally:
        release.helm(node, "uninstall", release.name, "--wait", "--timeout=120s", timeout=180)
        node.kubectl("delete", "namespace", release.namespace, "--wait=false", check=False)
        node.kubectl("delete", "namespace", "-l", release.selector, "--wait=false", check=False)


class ServiceClient:
    """A CI client of nsprov's Service, as kube-proxy would route it.

    Each attempt picks a ready endpoint from the Service's EndpointSlices, as read at
    that moment, and retries on connection errors with the same Idempotency-Key, as
    the GitHub Action does. What it records is what a CI job would see.
    """

    def __init__(
        self, cluster: NodeCluster, token: str, namespace: str = "nsprov", service: str = "nsprov"
    ) -> None:
        self.cluster = cluster
        self.token = token
        self.namespace = namespace
        self.service = service
        self.created: list[str] = []
        self.retried: list[str] = []
        self.failed: list[str] = []

    def endpoints(self) -> list[str]:
        slices = self.cluster.json("-n", self.namespace, "get", "endpointslices", "-l",
                                   f"kubernetes.io/service-name={self.service}")  # fmt: skip
        return [
            address
            for item in slices["items"]
            for endpoint in item.get("endpoints") or []
            if endpoint.get("conditions", {}).get("ready")
            for address in endpoint["addresses"]
        ]

    def create(self, attempts: int = 5) -> None:
        key = secrets.token_hex(8)
        for attempt in range(attempts):
            addresses = self.endpoints()
            if not addresses:
                time.sleep(0.5)
                continue
            url = f"http://{random.choice(addresses)}:8080/api/v1/namespaces"  # noqa: S311
            try:
                response = httpx.post(
                    url,
                    params={"ttl": "1m"},
                    headers={"Authorization": f"Bearer {self.token}", "Idempotency-Key": key},
                    timeout=30,
                )
            except httpx.TransportError as exc:
                self.retried.append(f"attempt {attempt}: {type(exc).__name__}: {exc}")
                time.sleep(0.5)
                continue
            if response.status_code == 201:
                self.created.append(response.headers["x-namespace"])
                return
            if response.status_code == 503:
                self.retried.append(f"attempt {attempt}: 503 {response.text[:200]}")
                time.sleep(float(response.headers.get("retry-after", "1")))
                continue
            self.failed.append(f"{response.status_code} {response.text[:300]}")
            return
        self.failed.append(f"no success in {attempts} attempts")


def internal_get(cluster: NodeCluster, pod: str, path: str) -> str:
    """GET ``path`` of a replica's internal listener (9090: /metrics, /readyz), asked from
    inside its pod: nsprov's NetworkPolicy (enforced on this node) admits that port only from
    namespaces labelled for monitoring, and the host is not one. The status line first."""
    return cluster.kubectl(
        "-n", "nsprov", "exec", pod, "--", "python3", "-c",
        "import sys, urllib.request as u\n"
        "r = u.urlopen('http://127.0.0.1:9090' + sys.argv[1], timeout=10)\n"
        "print(r.status); print(r.read().decode())",
        path,
    )  # fmt: skip
