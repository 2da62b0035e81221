"""The client examples are run, not just shown: examples/gitlab-ci.yml, examples/Jenkinsfile
and the terminal transcript of docs/client.md, against the real service.

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


# ---- docs/client.md's transcript ----------------------------------------------------------

_MARKER = "<!-- transcript: tests/integration/test_client_examples.py"
_NAME = re.compile(r"\bnp-[a-z0-9]{10}\b")
_TIME = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b")
_LEFT = re.compile(r"(?<!\S)(\d+[dh])?\d+[dhms](?!\S)")
"""Time left (EXPIRES-IN) and AGE: ``29m``, ``1h5m``, ``45s``, ``2d3h``."""


def transcript() -> list[tuple[str, list[str]]]:
    """docs/client.md's transcript as (command, expected output lines) pairs."""
    text = (REPO / "docs" / "client.md").read_text()
    block = text[text.index(_MARKER) :].split("```console\n", 1)[1].split("\n```", 1)[0]
    pairs: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        else:
            pairs[-1][1].append(line)
    return pairs


def _shape(line: str) -> str:
    """A line with what differs between runs (names, instants, time left) blanked."""
    line = _TIME.sub("<time>", _NAME.sub("<name>", line))
    return " ".join(_LEFT.sub("<left>", line.rstrip()).split())


@pytest.mark.usefixtures("no_managed_namespaces")  # `nsprov list` shows none being deleted
def test_client_page_transcript(
    service: RunningService, cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(service.tokens["alice"])
    token_file.chmod(0o600)
    env = client_env(cluster, service.url, NSPROV_TOKEN_FILE=str(token_file))
    names: dict[str, str] = {}  # the page's namespace names -> this run's
    pairs = transcript()
    assert len(pairs) >= 8
    for command, expected in pairs:
        if command.startswith("export "):
            exported = {pair.split("=", 1)[0] for pair in command.split()[1:]}
            assert exported == {"NSPROV_URL", "NSPROV_TOKEN_FILE"}
            continue  # the test's own URL and token file stand in for them
        for shown, actual in names.items():
            command = command.replace(shown, actual)
        result = subprocess.run(
            ["sh", "-c", command], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, (command, result.stdout)
        got = result.stdout.splitlines()
        assert [_shape(g) for g in got] == [_shape(e) for e in expected], (command, got)
        for want, have in zip(expected, got, strict=True):
            for shown, actual in zip(_NAME.findall(want), _NAME.findall(have), strict=True):
                assert names.setdefault(shown, actual) == actual, (command, have)
    _all_deleted(core)
