"""The real control plane every integration test talks to.

One control plane per test session (starting one costs seconds, building one the
first time costs many minutes). ``NSPROV_TEST_KUBECONFIG`` points the same tests
at an existing cluster instead: kind, or a real one.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.cluster import build, controlplane
from tests.support import wait_until


@dataclass
class Cluster:
    """Where the tests' cluster is and how to talk to it as admin."""

    kubeconfig: Path
    api: client.ApiClient
    kubectl: str
    plane: controlplane.ControlPlane | None

    @property
    def server(self) -> str:
        return str(self.api.configuration.host)

    def require_local(self) -> controlplane.ControlPlane:
        """The local control plane, or skip when the tests run against another cluster."""
        if self.plane is None:
            pytest.skip("needs the local control plane (NSPROV_TEST_KUBECONFIG is set)")
        return self.plane


def _kubectl() -> str:
    built = build.binaries().kubectl
    if built.exists():
        return str(built)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found: run `python -m tests.cluster build` or install kubectl")
    return found


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    external = os.environ.get("NSPROV_TEST_KUBECONFIG")
    if external:
        path = Path(external)
        api = config.new_client_from_config(config_file=str(path))
        try:
            yield Cluster(kubeconfig=path, api=api, kubectl=_kubectl(), plane=None)
        finally:
            api.close()
        return
    # The audit log (namespace DELETEs only) lets tests count who deleted what, and how often.
    plane = controlplane.start(audit=True)
    api = config.new_client_from_config(config_file=str(plane.kubeconfig))
    try:
        yield Cluster(kubeconfig=plane.kubeconfig, api=api, kubectl=_kubectl(), plane=plane)
    finally:
        api.close()
        plane.stop()


@pytest.fixture
def core(cluster: Cluster) -> client.CoreV1Api:
    return client.CoreV1Api(cluster.api)


@pytest.fixture
def make_namespace(core: client.CoreV1Api) -> Iterator[Callable[[], str]]:
    """Create uniquely named namespaces; every one is deleted after the test."""
    created: list[str] = []

    def make() -> str:
        name = f"test-{secrets.token_hex(4)}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        created.append(name)
        return name

    yield make
    delete_namespaces(core, created)


def delete_namespaces(core: client.CoreV1Api, names: list[str]) -> None:
    """Delete these namespaces; one that is already gone is fine."""
    for name in names:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


SELECTOR = "controller.observatorium.io=namespace-provisioner"
EMPTY_GRANT = "namespace-provisioner-grant"
CONFIGMAP_GRANT = "nsprov-test-configmaps"
CONFIGMAP_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]


@pytest.fixture(scope="session")
def grants(cluster: Cluster) -> Iterator[None]:
    """The empty default grant (as k8s/ installs it) and a grant that allows configmaps."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    roles = {
        EMPTY_GRANT: [],
        CONFIGMAP_GRANT: [
            client.V1PolicyRule(api_groups=[""], resources=["configmaps"], verbs=CONFIGMAP_VERBS)
        ],
    }
    for name, rules in roles.items():
        try:
            rbac.create_cluster_role(
                client.V1ClusterRole(metadata=client.V1ObjectMeta(name=name), rules=rules)
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
    yield
    for name in roles:
        try:
            rbac.delete_cluster_role(name)
        except ApiException as exc:
            if exc.status != 404:  # k8s/ (applied by some tests) removes the empty grant too
                raise


def delete_managed_namespaces(core: client.CoreV1Api) -> list[str]:
    """Delete every namespace carrying nsprov's label; returns their names."""
    names = [ns.metadata.name for ns in core.list_namespace(label_selector=SELECTOR).items]
    delete_namespaces(core, names)
    return names


def live_managed_namespaces(core: client.CoreV1Api) -> list[str]:
    return sorted(
        ns.metadata.name
        for ns in core.list_namespace(label_selector=SELECTOR).items
        if ns.metadata.deletion_timestamp is None
    )


@pytest.fixture
def clean_namespaces(core: client.CoreV1Api) -> Iterator[None]:
    """Start with no live managed namespace, and delete whatever the test provisioned."""
    delete_managed_namespaces(core)
    yield
    delete_managed_namespaces(core)


@pytest.fixture
def no_managed_namespaces(core: client.CoreV1Api, clean_namespaces: None) -> None:
    """Start with no managed namespace at all, not even one being deleted: for tests of the
    caps, where a namespace holds its slot until it is gone (issue 18). Namespaces of the
    tests before are deleted by ``clean_namespaces``; gone takes a few seconds more
    (kube-controller-manager's namespace controller waits 5 s before it empties one)."""
    wait_until(
        lambda: not core.list_namespace(label_selector=SELECTOR).items,
        timeout=90,
        interval=0.5,
        message="no managed namespace left, live or Terminating",
    )


def token_kubeconfig(cluster: Cluster, token: str, path: Path) -> Path:
    """A kubeconfig for ``token`` against the test cluster."""
    import base64

    import yaml

    ca = Path(cluster.api.configuration.ssl_ca_cert).read_bytes()
    config_ = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority-data": base64.b64encode(ca).decode(),
                },
            }
        ],
        "users": [{"name": "test", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(config_))
    path.chmod(0o600)
    return path


REPO = Path(__file__).resolve().parents[2]
NSPROV_NAMESPACE = "nsprov"  # where k8s/ installs nsprov


@pytest.fixture(scope="session")
def manifest_kubeconfig(
    cluster: Cluster, grants: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """k8s/ applied to the cluster, and a kubeconfig with its ServiceAccount's token.

    A service run with it has exactly the permissions the manifests give nsprov.
    """
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    applied = subprocess.run(
        [cluster.kubectl, "apply", "-k", str(REPO / "k8s")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    core = client.CoreV1Api(cluster.api)
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = core.create_namespaced_service_account_token(
        "nsprov", NSPROV_NAMESPACE, request
    ).status.token
    try:
        yield token_kubeconfig(cluster, token, tmp_path_factory.mktemp("nsprov-sa") / "kubeconfig")
    finally:
        subprocess.run(
            [cluster.kubectl, "delete", "-k", str(REPO / "k8s"), "--ignore-not-found",
             "--wait=false"],
            env=env, capture_output=True, timeout=120, check=False,
        )  # fmt: skip


@pytest.fixture(scope="session")
def issuer_discovery(cluster: Cluster) -> Iterator[controlplane.ControlPlane]:
    """The local control plane's ServiceAccount issuer, its discovery readable anonymously.

    Its issuer URL is the API server's own (see tests/cluster/controlplane.py), so nsprov
    can fetch the discovery document and keys like any OIDC relying party would.
    """
    plane = cluster.require_local()
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    name = "nsprov-test-issuer-discovery"
    binding = client.V1ClusterRoleBinding(
        metadata=client.V1ObjectMeta(name=name),
        role_ref=client.V1RoleRef(
            api_group="rbac.authorization.k8s.io",
            kind="ClusterRole",
            name="system:service-account-issuer-discovery",
        ),
        subjects=[
            client.RbacV1Subject(
                kind="Group", name="system:unauthenticated", api_group="rbac.authorization.k8s.io"
            )
        ],
    )
    try:
        rbac.create_cluster_role_binding(binding)
    except ApiException as exc:
        if exc.status != 409:
            raise
    yield plane
    try:
        rbac.delete_cluster_role_binding(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture
def configmap_grant(cluster: Cluster) -> Iterator[None]:
    """The admin's job after installing k8s/: give the (empty) grant some rules, configmaps here."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": CONFIGMAP_VERBS}
    rbac.patch_cluster_role(EMPTY_GRANT, {"rules": [rule]})
    try:
        yield
    finally:
        rbac.patch_cluster_role(EMPTY_GRANT, {"rules": []})
