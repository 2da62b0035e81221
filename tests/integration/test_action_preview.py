"""The Action's preview inputs (key, delete, mode) and examples/preview.yml, against the real
service, with main and post run as the runner runs them (tests/integration/test_action.py).

The example workflow is run, not just shown: each job's ``if:``, its ``uses:`` steps (main,
then post at the end of the job, with the step's ``with:`` as INPUT_*) and its ``run:``
steps (bash, with what the steps wrote to GITHUB_ENV), for the pull request events a
preview lives through: opened, a second push (synchronize), closed. The only stand-ins
are the URL (the test service's) and the token secret (one of its static tokens).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from tests.integration.conftest import CONFIGMAP_GRANT, Cluster
from tests.integration.service import RunningService, namespace_status, running_service
from tests.integration.test_action import _runner_files, _step, parse_file_commands
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")
REPO = Path(__file__).resolve().parents[2]
EXAMPLE_URL = "https://nsprov.example.com"


@pytest.fixture(scope="module")
def service(cluster: Cluster, grants: None, tmp_path_factory) -> Iterator[RunningService]:
    if subprocess.run(["node", "--version"], capture_output=True, check=False).returncode:
        pytest.skip("node is not installed")
    with running_service(
        cluster.kubeconfig, tmp_path_factory.mktemp("nsprov"), [f"--cluster-role={CONFIGMAP_GRANT}"]
    ) as running:
        yield running


def _main_then_post(
    tmp_path: Path, inputs: dict[str, str], job_status: str = "success"
) -> tuple[dict[str, str], str, str]:
    """Main, then post with main's state and ``job_status``; main's outputs and both logs."""
    tmp_path.mkdir(parents=True)
    # GITHUB_WORKSPACE: where a failed job's diagnostics go (else the current directory).
    env = {
        "PATH": os.environ["PATH"],
        "GITHUB_WORKSPACE": str(tmp_path),
        **_runner_files(tmp_path),
        **inputs,
    }
    main = _step("main.js", env)
    assert main.returncode == 0, main.stdout + main.stderr
    outputs = parse_file_commands(Path(env["GITHUB_OUTPUT"]).read_text())
    state = parse_file_commands(Path(env["GITHUB_STATE"]).read_text())
    post_env = {
        **env,
        "INPUT_JOB-STATUS": job_status,
        **{f"STATE_{k}": v for k, v in state.items()},
    }
    post = _step("post.js", post_env)
    assert post.returncode == 0, post.stdout + post.stderr
    assert "::warning::" not in post.stdout, post.stdout
    return outputs, main.stdout, post.stdout


def _gone_within_a_minute(core: client.CoreV1Api, name: str) -> None:
    wait_until(lambda: namespace_status(core, name) == "gone", timeout=60, message=f"{name} gone")


# ---- the inputs ---------------------------------------------------------------------------


def test_key_reuses_the_namespace_and_delete_on_success_keeps_a_failed_ones(
    service: RunningService, core: client.CoreV1Api, tmp_path: Path
) -> None:
    inputs = {
        "INPUT_URL": service.url,
        "INPUT_TOKEN": service.tokens["alice"],
        "INPUT_TTL": "15m",
        "INPUT_KEY": "pr-11",
        "INPUT_DELETE": "on-success",
    }
    first, main, post = _main_then_post(tmp_path / "1", inputs, job_status="failure")
    name = first["namespace"]
    assert first["reused"] == "false"
    assert f"Namespace {name} (new for key pr-11)" in main
    assert "delete is on-success and the job failed: leaving namespace" in post
    assert (tmp_path / "1" / "nsprov-diagnostics" / f"{name}.txt").exists(), "still reported"
    assert namespace_status(core, name) == "active"

    second, main, post = _main_then_post(tmp_path / "2", inputs, job_status="success")
    assert second["namespace"] == name
    assert second["reused"] == "true"
    assert f"Namespace {name} (reused for key pr-11)" in main
    assert f"Namespace {name} is marked for deletion." in post
    assert namespace_status(core, name) in ("deleting", "gone")


def test_mode_delete_ends_only_the_callers_namespace_for_the_key(
    service: RunningService, core: client.CoreV1Api, tmp_path: Path
) -> None:
    created, _, post = _main_then_post(
        tmp_path / "create",
        {"INPUT_URL": service.url, "INPUT_TOKEN": service.tokens["alice"], "INPUT_KEY": "pr-12"},
    )
    name = created["namespace"]
    assert "delete is never: leaving namespace" in post
    assert "mode: delete with key pr-12 ends it" in post
    assert namespace_status(core, name) == "active"

    def delete_as(owner: str, where: Path) -> tuple[dict[str, str], str]:
        outputs, main, post = _main_then_post(
            where,
            {
                "INPUT_URL": service.url,
                "INPUT_TOKEN": service.tokens[owner],
                "INPUT_KEY": "pr-12",
                "INPUT_MODE": "delete",
            },
        )
        assert "Nothing to clean up" in post
        return outputs, main

    outputs, main = delete_as("bob", tmp_path / "bob")
    assert outputs["namespace"] == ""
    assert "No namespace for key pr-12: nothing to delete." in main
    assert namespace_status(core, name) == "active", "bob's pr-12 is not alice's"

    outputs, main = delete_as("alice", tmp_path / "alice")
    assert outputs["namespace"] == name
    assert f"Namespace {name} (key pr-12) is marked for deletion." in main
    _gone_within_a_minute(core, name)


def test_mode_delete_without_a_key_fails_before_any_request(
    service: RunningService, tmp_path: Path
) -> None:
    env = {
        "PATH": os.environ["PATH"],
        **_runner_files(tmp_path),
        "INPUT_URL": service.url,
        "INPUT_TOKEN": service.tokens["alice"],
        "INPUT_MODE": "delete",
    }
    main = _step("main.js", env)
    assert main.returncode == 1
    assert "::error::mode: delete needs key" in main.stdout


def test_post_deletes_by_key_when_main_recorded_no_namespace(
    service: RunningService, core: client.CoreV1Api, tmp_path: Path
) -> None:
    """Main cancelled mid-POST with a key and delete: always: post ends the key's namespace."""
    with httpx.Client(base_url=service.url) as http:
        created = http.post(
            "/api/v1/namespaces", params={"key": "pr-13"}, headers=service.auth("alice")
        )
    assert created.status_code == 201, created.text
    name = created.headers["x-namespace"]
    env = {
        "PATH": os.environ["PATH"],
        **_runner_files(tmp_path),
        "INPUT_URL": service.url,
        "INPUT_TOKEN": service.tokens["alice"],
        "INPUT_KEY": "pr-13",
        "INPUT_DELETE": "always",
        "STATE_key": "pr-13",
    }
    post = _step("post.js", env)
    assert post.returncode == 0, post.stdout + post.stderr
    assert f"Namespace {name} is marked for deletion." in post.stdout
    assert namespace_status(core, name) in ("deleting", "gone")


# ---- examples/preview.yml, as the runner runs it --------------------------------------------

_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
_COMPARISON = re.compile(r"(\S+)\s*(==|!=)\s*'([^']*)'")


def _evaluate(expression: str, context: dict[str, str]) -> str | bool:
    """The few expressions the example uses: a name, or a name compared with a literal.
    Anything else is a KeyError: the example must stay runnable by this test."""
    comparison = _COMPARISON.fullmatch(expression)
    if comparison:
        name, operator, literal = comparison.groups()
        return (context[name] == literal) == (operator == "==")
    return context[expression]


def _substitute(text: str, context: dict[str, str]) -> str:
    return _EXPRESSION.sub(lambda m: str(_evaluate(m[1], context)), text)


class _Job:
    """One job of the workflow on one runner: its steps in order, then the posts in reverse."""

    def __init__(self, cluster: Cluster, workdir: Path, context: dict[str, str]) -> None:
        workdir.mkdir(parents=True)
        self.workdir = workdir
        self.context = dict(context)
        workspace = workdir / "workspace"
        workspace.mkdir()
        path = os.pathsep.join([str(Path(cluster.kubectl).parent), os.environ["PATH"]])
        self.env = {
            "PATH": path,
            "HOME": str(workdir),
            "RUNNER_TEMP": str(workdir),
            "GITHUB_WORKSPACE": str(workspace),
        }
        self.posts: list[dict[str, str]] = []
        self.printed: list[str] = []

    def run(self, steps: list[dict[str, Any]], service_url: str) -> None:
        for number, step in enumerate(steps):
            if step.get("uses", "").startswith("actions/checkout@"):
                continue  # nothing to check out: the deploy step needs no files
            (self.workdir / f"step-{number}").mkdir()
            files = _runner_files(self.workdir / f"step-{number}")
            env = {**self.env, **files}
            if "uses" in step:
                self._action(step, env, service_url)
            else:
                script = _substitute(step["run"], self.context)
                ran = subprocess.run(
                    ["bash", "-e", "-o", "pipefail", "-c", script], env=env,
                    cwd=env["GITHUB_WORKSPACE"], capture_output=True, text=True, timeout=120,
                    check=False,
                )  # fmt: skip
                assert ran.returncode == 0, (step.get("name"), ran.stdout, ran.stderr)
                self.printed.append(ran.stdout)
            self.env.update(parse_file_commands(Path(files["GITHUB_ENV"]).read_text()))
        for post in reversed(self.posts):
            ran = _step("post.js", post)
            assert ran.returncode == 0, ran.stdout + ran.stderr
            assert "::warning::" not in ran.stdout, ran.stdout
            self.printed.append(ran.stdout)

    def _action(self, step: dict[str, Any], env: dict[str, str], service_url: str) -> None:
        assert step["uses"] in ("org/nsprov-action@v1", "./"), step["uses"]
        given = {
            name: _substitute(str(value), self.context) for name, value in step["with"].items()
        }
        assert given.pop("url") == EXAMPLE_URL
        inputs = {f"INPUT_{name.upper()}": value for name, value in given.items()}
        inputs["INPUT_URL"] = service_url
        main = _step("main.js", {**env, **inputs})
        assert main.returncode == 0, main.stdout + main.stderr
        self.printed.append(main.stdout)
        outputs = parse_file_commands(Path(env["GITHUB_OUTPUT"]).read_text())
        for name, value in outputs.items():
            self.context[f"steps.{step.get('id', '')}.outputs.{name}"] = value
        state = parse_file_commands(Path(env["GITHUB_STATE"]).read_text())
        self.posts.append(
            {
                **env,
                **inputs,
                "INPUT_JOB-STATUS": "success",
                **{f"STATE_{k}": v for k, v in state.items()},
            }
        )


def _pull_request_event(
    workflow: dict[str, Any],
    cluster: Cluster,
    service: RunningService,
    workdir: Path,
    action: str,
    sha: str,
) -> dict[str, list[str]]:
    """Run the workflow for one pull_request event; what each job that ran printed."""
    assert action in workflow[True]["pull_request"]["types"]  # YAML 1.1 reads `on` as True
    context = {
        "github.event.action": action,
        "github.event.number": "42",
        "github.event.pull_request.head.sha": sha,
        "secrets.NSPROV_TOKEN": service.tokens["alice"],
    }
    printed = {}
    for name, job in workflow["jobs"].items():
        if not _evaluate(job["if"], context):
            continue
        runner = _Job(cluster, workdir / name, context)
        runner.run(job["steps"], service.url)
        printed[name] = runner.printed
    return printed


def test_the_preview_example_deploys_each_push_into_one_namespace_and_ends_it_on_close(
    service: RunningService, cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    workflow = yaml.safe_load((REPO / "examples" / "preview.yml").read_text())
    assert workflow["concurrency"]["group"] == "preview-${{ github.event.number }}"

    opened = _pull_request_event(workflow, cluster, service, tmp_path / "1", "opened", "a" * 40)
    assert list(opened) == ["deploy"]
    deployed = re.search(
        r"preview of a{40} in (np-[a-z0-9]+) \(reused: false\)", "".join(opened["deploy"])
    )
    assert deployed, opened
    name = deployed[1]
    assert namespace_status(core, name) == "active", "post leaves a keyed namespace"
    assert core.read_namespaced_config_map("preview", name).data == {"commit": "a" * 40}

    pushed = _pull_request_event(
        workflow, cluster, service, tmp_path / "2", "synchronize", "b" * 40
    )
    assert f"preview of {'b' * 40} in {name} (reused: true)" in "".join(pushed["deploy"])
    assert core.read_namespaced_config_map("preview", name).data == {"commit": "b" * 40}
    assert namespace_status(core, name) == "active"

    closed = _pull_request_event(workflow, cluster, service, tmp_path / "3", "closed", "b" * 40)
    assert list(closed) == ["delete"]
    assert f"Namespace {name} (key pr-42) is marked for deletion." in "".join(closed["delete"])
    _gone_within_a_minute(core, name)
