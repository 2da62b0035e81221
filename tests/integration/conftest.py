"""The real control plane every integration test talks to.

One control plane per test session (starting one costs seconds, building one the
first time costs many minutes). ``NSPROV_TEST_KUBECONFIG`` points the same tests
at an existing cluster instead: kind, or a real one.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tests.cluster import build, controlplane


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
    plane = controlplane.start()
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
    for name in created:
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
