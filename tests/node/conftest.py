"""A control plane with a real node, and nsprov deployed on it as an admin would.

The node (tests/cluster/node.py) needs root, network namespaces, containerd, runc,
the CNI plugins, socat, buildah and debootstrap; every test here skips with the
reason where one is missing. One node per session: starting it costs seconds,
building its binaries and images the first time costs minutes (then cached).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    """deploy/overlay (k8s/ + the app-deploying grant, as the README installs it), pointed
    at the locally built image, with kubeconfigs naming the API URL the tests reach."""
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
