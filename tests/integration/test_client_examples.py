"""The client examples are run, not just shown: examples/gitlab-ci.yml, examples/Jenkinsfile
and the README's terminal transcript, against the real service.

Each CI file's commands run the way that CI system runs them (GitLab: a job's
before_script and script lines in one shell, after_script in another; Jenkins:
each ``sh`` step as ``sh -xe``), with the variables the system would set. Two
stand-ins: the URL the examples name is replaced by the test service's, and
the token a CI system would mint or bind (GitLab's id_tokens, a Jenkins
credential) is one of the service's static tokens in the same variable. Lines
that install nsprov from the package index are skipped: nsprov is on PATH from
the test's virtualenv, and a test does not download.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.integration.conftest import (
    CONFIGMAP_GRANT,
    Cluster,
    live_managed_namespaces,
)
from tests.integration.service import RunningService, running_service
from tests.integration.test_client import client_env
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")
REPO = Path(__file__).resolve().parents[2]
EXAMPLE_URL = "https://nsprov.example.com"


@pytest.fixture(scope="module")
def service(cluster: Cluster, grants: None, tmp_path_factory) -> Any:
    with running_service(
        cluster.kubeconfig, tmp_path_factory.mktemp("nsprov"), [f"--cluster-role={CONFIGMAP_GRANT}"]
    ) as running:
        yield running


def _installs_nsprov(line: str) -> bool:
    return bool(re.search(r"pip install .*\bnsprov\b", line))


def _sh(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-xe", "-c", script], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=180, check=False,
    )  # fmt: skip


def _all_deleted(core: client.CoreV1Api) -> None:
    wait_until(lambda: live_managed_namespaces(core) == [], timeout=30, message="no live namespace")


# ---- GitLab -------------------------------------------------------------------------------

_GITLAB_KEYWORDS = {"variables", "default", "stages", "include", "workflow", "image", "services"}


def test_gitlab_jobs(
    service: RunningService, cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    pipeline = yaml.safe_load((REPO / "examples" / "gitlab-ci.yml").read_text())
    jobs = {name: job for name, job in pipeline.items() if name not in _GITLAB_KEYWORDS}
    assert set(jobs) == {"integration-tests", "review-app"}
    variables = {k: str(v) for k, v in pipeline.get("variables", {}).items()}
    assert variables["NSPROV_URL"] == EXAMPLE_URL
    variables["NSPROV_URL"] = service.url
    before = pipeline.get("default", {}).get("before_script", [])
    for number, (name, job) in enumerate(jobs.items(), start=101):
        project = tmp_path / name
        project.mkdir()
        env = client_env(cluster, service.url)
        env.update(variables)
        env.update(
            CI="true", GITLAB_CI="true", CI_JOB_ID=str(number), CI_JOB_NAME=name,
            CI_PIPELINE_ID="7001", CI_PROJECT_DIR=str(project), CI_COMMIT_SHA="0" * 40,
        )  # fmt: skip
        id_tokens = job.get("id_tokens", {})
        assert list(id_tokens) == ["NSPROV_ID_TOKEN"], name
        for variable in id_tokens:
            env[variable] = service.tokens["alice"]
        lines = [line for line in job.get("before_script", before) if not _installs_nsprov(line)]
        script = _sh("\n".join([*lines, *job["script"]]), env, project)
        assert script.returncode == 0, (name, script.stdout, script.stderr)
        if name == "integration-tests":
            assert script.stdout.strip().endswith(str(number))
        if "after_script" in job:
            assert live_managed_namespaces(core) != []
            after = _sh("\n".join(job["after_script"]), env, project)
            assert after.returncode == 0, (name, after.stdout, after.stderr)
        _all_deleted(core)


# ---- Jenkins ------------------------------------------------------------------------------

_SH_STEP = re.compile(r"\bsh\s+(?:'''(.*?)'''|'([^'\n]*)')", re.S)
_CREDENTIAL = re.compile(r"string\(credentialsId: '[^']+', variable: '(\w+)'\)")
_ENVIRONMENT = re.compile(r"environment\s*\{(.*?)\}", re.S)


def test_jenkins_pipeline(
    service: RunningService, cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    text = (REPO / "examples" / "Jenkinsfile").read_text()
    environment = dict(
        re.findall(r"(\w+)\s*=\s*'([^']*)'", _ENVIRONMENT.search(text).group(1))  # type: ignore[union-attr]
    )
    assert environment == {"NSPROV_URL": EXAMPLE_URL}
    steps = [triple or single for triple, single in _SH_STEP.findall(text)]
    assert len(steps) == 2
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    env = client_env(
        cluster, service.url, BUILD_TAG="jenkins-nsprov-example-42", BUILD_NUMBER="42",
        JOB_NAME="nsprov-example", WORKSPACE=str(workspace), JENKINS_URL="http://jenkins.test/",
    )  # fmt: skip
    for variable in _CREDENTIAL.findall(text):
        env[variable] = service.tokens["alice"]
    ran = []
    for step in steps:
        if _installs_nsprov(step):
            continue
        result = _sh(step, env, workspace)
        assert result.returncode == 0, (step, result.stdout, result.stderr)
        ran.append(result)
    assert len(ran) == 1
    assert ran[0].stdout.strip().endswith("jenkins-nsprov-example-42")
    _all_deleted(core)
