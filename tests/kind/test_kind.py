"""nsprov as admins install it: image built and loaded into kind, k8s/ applied, used over HTTP.

Needs docker (with a running engine), kind and pytest-kind:

    pip install -e '.[server,dev,kind]'
    make test-kind

Skipped, with the reason, wherever one of them is missing (as on machines without docker).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import wait_until

REPO = Path(__file__).resolve().parents[2]
IMAGE = "nsprov:kind-test"


def _missing() -> str | None:
    if shutil.which("docker") is None:
        return "docker is not installed"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return "no docker engine is reachable (docker info failed)"
    try:
        import pytest_kind  # noqa: F401
    except ImportError:
        return "pytest-kind is not installed (pip install -e '.[kind]')"
    return None


_reason = _missing()
if _reason:
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.kind


def _overlay(tmp_path: Path) -> Path:
    """k8s/ with the test image and a short lease, as an admin's overlay would."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(REPO / "k8s", overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [base],
                "images": [{"name": "ghcr.io/nsprov/nsprov", "newName": "nsprov",
                            "newTag": "kind-test"}],
            }
        )
    )  # fmt: skip
    return overlay


def test_deploy_provision_use_delete_expire(kind_cluster, tmp_path: Path) -> None:
    subprocess.run(["docker", "build", "-t", IMAGE, str(REPO)], check=True)
    kind_cluster.load_docker_image(IMAGE)
    kind_cluster.kubectl("apply", "-k", str(_overlay(tmp_path)))
    kind_cluster.kubectl("apply", "-f", str(REPO / "k8s/examples/grant-configmaps.yaml"))

    token = secrets.token_hex(32)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"kind-test: {token}\n")
    kind_cluster.kubectl(
        "-n",
        "nsprov",
        "create",
        "secret",
        "generic",
        "nsprov-tokens",
        f"--from-file=tokens={tokens}",
    )
    kind_cluster.kubectl("-n", "nsprov", "rollout", "status", "deployment/nsprov", "--timeout=300s")

    admin = yaml.safe_load(Path(kind_cluster.kubeconfig_path).read_text())
    server = admin["clusters"][0]["cluster"]["server"]
    auth = {"Authorization": f"Bearer {token}"}
    with kind_cluster.port_forward("service/nsprov", 80, "-n", "nsprov") as port:
        url = f"http://127.0.0.1:{port}"
        created = httpx.post(f"{url}/api/v1/namespaces", params={"ttl": "10m", "server": server},
                             headers=auth, timeout=60)  # fmt: skip
        assert created.status_code == 201, created.text
        name = created.headers["x-namespace"]
        kubeconfig = tmp_path / "tenant"
        kubeconfig.write_text(created.text)
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        used = subprocess.run(["kubectl", "create", "configmap", "ci", "--from-literal=a=b"],
                              env=env, capture_output=True, text=True, check=False)  # fmt: skip
        assert used.returncode == 0, used.stderr
        denied = subprocess.run(["kubectl", "get", "secrets", "-n", "kube-system"],
                                env=env, capture_output=True, text=True, check=False)  # fmt: skip
        assert denied.returncode != 0
        assert "Forbidden" in denied.stderr

        deleted = httpx.delete(f"{url}/api/v1/namespaces/{name}", headers=auth, timeout=60)
        assert deleted.status_code == 202

        short = httpx.post(f"{url}/api/v1/namespaces", params={"ttl": "30s"}, headers=auth,
                           timeout=60)  # fmt: skip
        assert short.status_code == 201, short.text
        expiring = short.headers["x-namespace"]

        def gone() -> bool:
            result = kind_cluster.kubectl("get", "namespace", expiring, "--ignore-not-found", "-o",
                                          "name")  # fmt: skip
            return result.strip() == ""

        wait_until(gone, timeout=120, interval=1, message=f"{expiring} expired")
