"""The GitHub Action's main and post steps, run as the runner would, against the real service."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import CONFIGMAP_GRANT, Cluster, live_managed_namespaces
from tests.integration.service import RunningService, namespace_status, running_service
from tests.integration.test_oidc import github_claims
from tests.oidc_issuer import LoopbackIssuer
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


class AnswerSwallowingProxy:
    """Forwards requests to the service; the answer to a POST never reaches the client.

    It stands for a create answer lost on the way back (a proxy timeout, a
    cancelled runner): the service has made the namespace, the client never
    learns its name. Other methods pass through, as they would for post.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.created = threading.Event()  # the service answered a POST (and it was swallowed)
        self.created_name = ""
        self._release = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> httpx.Response:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                keep = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                with httpx.Client(base_url=proxy.upstream, timeout=60) as http:
                    return http.request(self.command, self.path, headers=keep, content=body)

            def do_POST(self) -> None:
                response = self._forward()
                proxy.created_name = response.headers.get("x-namespace", "")
                proxy.created.set()
                proxy._release.wait(timeout=60)
                self.close_connection = True  # and no answer at all

            def _pass_through(self) -> None:
                response = self._forward()
                self.send_response(response.status_code)
                self.send_header("Content-Type", response.headers.get("content-type", ""))
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            do_GET = do_DELETE = _pass_through

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


_HOP_HEADERS = {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}


def _runner_files(tmp_path: Path) -> dict[str, str]:
    """RUNNER_TEMP and empty GITHUB_OUTPUT/ENV/STATE files, as the runner sets them."""
    files = {
        name: tmp_path / name.lower() for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_STATE")
    }
    for path in files.values():
        path.touch()
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    return {"RUNNER_TEMP": str(runner_temp), **{name: str(path) for name, path in files.items()}}


def test_post_deletes_by_idempotency_key_when_main_died_before_the_answer(
    service: RunningService, core: client.CoreV1Api, tmp_path: Path
) -> None:
    proxy = AnswerSwallowingProxy(service.url)
    try:
        env = {
            "PATH": os.environ["PATH"],
            **_runner_files(tmp_path),
            "INPUT_URL": proxy.url,
            "INPUT_TOKEN": service.tokens["alice"],
            "INPUT_TTL": "15m",
            # One long attempt: main is still waiting for the answer when it is killed.
            "NSPROV_ACTION_ATTEMPT_TIMEOUT_MS": "60000",
        }
        main = subprocess.Popen(
            ["node", str(ACTION / "main.js")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proxy.created.wait(timeout=60), "the POST never reached the service"
        finally:
            main.send_signal(signal.SIGKILL)  # the runner's last resort after SIGINT, SIGTERM
            out, err = main.communicate(timeout=30)
        assert main.returncode == -signal.SIGKILL, out + err

        name = proxy.created_name
        assert name, "the service created a namespace"
        assert namespace_status(core, name) == "active"
        state = parse_file_commands(Path(env["GITHUB_STATE"]).read_text())
        assert set(state) == {"idempotency_key"}, "main never learnt the name, only the key"

        post = _step("post.js", {**env, **{f"STATE_{k}": v for k, v in state.items()}})
        assert post.returncode == 0, post.stdout + post.stderr
        assert f"Found namespace {name} by its Idempotency-Key" in post.stdout
        assert "::warning::" not in post.stdout
        assert namespace_status(core, name) in ("deleting", "gone")
    finally:
        proxy.close()


def test_the_key_finds_nothing_for_another_owner(
    service: RunningService, core: client.CoreV1Api, tmp_path: Path
) -> None:
    """Post with bob's token and alice's key (a shared key, a copied state) deletes nothing."""
    key = "shared-key-1"
    with service.client() as http:
        created = http.post(
            "/api/v1/namespaces", headers={**service.auth("alice"), "Idempotency-Key": key}
        )
    assert created.status_code == 201, created.text
    name = created.headers["x-namespace"]
    env = {
        "PATH": os.environ["PATH"],
        **_runner_files(tmp_path),
        "INPUT_URL": service.url,
        "INPUT_TOKEN": service.tokens["bob"],
        "STATE_idempotency_key": key,
    }
    post = _step("post.js", env)
    assert post.returncode == 0, post.stdout + post.stderr
    assert "no live namespace for this Idempotency-Key: nothing to delete" in post.stdout
    assert namespace_status(core, name) == "active"


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


# ---- keyless: the job's OIDC ID token instead of a secret -----------------------------------


@pytest.fixture(scope="module")
def github_issuer() -> Iterator[LoopbackIssuer]:
    """Stands in for GitHub's token service: discovery, keys and the runner's ID-token endpoint."""
    with LoopbackIssuer() as issuer:
        issuer.id_token_claims = github_claims("acme/web-app")
        yield issuer


@pytest.fixture(scope="module")
def keyless_service(
    cluster: Cluster, grants: None, github_issuer: LoopbackIssuer, tmp_path_factory
) -> Iterator[RunningService]:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    workdir = tmp_path_factory.mktemp("nsprov-keyless")
    policy = workdir / "policy.yaml"
    policy.write_text(
        f"""
issuers:
  - {{name: github, issuer: "{github_issuer.url}", audience: nsprov,
      caFile: "{github_issuer.ca_file}"}}
tenants:
  - name: web
    match:
      issuer: github
      claims: {{repository_owner: acme, repository: "acme/web-*", ref: refs/heads/main}}
    owner: "github:{{repository}}"
"""
    )
    args = [f"--cluster-role={CONFIGMAP_GRANT}", f"--policy-file={policy}", "--controller=false"]
    with running_service(cluster.kubeconfig, workdir, args) as running:
        yield running


def test_keyless_main_and_post_use_the_jobs_id_tokens(
    keyless_service: RunningService,
    github_issuer: LoopbackIssuer,
    cluster: Cluster,
    core: client.CoreV1Api,
    tmp_path: Path,
) -> None:
    """No `token` input: main and post each ask the runner's endpoint for an ID token."""
    github_issuer.token_requests.clear()
    base = {
        "PATH": os.environ["PATH"],
        **_runner_files(tmp_path),
        "INPUT_URL": keyless_service.url,
        "INPUT_TTL": "15m",
        "ACTIONS_ID_TOKEN_REQUEST_URL": github_issuer.token_url,
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": github_issuer.request_token,
        # The loopback issuer's CA; GitHub's endpoint has a public certificate.
        "NODE_EXTRA_CA_CERTS": str(github_issuer.ca_file),
    }
    main = _step("main.js", base)
    assert main.returncode == 0, main.stdout + main.stderr
    assert github_issuer.token_requests == ["nsprov"], "one ID token, for audience nsprov"
    masked = [line for line in main.stdout.splitlines() if line.startswith("::add-mask::")]
    id_token = next(m.removeprefix("::add-mask::") for m in masked if m.count(".") == 2)
    assert id_token not in main.stdout.replace(f"::add-mask::{id_token}", "")

    outputs = parse_file_commands(Path(base["GITHUB_OUTPUT"]).read_text())
    state = parse_file_commands(Path(base["GITHUB_STATE"]).read_text())
    namespace = outputs["namespace"]
    annotations = core.read_namespace(namespace).metadata.annotations
    assert annotations["nsprov.io/owner"] == "github:acme/web-app"
    assert annotations["nsprov.io/tenant"] == "web"
    assert '"run_id":"4242"' in annotations["nsprov.io/requested-by"].replace(" ", "")
    created = subprocess.run(
        [cluster.kubectl, "--kubeconfig", outputs["kubeconfig"], "create", "configmap", "ok"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr

    post = _step("post.js", {**base, **{f"STATE_{k}": v for k, v in state.items()}})
    assert post.returncode == 0, post.stdout + post.stderr
    assert github_issuer.token_requests == ["nsprov", "nsprov"], "post asked for its own token"
    assert namespace_status(core, namespace) in ("deleting", "gone")


def test_keyless_identity_of_another_repository_is_refused(
    keyless_service: RunningService,
    github_issuer: LoopbackIssuer,
    core: client.CoreV1Api,
    tmp_path: Path,
) -> None:
    """A workflow of a repository no tenant admits gets a one-line 403 and no namespace."""
    github_issuer.id_token_claims = github_claims("evil/web-app")
    try:
        env = {
            "PATH": os.environ["PATH"],
            **_runner_files(tmp_path),
            "INPUT_URL": keyless_service.url,
            "ACTIONS_ID_TOKEN_REQUEST_URL": github_issuer.token_url,
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": github_issuer.request_token,
            "NODE_EXTRA_CA_CERTS": str(github_issuer.ca_file),
        }
        before = live_managed_namespaces(core)
        main = _step("main.js", env)
        assert main.returncode != 0
        assert "no tenant admits" in main.stdout + main.stderr
        assert live_managed_namespaces(core) == before
    finally:
        github_issuer.id_token_claims = github_claims("acme/web-app")


ACTION_DIAGNOSTICS_GRANT = "nsprov-test-action-diagnostics"

_PENDING_POD = """
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: app
      image: registry.invalid/app:1
      env: [{name: PASSWORD, value: hunter2-not-in-any-report}]
      securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
"""


def test_a_failed_jobs_post_reports_then_keeps_the_namespace(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    """diagnostics (default on-failure) with the job's kubeconfig against the real API server
    (its own CA), then keep-on-failure's PATCH to the real service instead of the delete."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    rules = [
        client.V1PolicyRule(api_groups=[""], resources=["pods", "events"],
                            verbs=["get", "list", "create"]),
        client.V1PolicyRule(api_groups=[""], resources=["pods/log"], verbs=["get"]),
    ]  # fmt: skip
    rbac.create_cluster_role(
        client.V1ClusterRole(
            metadata=client.V1ObjectMeta(name=ACTION_DIAGNOSTICS_GRANT), rules=rules
        )
    )
    try:
        with running_service(
            cluster.kubeconfig, tmp_path / "service",
            [f"--cluster-role={ACTION_DIAGNOSTICS_GRANT}", "--max-ttl=2h"],
        ) as service:  # fmt: skip
            token = service.tokens["alice"]
            summary = tmp_path / "summary.md"
            base = {
                **_runner_files(tmp_path),
                "PATH": os.environ["PATH"],
                "GITHUB_WORKSPACE": str(tmp_path),
                "INPUT_URL": service.url,
                "INPUT_TOKEN": token,
                "INPUT_TTL": "10m",
                "INPUT_KEEP-ON-FAILURE": "0.05d",
            }
            main = _step("main.js", base)
            assert main.returncode == 0, main.stdout + main.stderr
            outputs = parse_file_commands(Path(base["GITHUB_OUTPUT"]).read_text())
            namespace = outputs["namespace"]
            made = subprocess.run(
                [cluster.kubectl, "create", "-f", "-"], input=_PENDING_POD,
                env={**os.environ, "KUBECONFIG": outputs["kubeconfig"]},
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert made.returncode == 0, made.stderr

            state = parse_file_commands(Path(base["GITHUB_STATE"]).read_text())
            post = _step(
                "post.js",
                {
                    **base,
                    **{f"STATE_{k}": v for k, v in state.items()},
                    "INPUT_JOB-STATUS": "failure",
                    "GITHUB_STEP_SUMMARY": str(summary),
                },
            )
            assert post.returncode == 0, post.stdout + post.stderr
            lines = post.stdout.splitlines()
            start = lines.index(f"::group::nsprov diagnostics: {namespace}")
            end = lines.index("::endgroup::")
            report = (tmp_path / "nsprov-diagnostics" / f"{namespace}.txt").read_text()
            assert lines[start + 2 : end - 1] == report.splitlines()
            assert "pod/web: phase Pending" in report
            assert "cannot list" not in report  # the grant allows it, the real CA was trusted
            assert "hunter2" not in post.stdout + report

            assert "::warning::" not in post.stdout, post.stdout
            assert namespace_status(core, namespace) == "active"
            with service.client() as http:
                got = http.get(f"/api/v1/namespaces/{namespace}", headers=service.auth()).json()
                assert (
                    f"kept namespace {namespace} for a look until {got['expiresAt']}" in post.stdout
                )
                assert (
                    f"namespace `{namespace}` kept until {got['expiresAt']}" in summary.read_text()
                )
                deleted = http.delete(f"/api/v1/namespaces/{namespace}", headers=service.auth())
                assert deleted.status_code == 202
    finally:
        rbac.delete_cluster_role(ACTION_DIAGNOSTICS_GRANT)
