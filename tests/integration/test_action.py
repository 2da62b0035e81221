"""The GitHub Action's main and post steps, run as the runner would, against the real service."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import CONFIGMAP_GRANT, Cluster
from tests.integration.service import RunningService, running_service
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")
ACTION = Path(__file__).resolve().parents[2] / "action"


def parse_file_commands(text: str) -> dict[str, str]:
    """Read GITHUB_OUTPUT/ENV/STATE the way the runner does (``name<<DELIM`` heredocs)."""
    result: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value = []
            for body in lines:
                if body == delimiter:
                    break
                value.append(body)
            else:
                raise AssertionError(f"heredoc {name} not closed")
            result[name] = "\n".join(value)
        elif line:
            name, _, value = line.partition("=")
            result[name] = value
    return result


@pytest.fixture(scope="module")
def service(cluster: Cluster, grants: None, tmp_path_factory) -> Iterator[RunningService]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    with running_service(
        cluster.kubeconfig, tmp_path_factory.mktemp("nsprov"), [f"--cluster-role={CONFIGMAP_GRANT}"]
    ) as running:
        yield running


def _step(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(ACTION / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_main_then_post_as_the_runner_runs_them(
    service: RunningService, cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    files = {
        name: tmp_path / name.lower() for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_STATE")
    }
    for path in files.values():
        path.touch()
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    token = service.tokens["alice"]
    base = {
        "PATH": os.environ["PATH"],
        "RUNNER_TEMP": str(runner_temp),
        **{name: str(path) for name, path in files.items()},
        "INPUT_URL": service.url + "/",
        "INPUT_TOKEN": token,
        "INPUT_TTL": "15m",
    }

    main = _step("main.js", base)
    assert main.returncode == 0, main.stdout + main.stderr
    assert f"::add-mask::{token}" in main.stdout
    printed_without_masks = "\n".join(
        line
        for line in (main.stdout + main.stderr).splitlines()
        if not line.startswith("::add-mask::")
    )
    assert token not in printed_without_masks

    outputs = parse_file_commands(files["GITHUB_OUTPUT"].read_text())
    exported = parse_file_commands(files["GITHUB_ENV"].read_text())
    state = parse_file_commands(files["GITHUB_STATE"].read_text())
    namespace = outputs["namespace"]
    kubeconfig = Path(outputs["kubeconfig"])
    assert exported["KUBECONFIG"] == str(kubeconfig)
    assert state["namespace"] == namespace
    assert kubeconfig.stat().st_mode & 0o777 == 0o600
    assert core.read_namespace(namespace).metadata.annotations["nsprov.io/owner"] == "alice"

    # The job's next step: kubectl with the exported KUBECONFIG.
    job_env = {**os.environ, "KUBECONFIG": exported["KUBECONFIG"]}
    created = subprocess.run(
        [cluster.kubectl, "create", "configmap", "from-ci", "--from-literal=ok=1"],
        env=job_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert core.read_namespaced_config_map("from-ci", namespace).data == {"ok": "1"}

    post = _step("post.js", {**base, **{f"STATE_{k}": v for k, v in state.items()}})
    assert post.returncode == 0, post.stdout + post.stderr
    assert not kubeconfig.exists()

    def gone() -> bool:
        try:
            return core.read_namespace(namespace).metadata.deletion_timestamp is not None
        except ApiException as exc:
            return exc.status == 404

    wait_until(gone, timeout=10, message="namespace deleted by post")


def test_post_without_state_does_nothing(service: RunningService, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.touch()
    env = {
        "PATH": os.environ["PATH"],
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_STATE": str(state),
        "GITHUB_OUTPUT": str(tmp_path / "out"),
        "GITHUB_ENV": str(tmp_path / "env"),
        "INPUT_URL": service.url,
        "INPUT_TOKEN": service.tokens["alice"],
    }
    before = _deletes(service)
    post = _step("post.js", env)
    assert post.returncode == 0, post.stderr
    assert _deletes(service) == before


def _deletes(service: RunningService) -> float:
    metrics = httpx.get(f"{service.internal_url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("nsprov_http_requests_total{") and 'method="DELETE"' in line
    )
