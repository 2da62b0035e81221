"""The roll-out of a policy edit, against the real control plane.

A namespace keeps the template it was provisioned with when the policy changes;
``nsprov rollout`` (run as the operator would, with nsprov's own flags and
environment) rewrites its record, and nsprov's running controller then brings its
quota and RoleBindings in line. Namespaces of other tenants are never touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import CONFIGMAP_GRANT, EMPTY_GRANT, NSPROV_NAMESPACE, Cluster
from tests.integration.service import RunningService, metric, running_service
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")

BOUNDS = "namespace-provisioner"
TEMPLATE = "nsprov.io/template"

BEFORE = f"""
tenants:
  - name: web
    match: {{token: alice}}
    clusterRole: {EMPTY_GRANT}
    template:
      resourceQuota: {{hard: {{pods: "2"}}}}
  - name: data
    match: {{token: bob}}
    clusterRole: {EMPTY_GRANT}
    template:
      resourceQuota: {{hard: {{pods: "2"}}}}
"""

# web: a bigger quota, a second grant, a label; data exactly as before.
AFTER = f"""
tenants:
  - name: web
    match: {{token: alice}}
    clusterRole: [{EMPTY_GRANT}, {CONFIGMAP_GRANT}]
    labels: {{cost-centre: "4711"}}
    template:
      resourceQuota: {{hard: {{pods: "5"}}}}
  - name: data
    match: {{token: bob}}
    clusterRole: {EMPTY_GRANT}
    template:
      resourceQuota: {{hard: {{pods: "2"}}}}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(BEFORE)
    return path


@pytest.fixture
def service(cluster: Cluster, policy_file: Path, tmp_path: Path) -> Iterator[RunningService]:
    args = [f"--policy-file={policy_file}", "--leader-elect-lease-name=nsprov-test-rollout"]
    with running_service(cluster.kubeconfig, tmp_path / "nsprov", args) as running:
        wait_until(lambda: metric(running, "nsprov_leader") == 1, timeout=15, message="leader")
        yield running


def _provision(service: RunningService, owner: str) -> str:
    with service.client() as http:
        response = http.post(
            "/api/v1/namespaces", params={"ttl": "10m"}, headers=service.auth(owner)
        )
    assert response.status_code == 201, response.text
    return response.headers["x-namespace"]


def _rollout(service: RunningService, *args: str) -> subprocess.CompletedProcess[str]:
    """``nsprov rollout`` with the flags and environment the service was started with."""
    serve_flags = service.argv[service.argv.index("serve") + 1 :]
    return subprocess.run(
        [sys.executable, "-m", "nsprov.cli", "rollout", *serve_flags, *args],
        env=service.env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _pods(core: client.CoreV1Api, namespace: str) -> str:
    return str(core.read_namespaced_resource_quota(BOUNDS, namespace).spec.hard["pods"])


def _binding(rbac: client.RbacAuthorizationV1Api, namespace: str, name: str) -> str | None:
    try:
        return str(rbac.read_namespaced_role_binding(name, namespace).role_ref.name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _loaded(service: RunningService) -> float | None:
    return httpx.get(f"{service.internal_url}/readyz", timeout=5).json()["policy"]["loadedAt"]


def test_an_edit_applies_to_new_namespaces_and_the_rollout_to_live_ones(
    service: RunningService, policy_file: Path, cluster: Cluster, core: client.CoreV1Api
) -> None:
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    web, data = _provision(service, "alice"), _provision(service, "bob")
    assert _pods(core, web) == _pods(core, data) == "2"

    loaded = _loaded(service)
    policy_file.write_text(AFTER)
    wait_until(lambda: _loaded(service) != loaded, timeout=10, message="policy reloaded")
    fresh = _provision(service, "alice")
    assert _pods(core, fresh) == "5"
    assert _binding(rbac, fresh, f"{BOUNDS}-2") == CONFIGMAP_GRANT
    # The live namespace keeps what it was made with.
    assert _pods(core, web) == "2"
    assert _binding(rbac, web, f"{BOUNDS}-2") is None
    before = {n: core.read_namespace(n).metadata for n in (web, data)}

    dry = _rollout(service, "--tenant=web", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    lines = {line.split()[0]: line for line in dry.stdout.splitlines()}
    assert "would-change" in lines[web]
    assert "unchanged" in lines[fresh]
    assert data not in lines
    assert dry.stdout.splitlines()[-1] == "2 namespace(s): 1 would-change, 1 unchanged"
    for name in (web, data):
        assert core.read_namespace(name).metadata.resource_version == before[name].resource_version

    started = time.monotonic()
    done = _rollout(service, "--tenant=web", "--wait", "--timeout=30s")
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith(web))
    old_record = before[web].annotations[TEMPLATE]
    metadata = core.read_namespace(web).metadata
    assert (
        metadata.annotations[TEMPLATE] == core.read_namespace(fresh).metadata.annotations[TEMPLATE]
    )
    assert json.loads(metadata.annotations[TEMPLATE])["resourceQuota"] == {"hard": {"pods": "5"}}
    assert metadata.annotations[TEMPLATE] != old_record
    assert " changed (clusterRoles, resourceQuota, labels)" in line
    assert metadata.labels["cost-centre"] == "4711"
    # What a job asked for stays: its expiry, its owner.
    for key in ("nsprov.io/expires-at", "nsprov.io/owner-hash"):
        assert metadata.labels[key] == before[web].labels[key]
    assert metadata.annotations["nsprov.io/owner"] == before[web].annotations["nsprov.io/owner"]
    # The controller brings the objects in line (--wait already waited for it).
    wait_until(lambda: _pods(core, web) == "5", timeout=10, message="quota 5")
    wait_until(lambda: _binding(rbac, web, f"{BOUNDS}-2") == CONFIGMAP_GRANT, timeout=10,
               message="second RoleBinding")  # fmt: skip
    took = time.monotonic() - started
    print(f"rollout + controller: {took:.2f}s\n{dry.stdout}{done.stdout}")
    assert _binding(rbac, web, BOUNDS) == EMPTY_GRANT
    # Another tenant's namespace is untouched.
    assert core.read_namespace(data).metadata.resource_version == before[data].resource_version
    assert _pods(core, data) == "2"

    again = _rollout(service, "--tenant=web")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == "2 namespace(s): 2 unchanged"


def test_rolling_back_removes_what_the_old_template_added(
    service: RunningService, policy_file: Path, cluster: Cluster, core: client.CoreV1Api
) -> None:
    """A roll-out can take away too: the second grant, the label and the quota go."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    loaded = _loaded(service)
    policy_file.write_text(AFTER)
    wait_until(lambda: _loaded(service) != loaded, timeout=10, message="policy reloaded")
    web = _provision(service, "alice")
    assert _binding(rbac, web, f"{BOUNDS}-2") == CONFIGMAP_GRANT

    loaded = _loaded(service)
    policy_file.write_text(BEFORE.replace('{hard: {pods: "2"}}', "none", 1))
    wait_until(lambda: _loaded(service) != loaded, timeout=10, message="policy reloaded")
    done = _rollout(service, "--all", "--wait", "--timeout=30s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cost-centre" not in (core.read_namespace(web).metadata.labels or {})
    assert _binding(rbac, web, f"{BOUNDS}-2") is None
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_resource_quota(BOUNDS, web)
    assert gone.value.status == 404


def test_an_unknown_tenant_is_bad_usage(service: RunningService) -> None:
    result = _rollout(service, "--tenant=nope")
    assert result.returncode == 2
    assert "the policy has no tenant 'nope'; its tenants: web, data" in result.stderr


def test_failures_exit_1_and_change_nothing_they_cannot_finish(
    cluster: Cluster, policy_file: Path, tmp_path: Path, core: client.CoreV1Api
) -> None:
    """A grant that does not exist fails the namespace (nothing written); without a
    controller, --wait says so by its deadline."""
    args = [f"--policy-file={policy_file}", "--controller=false"]
    with running_service(cluster.kubeconfig, tmp_path / "nsprov", args) as service:
        web = _provision(service, "alice")
        version = core.read_namespace(web).metadata.resource_version
        loaded = _loaded(service)
        policy_file.write_text(BEFORE.replace(EMPTY_GRANT, "nsprov-test-missing", 1))
        wait_until(lambda: _loaded(service) != loaded, timeout=10, message="policy reloaded")
        missing = _rollout(service, "--tenant=web")
        assert missing.returncode == 1, missing.stdout + missing.stderr
        assert "failed (grant ClusterRole 'nsprov-test-missing' does not exist)" in missing.stdout
        assert core.read_namespace(web).metadata.resource_version == version

        loaded = _loaded(service)
        policy_file.write_text(AFTER)
        wait_until(lambda: _loaded(service) != loaded, timeout=10, message="policy reloaded")
        started = time.monotonic()
        late = _rollout(service, "--tenant=web", "--wait", "--timeout=2s")
        assert late.returncode == 1, late.stdout + late.stderr
        assert time.monotonic() - started < 30
        assert f"{web} not in line with template" in late.stdout
        assert "is the controller running?" in late.stdout
        # The record was written; the objects wait for a controller.
        assert "4711" in core.read_namespace(web).metadata.annotations[TEMPLATE]
        assert _pods(core, web) == "2"


def test_as_nsprovs_own_serviceaccount_with_k8s_rbac_and_admission_policy(
    service: RunningService,
    policy_file: Path,
    manifest_kubeconfig: Path,
    core: client.CoreV1Api,
) -> None:
    """What `kubectl exec deploy/nsprov -- nsprov rollout` runs as: k8s/'s RBAC suffices
    (the admission policy lets nsprov write nsprov.io/*), and a grant missing from its
    `bind` list fails before anything is written."""
    web = _provision(service, "alice")
    version = core.read_namespace(web).metadata.resource_version
    as_nsprov = f"--kubeconfig={manifest_kubeconfig}"

    loaded = _loaded(service)
    policy_file.write_text(AFTER)  # adds a grant k8s/ does not let nsprov bind
    wait_until(lambda: _loaded(service) != loaded, timeout=10, message="policy reloaded")
    refused = _rollout(service, as_nsprov, "--tenant=web")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"nsprov may not bind grant ClusterRole '{CONFIGMAP_GRANT}'" in refused.stdout
    assert core.read_namespace(web).metadata.resource_version == version

    loaded = _loaded(service)
    policy_file.write_text(AFTER.replace(f"[{EMPTY_GRANT}, {CONFIGMAP_GRANT}]", EMPTY_GRANT))
    wait_until(lambda: _loaded(service) != loaded, timeout=10, message="policy reloaded")
    done = _rollout(service, as_nsprov, "--tenant=web", "--wait", "--timeout=30s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{web} " in done.stdout
    assert " changed (resourceQuota, labels)" in done.stdout
    assert core.read_namespace(web).metadata.labels["cost-centre"] == "4711"
    assert _pods(core, web) == "5"


def test_a_rollout_by_another_identity_never_leaves_a_namespace_without_its_grant(
    cluster: Cluster,
    core: client.CoreV1Api,
    manifest_kubeconfig: Path,
    tmp_path: Path,
) -> None:
    """An admin runs the roll-out with their own kubeconfig (system:masters: the bind check
    passes for them, the admission policy lets them write nsprov.io/*) to a grant the
    controller, running as nsprov's ServiceAccount with k8s/'s RBAC, may not bind. The
    controller must keep the namespace's RoleBinding to the old grant, not delete it and
    then fail (403) to create the new one: the job would lose its rights mid-run."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(BEFORE)
    args = [
        f"--policy-file={policy}",
        f"--leader-elect-namespace={NSPROV_NAMESPACE}",  # k8s/'s Lease, which it may use
    ]
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    with running_service(manifest_kubeconfig, tmp_path / "nsprov", args) as deployed:
        wait_until(lambda: metric(deployed, "nsprov_leader") == 1, timeout=15, message="leader")
        web = _provision(deployed, "alice")
        assert _binding(rbac, web, BOUNDS) == EMPTY_GRANT
        policy.write_text(AFTER.replace(f"[{EMPTY_GRANT}, {CONFIGMAP_GRANT}]", CONFIGMAP_GRANT))
        as_admin = f"--kubeconfig={cluster.kubeconfig}"
        done = _rollout(deployed, as_admin, "--tenant=web")
        assert done.returncode == 0, done.stdout + done.stderr
        assert " changed (clusterRoles" in done.stdout
        deadline = time.monotonic() + 4.0  # the controller acts within about a second
        while time.monotonic() < deadline:
            assert _binding(rbac, web, BOUNDS) == EMPTY_GRANT, "the job lost its grant"
            time.sleep(0.2)


def test_a_lowered_quota_is_in_force_while_kube_controller_manager_lags(
    service: RunningService, policy_file: Path, cluster: Cluster, core: client.CoreV1Api
) -> None:
    """Kubernetes enforces a quota by its status.hard, which only the resource-quota
    controller updates after a spec change: a roll-out that lowers a live namespace's quota
    must put the new limits in force itself, or the old, higher ones bind for as long as
    kube-controller-manager lags (or is down)."""
    web = _provision(service, "alice")

    def counted() -> bool:
        status = core.read_namespaced_resource_quota(BOUNDS, web).status
        return bool(status and status.used and "pods" in status.used)

    wait_until(counted, timeout=30, message="quota counted")
    manager = cluster.require_local().components["kube-controller-manager"]
    assert manager.pid is not None
    os.kill(manager.pid, signal.SIGSTOP)
    try:
        loaded = _loaded(service)
        policy_file.write_text(BEFORE.replace('{hard: {pods: "2"}}', '{hard: {pods: "1"}}', 1))
        wait_until(lambda: _loaded(service) != loaded, timeout=10, message="policy reloaded")
        done = _rollout(service, "--tenant=web", "--wait", "--timeout=30s")
        assert done.returncode == 0, done.stdout + done.stderr
        assert _pods(core, web) == "1"

        def in_force() -> bool:
            status = core.read_namespaced_resource_quota(BOUNDS, web).status
            return bool(status and status.hard and status.hard.get("pods") == "1")

        wait_until(in_force, timeout=5, message="status.hard lowered without the controller")
    finally:
        os.kill(manager.pid, signal.SIGCONT)
