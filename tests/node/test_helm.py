"""nsprov installed with Helm (charts/nsprov) on a real node, and upgraded under load.

The release runs beside the kustomize installation of test_deployment.py, with its own
namespace, names, selector and grant (conftest.helm_release): what an operator gets from
`helm install` with values, and proof that two installations keep out of each other's way.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import build, images
from tests.node.conftest import HelmRelease, NodeCluster, ServiceClient, pod_ip
from tests.support import wait_until

CHART = Path(__file__).resolve().parents[2] / "charts" / "nsprov"
# The first test of a session pays for the images and the node's start.
pytestmark = pytest.mark.timeout(1200)


def _ready(pod: Any) -> bool:
    conditions = pod["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _tenant_kubectl(
    kubeconfig: Path, *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(build.binaries().kubectl), *args],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_install_provisions_with_the_values(
    node: NodeCluster, helm_release: HelmRelease, tmp_path: Path
) -> None:
    release = helm_release
    print(f"\nhelm install --wait: {release.install_seconds:.1f}s")
    status = release.helm(node, "status", release.name, "-o", "json")
    assert '"status":"deployed"' in status.replace(" ", "")
    pods = [p for p in release.pods(node) if _ready(p)]
    assert len(pods) == 2
    container = pods[0]["spec"]["containers"][0]
    assert container["image"] == images.NSPROV_IMAGE
    assert pods[0]["spec"]["serviceAccountName"] == "nsprov-helm"

    auth = {"Authorization": f"Bearer {release.token}"}
    api = f"http://{pod_ip(pods[0])}:8080"
    assert httpx.get(f"{api}/api/v1/namespaces", headers=auth, timeout=30).status_code == 200
    created = httpx.post(f"{api}/api/v1/namespaces", params={"ttl": "10m"}, headers=auth,
                         timeout=60)  # fmt: skip
    assert created.status_code == 201, created.text
    name = created.headers["x-namespace"]
    kubeconfig = tmp_path / "tenant"
    kubeconfig.write_text(created.text)

    # The release's selector marks the namespace, not the kustomize installation's.
    labels = node.json("get", "namespace", name)["metadata"]["labels"]
    key, value = release.selector.split("=")
    assert labels[key] == value
    assert "controller.observatorium.io" not in labels
    binding = node.json("-n", name, "get", "rolebinding", "namespace-provisioner")
    assert binding["roleRef"]["name"] == release.grant

    # The grant from the values, and nothing more.
    made = _tenant_kubectl(kubeconfig, "create", "configmap", "hello", "--from-literal=a=b")
    assert made.returncode == 0, made.stderr
    secrets = _tenant_kubectl(kubeconfig, "get", "secrets")
    assert secrets.returncode != 0
    assert "forbidden" in secrets.stderr.lower()
    # The chart's admission policies guard the release's selector: no tenant-made finalizer.
    held = _tenant_kubectl(kubeconfig, "create", "-f", "-", stdin=(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n"
        "  finalizers: [example.com/hold]\n"
    ))  # fmt: skip
    assert held.returncode != 0
    assert "no tenant-made finalizers" in held.stderr

    deleted = httpx.delete(f"{api}/api/v1/namespaces/{name}", headers=auth, timeout=60)
    assert deleted.status_code == 202, deleted.text
    wait_until(
        lambda: node.kubectl("get", "namespace", name, "--ignore-not-found", "-o", "name") == "",
        timeout=120,
        interval=0.5,
        message=f"{name} deleted",
    )


def test_upgrade_rolls_the_pods_under_a_stream_of_creates(
    node: NodeCluster, helm_release: HelmRelease
) -> None:
    release = helm_release
    before = {p["metadata"]["uid"] for p in release.pods(node)}
    client = ServiceClient(node, release.token, namespace=release.namespace, service=release.name)
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            client.create()

    worker = threading.Thread(target=stream, daemon=True)
    worker.start()
    try:
        wait_until(lambda: len(client.created) >= 3, timeout=60, message="creates flowing")
        started = time.monotonic()
        # A values change that rolls the pods: a pod annotation, as a config checksum would.
        release.helm(node, "upgrade", release.name, str(CHART), "--reuse-values",
                     "--set-string", "podAnnotations.upgrade=2", "--wait", "--timeout=180s",
                     timeout=240)  # fmt: skip
        upgraded = time.monotonic() - started
        during = len(client.created)
        wait_until(lambda: len(client.created) >= during + 3, timeout=60,
                   message="creates flowing after the upgrade")  # fmt: skip
    finally:
        stop.set()
        worker.join(timeout=60)
    print(
        f"\nhelm upgrade --wait: {upgraded:.1f}s, {len(client.created)} creates, "
        f"{len(client.retried)} retried attempts: {client.retried[:5]}"
    )
    assert client.failed == []
    assert len(set(client.created)) == len(client.created)

    def settled() -> list[Any] | None:
        pods = release.pods(node)
        return pods if len(pods) == 2 and all(_ready(p) for p in pods) else None

    pods = wait_until(settled, timeout=120, message="two Ready pods of the new revision")
    assert not before & {p["metadata"]["uid"] for p in pods}, "the upgrade rolled no pod"
    assert all(p["metadata"]["annotations"].get("upgrade") == "2" for p in pods)
    history = release.helm(node, "history", release.name, "-o", "json")
    assert '"revision":2' in history.replace(" ", "")
