"""Gone on time, whatever the tenant does inside: a real kubelet, nsprov deployed from its image.

The tenant here is hostile within its own rights (deploy/overlay's grant, nsprov's default
bounds: maxGracePeriod 30s): its pods ignore SIGTERM, and it asks for a grace period of
ten minutes and for a finalizer nobody removes. The target (issue 18): no namespace
outlives its expiry by more than its tenant's maxGracePeriod + 15 s.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.cluster import build, images
from tests.node.conftest import Deployed, NodeCluster, pod_ip, wait_for_pod_phase
from tests.support import wait_until

pytestmark = pytest.mark.timeout(1200)

MAX_GRACE = 30
"""nsprov's default maxGracePeriod (no policy file here)."""
SLACK = 15
"""What the target allows past the grace: nsprov's delete, the kubelet's kill, the
namespace controller noticing the pods are gone."""
STUBBORN = "trap '' TERM; sleep 3600 & wait"
"""busybox sh ignoring SIGTERM (its child inherits the ignored signal): only SIGKILL, at the
end of the grace period, ends it."""


def _api(deployed: Deployed, node: NodeCluster) -> str:
    ready = [p for p in deployed.pods(node) if not p["metadata"].get("deletionTimestamp")
             and p["status"].get("podIP")]  # fmt: skip
    assert ready, "no nsprov pod with an IP"
    return f"http://{pod_ip(ready[0])}:8080"


def _provision(deployed: Deployed, node: NodeCluster, ttl: str, path: Path) -> str:
    created = httpx.post(
        f"{_api(deployed, node)}/api/v1/namespaces",
        params={"ttl": ttl},
        headers={"Authorization": f"Bearer {deployed.token}"},
        timeout=60,
    )
    assert created.status_code == 201, created.text
    path.write_text(created.text)
    return created.headers["x-namespace"]


def _tenant(
    kubeconfig: Path, *args: str, stdin: str | None = None
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


def _pod(name: str, grace: int | None = None) -> str:
    grace_line = f"  terminationGracePeriodSeconds: {grace}\n" if grace is not None else ""
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{grace_line}"
        f"  containers:\n  - name: c\n    image: {images.BUSYBOX_IMAGE}\n"
        f'    imagePullPolicy: Never\n    command: [sh, -c, "{STUBBORN}"]\n'
    )


def _expires_at(node: NodeCluster, name: str) -> int:
    labels = node.json("get", "namespace", name)["metadata"]["labels"]
    return int(labels["nsprov.io/expires-at"])


def _gone(node: NodeCluster, name: str) -> bool:
    return node.kubectl("get", "namespace", name, "--ignore-not-found", "-o", "name") == ""


def test_pods_that_ignore_sigterm_cannot_hold_an_expired_namespace(
    node: NodeCluster, deployed: Deployed, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "tenant"
    name = _provision(deployed, node, "45s", kubeconfig)
    # The attack: ask the kubelet to wait ten minutes for pods that never stop. Refused.
    stubborn = _tenant(kubeconfig, "apply", "-f", "-", stdin=_pod("stubborn", grace=600))
    assert stubborn.returncode != 0
    assert "bounded grace" in stubborn.stderr, stubborn.stderr
    assert f"maxGracePeriod of {MAX_GRACE}s" in stubborn.stderr, stubborn.stderr
    # What the tenant may do: pods that ignore SIGTERM for the default (and largest) grace.
    pods = [f"ignores-term-{i}" for i in range(3)]
    for pod in pods:
        ran = _tenant(kubeconfig, "apply", "-f", "-", stdin=_pod(pod))
        assert ran.returncode == 0, ran.stderr
    for pod in pods:
        assert wait_for_pod_phase(node, name, pod, {"Running"}) == "Running"
    expires_at = _expires_at(node, name)
    assert time.time() < expires_at, "the pods started too late to test the expiry"

    wait_until(lambda: _gone(node, name), timeout=MAX_GRACE + SLACK + 120, interval=0.5,
               message=f"{name} gone")  # fmt: skip
    past = time.time() - expires_at
    print(f"\n{name}: gone {past:.1f}s after its expiry (3 pods ignoring SIGTERM, grace 30s)")
    # The kubelet really waited for the grace (the pods did not stop on SIGTERM) ...
    assert past >= MAX_GRACE - 2, past
    # ... and not a moment longer than the target allows.
    assert past <= MAX_GRACE + SLACK, past


def test_a_tenant_finalizer_and_a_long_grace_in_a_template_are_refused(
    node: NodeCluster, deployed: Deployed, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "tenant"
    name = _provision(deployed, node, "5m", kubeconfig)
    configmap = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\n"
        "  finalizers: [example.com/never]\n"
    )
    held = _tenant(kubeconfig, "apply", "-f", "-", stdin=configmap)
    assert held.returncode != 0
    assert "no tenant-made finalizers" in held.stderr, held.stderr
    assert "example.com/never" in held.stderr
    assert "policy file: finalizers" in held.stderr
    slow = _tenant(
        kubeconfig, "create", "deployment", "slow", f"--image={images.BUSYBOX_IMAGE}",
        "--dry-run=client", "-o", "yaml",
    )  # fmt: skip
    assert slow.returncode == 0, slow.stderr
    manifest = slow.stdout.replace(
        "    spec:\n", "    spec:\n      terminationGracePeriodSeconds: 600\n", 1
    )
    refused = _tenant(kubeconfig, "apply", "-f", "-", stdin=manifest)
    assert refused.returncode != 0
    assert "600 in the pod template of deployments.apps" in refused.stderr, refused.stderr
    assert node.kubectl("-n", name, "get", "configmaps,deployments", "-o", "name").split() == [
        "configmap/kube-root-ca.crt"
    ]
    httpx.delete(
        f"{_api(deployed, node)}/api/v1/namespaces/{name}",
        headers={"Authorization": f"Bearer {deployed.token}"},
        timeout=60,
    )
