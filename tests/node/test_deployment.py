"""nsprov's image on a real node, deployed with ``kubectl apply -k`` as an admin would.

Ordered from what a first user meets (the rollout) to what only a running cluster
shows (the kubelet terminating a tenant's pod when its namespace expires).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster import build, images
from tests.node.conftest import (
    Deployed,
    NodeCluster,
    ServiceClient,
    internal_get,
    pod_ip,
    wait_for_pod_phase,
)
from tests.support import wait_until

# The first test pays for the session: images (cold: minutes) and the node's start.
pytestmark = pytest.mark.timeout(1200)


def _api(deployed: Deployed, cluster: NodeCluster) -> str:
    """nsprov's public API at a Ready pod's IP (inside the node's netns, routed from here)."""
    ready = [
        p
        for p in deployed.pods(cluster)
        if _ready(p) and not p["metadata"].get("deletionTimestamp")
    ]
    assert ready, "no Ready nsprov pod"
    return f"http://{pod_ip(ready[0])}:8080"


def _ready(pod: Any) -> bool:
    conditions = pod["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _tenant_kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(build.binaries().kubectl), *args],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_two_replicas_ready_with_one_lease_holder(node: NodeCluster, deployed: Deployed) -> None:
    pods = deployed.pods(node)
    assert len(pods) == 2
    assert all(_ready(p) for p in pods)
    acquired = 0
    for pod in pods:
        spec, status = pod["spec"], pod["status"]
        assert spec["nodeName"] == node.node.name
        container = status["containerStatuses"][0]
        assert container["restartCount"] == 0, container
        # The image really runs as the Dockerfile's user, on a read-only root.
        assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        # The probes the kubelet runs are the ones an operator would curl (from inside the
        # pod: the host is no monitoring namespace to nsprov's NetworkPolicy).
        readyz = internal_get(node, pod["metadata"]["name"], "/readyz")
        assert readyz.splitlines()[0] == "200", readyz
        # kubectl logs works (API server -> kubelet at the node IP), and the probes,
        # every few seconds, stay out of the log.
        log = node.kubectl("-n", "nsprov", "logs", pod["metadata"]["name"])
        assert "serving on :8080" in log
        assert "/readyz" not in log
        assert "/healthz" not in log
        acquired += "lease nsprov-controller acquired" in log
    names = {p["metadata"]["name"] for p in pods}
    lease = node.json("-n", "nsprov", "get", "lease", "nsprov-controller")
    holder = lease["spec"]["holderIdentity"]
    # The identity is "<hostname>_<random>", and a pod's hostname is its name.
    assert holder.rsplit("_", 1)[0] in names, (holder, names)
    assert acquired == 1  # one replica ever led; the other only serves the API
    uid = node.kubectl(
        "-n", "nsprov", "exec", sorted(names)[0], "--", "python3", "-c",
        "import os; print(os.getuid(), os.getgid())",
    )  # fmt: skip
    assert uid.split() == ["10001", "10001"]


def test_token_secret_is_read_as_mounted(node: NodeCluster, deployed: Deployed) -> None:
    api = _api(deployed, node)
    wrong = httpx.get(f"{api}/api/v1/namespaces", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = httpx.get(
        f"{api}/api/v1/namespaces", headers={"Authorization": f"Bearer {deployed.token}"}
    )
    assert right.status_code == 200, right.text


def test_provision_run_a_pod_and_delete(
    node: NodeCluster, deployed: Deployed, tmp_path: Path
) -> None:
    api = _api(deployed, node)
    auth = {"Authorization": f"Bearer {deployed.token}"}
    created = httpx.post(f"{api}/api/v1/namespaces", params={"ttl": "10m"}, headers=auth,
                         timeout=60)  # fmt: skip
    assert created.status_code == 201, created.text
    name = created.headers["x-namespace"]
    kubeconfig = tmp_path / "tenant"
    kubeconfig.write_text(created.text)

    ran = _tenant_kubectl(
        kubeconfig, "run", "hello", f"--image={images.BUSYBOX_IMAGE}", "--restart=Never",
        "--image-pull-policy=Never", "--", "echo", f"hello from {name}",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert wait_for_pod_phase(node, name, "hello", {"Succeeded", "Failed"}) == "Succeeded"
    logs = _tenant_kubectl(kubeconfig, "logs", "hello")
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.strip() == f"hello from {name}"

    privileged = _tenant_kubectl(
        kubeconfig, "run", "root", f"--image={images.BUSYBOX_IMAGE}", "--restart=Never",
        "--privileged", "--", "true",
    )  # fmt: skip
    assert privileged.returncode != 0
    assert "violates PodSecurity" in privileged.stderr

    deleted = httpx.delete(f"{api}/api/v1/namespaces/{name}", headers=auth, timeout=60)
    assert deleted.status_code == 202
    wait_until(
        lambda: node.kubectl("get", "namespace", name, "--ignore-not-found", "-o", "name") == "",
        timeout=120,
        interval=0.5,
        message=f"{name} deleted",
    )


def test_expiry_terminates_a_running_pod(
    node: NodeCluster, deployed: Deployed, tmp_path: Path
) -> None:
    api = _api(deployed, node)
    auth = {"Authorization": f"Bearer {deployed.token}"}
    created = httpx.post(f"{api}/api/v1/namespaces", params={"ttl": "20s"}, headers=auth,
                         timeout=60)  # fmt: skip
    expires = time.monotonic() + 20
    assert created.status_code == 201, created.text
    name = created.headers["x-namespace"]
    kubeconfig = tmp_path / "tenant"
    kubeconfig.write_text(created.text)
    ran = _tenant_kubectl(
        kubeconfig, "run", "busy", f"--image={images.BUSYBOX_IMAGE}", "--restart=Never",
        "--image-pull-policy=Never", "--", "sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert wait_for_pod_phase(node, name, "busy", {"Running"}) == "Running"
    pod = node.json("-n", name, "get", "pod", "busy")
    container = pod["status"]["containerStatuses"][0]["containerID"].removeprefix("containerd://")
    (task,) = [t for t in node.node.ctr("tasks", "ls").splitlines() if t.startswith(container)]
    assert "RUNNING" in task

    wait_until(
        lambda: node.kubectl("get", "namespace", name, "--ignore-not-found", "-o", "name") == "",
        timeout=120,
        interval=0.5,
        message=f"{name} expired and finalized",
    )
    # The namespace controller only finishes once the kubelet reports the pod terminated.
    print(f"\n{name}: gone {time.monotonic() - expires:.1f}s after its expiry (ttl 20s)")
    # The container's process is really gone from the node, not only from the API.
    assert container not in node.node.ctr("tasks", "ls")


def _holder(cluster: NodeCluster) -> str:
    lease = cluster.json("-n", "nsprov", "get", "lease", "nsprov-controller")
    return str(lease["spec"].get("holderIdentity") or "").rsplit("_", 1)[0]


def test_leader_pod_deleted_the_other_replica_takes_over(
    node: NodeCluster, deployed: Deployed
) -> None:
    before = {p["metadata"]["name"] for p in deployed.pods(node)}
    leader = _holder(node)
    assert leader in before
    (follower,) = before - {leader}
    started = time.monotonic()
    node.kubectl("-n", "nsprov", "delete", "pod", leader, "--wait=false")
    wait_until(lambda: _holder(node) == follower, timeout=60, interval=0.2,
               message=f"{follower} holds the lease")  # fmt: skip
    print(f"\nlease moved to {follower} {time.monotonic() - started:.1f}s after deleting {leader}")

    # Expiries continue under the new leader (asked through it: the old pod may linger).
    (survivor,) = [p for p in deployed.pods(node) if p["metadata"]["name"] == follower]
    api = f"http://{pod_ip(survivor)}:8080"
    auth = {"Authorization": f"Bearer {deployed.token}"}
    created = httpx.post(f"{api}/api/v1/namespaces", params={"ttl": "5s"}, headers=auth,
                         timeout=60)  # fmt: skip
    assert created.status_code == 201, created.text
    name = created.headers["x-namespace"]
    wait_until(
        lambda: node.kubectl("get", "namespace", name, "--ignore-not-found", "-o", "name") == "",
        timeout=90,
        interval=0.5,
        message=f"{name} expired under the new leader",
    )
    # The Deployment replaces the deleted pod: two Ready replicas again.
    node.kubectl("-n", "nsprov", "rollout", "status", "deployment/nsprov", "--timeout=120s",
                 timeout=150)  # fmt: skip
    wait_until(lambda: sum(_ready(p) for p in deployed.pods(node)) == 2, timeout=60,
               message="two Ready replicas")  # fmt: skip


def test_rollout_restart_under_a_stream_of_creates(node: NodeCluster, deployed: Deployed) -> None:
    client = ServiceClient(node, deployed.token)
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            client.create()

    worker = threading.Thread(target=stream, daemon=True)
    worker.start()
    try:
        wait_until(lambda: len(client.created) >= 3, timeout=60, message="creates flowing")
        started = time.monotonic()
        node.kubectl("-n", "nsprov", "rollout", "restart", "deployment/nsprov")
        node.kubectl("-n", "nsprov", "rollout", "status", "deployment/nsprov", "--timeout=180s",
                     timeout=200)  # fmt: skip
        during = len(client.created)
        wait_until(lambda: len(client.created) >= during + 3, timeout=60,
                   message="creates flowing after the rollout")  # fmt: skip
    finally:
        stop.set()
        worker.join(timeout=60)
    print(
        f"\nrollout restart: {time.monotonic() - started:.1f}s, {len(client.created)} creates, "
        f"{len(client.retried)} retried attempts: {client.retried[:5]}"
    )
    assert client.failed == []
    assert len(set(client.created)) == len(client.created)


_CRASH_LOOP = """
kubectl run crash --image={image} --image-pull-policy=Never --restart=Always \\
  -- sh -c 'echo "boom at $(date +%s)"; exit 1' >/dev/null
kubectl wait pod/crash --for=jsonpath='{{.status.containerStatuses[0].restartCount}}'=1 \\
  --timeout=120s >/dev/null
exit 1
"""


def test_diagnostics_of_a_crash_looping_pod_before_the_delete(
    node: NodeCluster, deployed: Deployed, tmp_path: Path
) -> None:
    """`nsprov run --diagnostics on-failure` on a real kubelet: restarts, the last
    termination's reason and exit code, and the current and previous container's logs."""
    kubectl_dir = str(build.binaries().kubectl.parent)
    env = {
        "PATH": os.pathsep.join(
            [kubectl_dir, str(Path(sys.executable).parent), os.environ["PATH"]]
        ),
        "HOME": str(tmp_path),
        "NSPROV_URL": _api(deployed, node),
        "NSPROV_TOKEN": deployed.token,
        "NSPROV_ALLOW_INSECURE_URL": "true",  # a pod IP inside the node's network namespace
    }
    script = _CRASH_LOOP.format(image=images.BUSYBOX_IMAGE)
    ran = subprocess.run(
        ["nsprov", "run", "--diagnostics=on-failure", "--", "sh", "-ec", script],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert ran.returncode == 1, ran.stderr
    (report_path,) = (tmp_path / "nsprov-diagnostics").glob("np-*.txt")
    name = report_path.stem
    report = report_path.read_text()
    assert f"---- nsprov diagnostics: {name} ----" in ran.stderr
    assert "pod/crash: phase " in report
    assert re.search(
        r"^  container crash: .*, restarts [1-9]\d*, last terminated \(Error, exit 1\)",
        report,
        re.M,
    ), report
    current = report.index("== log of pod/crash container crash (last 100 lines)")
    previous = report.index("== log of pod/crash container crash, previous (last 100 lines)")
    assert re.match(r"== log of .*\nboom at \d+\n", report[previous:]), report
    # The current container may be waiting in its back-off: its section is there, whatever
    # the kubelet says of it; the previous one's log is the one that tells.
    assert current < previous
    assert "BackOff" in report or "Started" in report  # the kubelet's events, by time
    assert ran.stderr.splitlines()[-1] == f"nsprov: namespace {name} is being deleted"
