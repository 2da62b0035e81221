"""The ``nsprov`` client commands, run as a CI job or a person runs them, against the real service.

Each command runs as its own process (the console script, found on PATH like
kubectl) with only the environment a CI system would give it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.cluster.controlplane import free_port
from tests.integration.conftest import CONFIGMAP_GRANT, Cluster
from tests.integration.service import RunningService, namespace_status, running_service
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")

EXIT_USAGE, EXIT_AUTH, EXIT_REFUSED, EXIT_UNAVAILABLE = 2, 3, 4, 5
_NAME = re.compile(r"\bnp-[a-z0-9]{10}\b")


@pytest.fixture(scope="module")
def service(cluster: Cluster, grants: None, tmp_path_factory) -> Iterator[RunningService]:
    with running_service(
        cluster.kubeconfig,
        tmp_path_factory.mktemp("nsprov"),
        [f"--cluster-role={CONFIGMAP_GRANT}", "--max-ttl=2h"],
    ) as running:
        yield running


def client_env(
    cluster: Cluster, url: str, token: str | None = None, **extra: str
) -> dict[str, str]:
    """What a CI job has: PATH (nsprov and kubectl on it), HOME, the URL and a token."""
    path = os.pathsep.join(
        [str(Path(cluster.kubectl).parent), str(Path(sys.executable).parent), os.environ["PATH"]]
    )
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), "NSPROV_URL": url}
    if token is not None:
        env["NSPROV_TOKEN"] = token
    return {**env, **extra}


def nsprov(
    env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsprov", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip


@pytest.fixture
def env(cluster: Cluster, service: RunningService) -> dict[str, str]:
    return client_env(cluster, service.url, service.tokens["alice"])


def test_create_writes_a_private_kubeconfig_that_kubectl_uses(
    env: dict[str, str], cluster: Cluster, tmp_path: Path
) -> None:
    created = nsprov(
        env, "create", "--ttl=10m", "-o", "name", "--kubeconfig-out", "kc", cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr
    name = created.stdout.strip()
    assert name.startswith("np-")
    kubeconfig = tmp_path / "kc"
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    used = subprocess.run(
        [cluster.kubectl, "create", "configmap", "from-client", "--from-literal=a=b"],
        env={**env, "KUBECONFIG": str(kubeconfig)}, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert used.returncode == 0, used.stderr
    assert "configmap/from-client created" in used.stdout

    to_stdout = nsprov(env, "create")
    assert to_stdout.returncode == 0, to_stdout.stderr
    config = yaml.safe_load(to_stdout.stdout)
    assert config["contexts"][0]["context"]["namespace"].startswith("np-")
    assert to_stdout.stderr == ""


def test_list_get_extend_and_delete_wait(
    env: dict[str, str], core: client.CoreV1Api, service: RunningService
) -> None:
    created = json.loads(nsprov(env, "create", "--ttl=10m", "-o", "json").stdout)
    name = created["namespace"]
    assert created["kubeconfig"].startswith("apiVersion") or "clusters" in created["kubeconfig"]

    listed = nsprov(env, "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    # Namespaces of the tests before may still be being deleted: listed, but not ACTIVE.
    items = json.loads(listed.stdout)["items"]
    assert [i["name"] for i in items if i["state"] == "ACTIVE"] == [name]
    table = nsprov(env, "list").stdout.splitlines()
    # DELETING-SINCE follows when an earlier test's namespace is still being deleted.
    assert table[0].split()[:6] == ["NAME", "STATE", "OWNER", "AGE", "EXPIRES-AT", "EXPIRES-IN"]
    (row,) = [line.split() for line in table[1:] if line.startswith(f"{name} ")]
    assert row[:3] == [name, "ACTIVE", "alice"]
    assert re.fullmatch(r"\d+s", row[3])  # AGE: made seconds ago
    assert row[4:6] in ([created["expiresAt"], "10m"], [created["expiresAt"], "9m"])
    # bob sees none of alice's namespaces
    bob = {**env, "NSPROV_TOKEN": service.tokens["bob"]}
    bobs = json.loads(nsprov(bob, "list", "-o", "json").stdout)["items"]
    assert [i for i in bobs if i["owner"] != "bob"] == []

    got = yaml.safe_load(nsprov(env, "get", name, "-o", "yaml").stdout)
    assert got["name"] == name
    assert got["owner"] == "alice"

    extended = nsprov(env, "extend", name, "--ttl", "0.05d", "-o", "json")  # 72m: days work
    assert extended.returncode == 0, extended.stderr
    assert json.loads(extended.stdout)["expiresAt"] > created["expiresAt"]
    assert (
        json.loads(nsprov(env, "get", name, "-o", "json").stdout)["expiresAt"]
        == (json.loads(extended.stdout)["expiresAt"])
    )

    by_bob = nsprov(bob, "delete", name)
    assert by_bob.returncode == EXIT_REFUSED
    assert namespace_status(core, name) == "active"

    deleted = nsprov(env, "delete", name, "--wait")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.split()[-2:] == [name, "DELETED"]
    assert namespace_status(core, name) == "gone"

    missing = nsprov(env, "get", name)
    assert missing.returncode == EXIT_REFUSED
    assert re.fullmatch(
        rf"nsprov: GET {env['NSPROV_URL']}/api/v1/namespaces/{name}: 404 Not Found: "
        rf"namespace '{name}' not found \(request id ([0-9a-f]{{16}})\)\n",
        missing.stderr,
    )
    gone = nsprov(env, "delete", name)
    assert gone.returncode == EXIT_REFUSED
    ignored = nsprov(env, "delete", name, "--ignore-not-found")
    assert ignored.returncode == 0, ignored.stderr
    assert ignored.stdout.split()[-2:] == [name, "NOT_FOUND"]


def test_run_exits_with_the_command_code_and_deletes_the_namespace(
    env: dict[str, str], core: client.CoreV1Api, tmp_path: Path
) -> None:
    seen = tmp_path / "seen"
    script = (
        f'echo "$NSPROV_NAMESPACE $KUBECONFIG" > {seen}; env; kubectl create configmap x && exit 3'
    )
    ran = nsprov(env, "run", "--ttl=10m", "--", "sh", "-c", script)
    assert ran.returncode == 3, ran.stderr
    assert "configmap/x created" in ran.stdout
    # CMD (code under test) gets its namespace's kubeconfig, never nsprov's token.
    cmd_environment = dict(line.split("=", 1) for line in ran.stdout.splitlines() if "=" in line)
    assert env["NSPROV_TOKEN"] not in ran.stdout
    assert "NSPROV_TOKEN" not in cmd_environment
    assert cmd_environment["NSPROV_URL"] == env["NSPROV_URL"]
    name, kubeconfig = seen.read_text().split()
    assert cmd_environment["NSPROV_NAMESPACE"] == name
    assert not Path(kubeconfig).exists()
    assert not Path(kubeconfig).parent.exists()
    assert namespace_status(core, name) in ("deleting", "gone")
    assert ran.stderr.splitlines()[-1] == f"nsprov: namespace {name} is being deleted"
    wait_until(lambda: namespace_status(core, name) == "gone", timeout=60, message=f"{name} gone")


def test_run_of_a_missing_command_is_127_and_still_deletes(
    env: dict[str, str], core: client.CoreV1Api
) -> None:
    ran = nsprov(env, "run", "--", "no-such-command-for-nsprov")
    assert ran.returncode == 127
    name = _NAME.search(ran.stderr).group(0)  # type: ignore[union-attr]
    assert "command not found" in ran.stderr
    assert namespace_status(core, name) in ("deleting", "gone")


def test_run_without_dashes_and_keep(env: dict[str, str], core: client.CoreV1Api) -> None:
    ran = nsprov(env, "run", "--keep", "kubectl", "get", "configmaps", "-o", "name")
    assert ran.returncode == 0, ran.stderr
    kept = [line for line in ran.stderr.splitlines() if "kept namespace" in line]
    assert len(kept) == 1
    name = kept[0].split("kept namespace ")[1].split()[0]
    assert namespace_status(core, name) == "active"
    kubeconfig = Path(kept[0].rsplit("kubeconfig: ", 1)[1])
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    assert stat.S_IMODE(kubeconfig.parent.stat().st_mode) == 0o700
    kubeconfig.unlink()
    kubeconfig.parent.rmdir()


_WAITER = textwrap.dedent(
    """
    import os, signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with open(sys.argv[1], "w") as out:
        out.write(os.environ["NSPROV_NAMESPACE"] + " " + os.environ["KUBECONFIG"])
    time.sleep(600)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_stopped_by_a_signal_still_deletes(
    env: dict[str, str], core: client.CoreV1Api, tmp_path: Path, signum: int
) -> None:
    seen = tmp_path / "seen"
    # A session of its own: no controlling terminal, as under a CI runner.
    process = subprocess.Popen(
        ["nsprov", "run", "--", sys.executable, "-c", _WAITER, str(seen)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: seen.exists() and seen.read_text(), timeout=60, message="CMD started")
        name, kubeconfig = seen.read_text().split()
        assert namespace_status(core, name) == "active"
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signum, stderr
    assert "warning" not in stderr
    assert not Path(kubeconfig).exists()
    assert namespace_status(core, name) in ("deleting", "gone")


# Waits in sigtimedwait, so it takes the terminal's SIGINT the moment it arrives; a copy
# nsprov sent afterwards would be a second signal, not merged into the first.
_COUNTER = textwrap.dedent(
    """
    import os, signal, sys
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    with open(sys.argv[1], "w") as out:
        out.write(os.environ["NSPROV_NAMESPACE"])
    got = [signal.sigtimedwait({signal.SIGINT}, 60)]
    got.append(signal.sigtimedwait({signal.SIGINT}, 1.5))
    got = [info for info in got if info is not None]
    with open(sys.argv[2], "w") as out:
        out.write(str(len(got)))
    sys.exit(130 if got else 1)
    """
)


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a terminal")
def test_ctrl_c_at_a_terminal_reaches_cmd_once(
    env: dict[str, str], core: client.CoreV1Api, tmp_path: Path
) -> None:
    """Ctrl-C reaches CMD from the terminal; nsprov must not send it a second SIGINT.

    A second copy would turn a program's graceful first interrupt (pytest's
    teardown, a deploy's rollback) into its forced second one. Two SIGINTs that
    arrive together merge into one, so a nsprov that did forward is caught most
    of the time rather than every time; a correct one always passes.
    """
    seen, count = tmp_path / "seen", tmp_path / "count"
    command = shlex.join(["nsprov", "run", "--", sys.executable, "-c", _COUNTER, str(seen),
                          str(count)])  # fmt: skip
    # script(1) runs the command on a new terminal; ^C written to it is the terminal's SIGINT.
    process = subprocess.Popen(
        ["script", "-qfec", command, "/dev/null"], env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: seen.exists() and seen.read_text(), timeout=60, message="CMD started")
        name = seen.read_text()
        assert process.stdin is not None
        process.stdin.write(b"\x03")
        process.stdin.flush()
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert count.read_text() == "1", output
    assert process.returncode == 130, output
    assert namespace_status(core, name) in ("deleting", "gone")


def test_a_service_that_is_down_is_a_line_per_retry_then_exit_5(cluster: Cluster) -> None:
    """A CI log shows the wrong URL at the first retry, not after two minutes of silence."""
    url = f"http://127.0.0.1:{free_port()}"
    env = client_env(cluster, url, "t" * 20, NSPROV_TIMEOUT="3s")
    started = time.monotonic()
    listed = nsprov(env, "list")
    assert listed.returncode == EXIT_UNAVAILABLE
    assert time.monotonic() - started < 15
    *retries, last = listed.stderr.splitlines()
    assert retries, listed.stderr
    for n, line in enumerate(retries, start=2):
        assert re.fullmatch(
            rf"nsprov: GET {url}/api/v1/namespaces: connection refused; attempt {n} in [\d.]+s",
            line,
        ), line
    assert last.startswith(f"nsprov: GET {url}/api/v1/namespaces: connection refused")
    assert "gave up after" in last
    assert listed.stdout == ""
    ran = nsprov(env, "run", "--", "sh", "-c", "exit 0")
    assert ran.returncode == EXIT_UNAVAILABLE


def test_a_wrong_token_is_exit_3_and_names_no_token(
    cluster: Cluster, service: RunningService
) -> None:
    env = client_env(cluster, service.url, "not-a-real-token-at-all")
    listed = nsprov(env, "list")
    assert listed.returncode == EXIT_AUTH
    assert listed.stderr.startswith(
        f"nsprov: GET {service.url}/api/v1/namespaces: 401 Unauthorized"
    )
    assert listed.stderr.count("\n") == 1
    assert "not-a-real-token" not in listed.stderr
    assert re.search(r"\(request id [0-9a-f]{16}\)\n$", listed.stderr), listed.stderr


def test_https_to_a_plain_http_service_fails_at_once_with_exit_5(
    cluster: Cluster, service: RunningService
) -> None:
    """TLS errors used to be retried for two minutes; the next attempt meets the same server."""
    env = client_env(cluster, service.url.replace("http://", "https://"), "t" * 20)
    started = time.monotonic()
    listed = nsprov(env, "list")
    assert listed.returncode == EXIT_UNAVAILABLE
    assert time.monotonic() - started < 10
    assert listed.stderr.count("\n") == 1
    assert "TLS handshake failed" in listed.stderr
    assert "https:// for a plain-http service?" in listed.stderr


def test_a_full_cap_fails_at_once_and_wait_waits_for_a_free_slot(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    # An owner of its own: the cap counts an owner's namespaces still being deleted, and
    # other tests' "alice" may have one going on this shared control plane.
    owner = f"capped-{secrets.token_hex(4)}"
    with running_service(
        cluster.kubeconfig,
        tmp_path,
        [f"--cluster-role={CONFIGMAP_GRANT}", "--max-namespaces-per-owner=1"],
        owners=(owner,),
    ) as capped:
        env = client_env(cluster, capped.url, capped.tokens[owner])
        first = nsprov(env, "create", "--ttl=10m", "-o", "name")
        assert first.returncode == 0, first.stderr
        holder = first.stdout.strip()

        started = time.monotonic()
        refused = nsprov(env, "run", "--", "true")
        assert refused.returncode == EXIT_REFUSED
        assert time.monotonic() - started < 10
        assert refused.stderr.count("\n") == 1
        assert re.search(
            r": 429 Too Many Namespaces: .*; --wait waits for a free slot "
            r"\(request id [0-9a-f]{16}\)\n$",
            refused.stderr,
        ), refused.stderr

        waiting = subprocess.Popen(
            ["nsprov", "run", "--wait", "--wait-timeout=90s", "--", "true"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            # Its first line is its first wait (bounded: it gives up after 90 s); then the
            # slot is freed.
            assert waiting.stderr is not None
            first_wait = waiting.stderr.readline()
            assert re.search(r"; waiting [\d.]+s for a free slot \(request id", first_wait), (
                first_wait
            )
            assert nsprov(env, "delete", holder, "--wait").returncode == 0
            _, stderr = waiting.communicate(timeout=90)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
        assert waiting.returncode == 0, stderr
        assert re.search(r"nsprov: namespace np-[a-z0-9]{10} is being deleted\n$", stderr), stderr


def test_usage_errors_are_exit_2_before_any_request(
    cluster: Cluster, service: RunningService, core: client.CoreV1Api
) -> None:
    base = client_env(cluster, service.url)
    token = service.tokens["alice"]
    cases = [
        ({}, ["list"], "no token"),
        ({"NSPROV_TOKEN": token, "NSPROV_ID_TOKEN": token}, ["list"], "only one of"),
        ({"NSPROV_TOKEN": token}, ["create", "--ttl=5"], "--ttl: missing unit"),
        ({"NSPROV_TOKEN": token, "NSPROV_URL": "ftp://x"}, ["list"], "http(s) URL"),
        (
            # .invalid never resolves, and 3s bounds the wait if the check ever goes
            {"NSPROV_TOKEN": token, "NSPROV_URL": "http://nsprov.invalid", "NSPROV_TIMEOUT": "3s"},
            ["run", "--", "true"],
            "NSPROV_ALLOW_INSECURE_URL=true",
        ),
        ({"NSPROV_TOKEN": token}, ["run"], "Missing argument"),
        ({"NSPROV_TOKEN": token}, ["extend", "np-0000000000"], "Missing option '--ttl'"),
    ]
    for extra, args, reason in cases:
        result = nsprov({**base, **extra}, *args)
        assert result.returncode == EXIT_USAGE, (args, result.stderr)
        assert reason in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
    assert core.list_namespace(label_selector="nsprov.io/owner").items == []


def test_refusals_are_exit_4_with_the_service_detail(env: dict[str, str]) -> None:
    too_long = nsprov(env, "create", "--ttl=3h")
    assert too_long.returncode == EXIT_REFUSED
    assert re.fullmatch(
        rf"nsprov: POST {env['NSPROV_URL']}/api/v1/namespaces: 400 Bad Request: "
        r"ttl '3h' exceeds the maximum of 2h0m0s \(request id [0-9a-f]{16}\)\n",
        too_long.stderr,
    )
    # The service reads days as the client does.
    days = nsprov(env, "create", "--ttl=1d")
    assert days.returncode == EXIT_REFUSED
    assert "ttl '1d' exceeds the maximum of 2h0m0s" in days.stderr


def test_the_same_idempotency_key_gives_the_same_namespace(
    env: dict[str, str], tmp_path: Path
) -> None:
    first = nsprov(env, "create", "--idempotency-key=job-42", "-o", "name")
    again = nsprov(env, "create", "--idempotency-key=job-42", "-o", "name")
    assert first.returncode == again.returncode == 0
    assert first.stdout == again.stdout


def test_the_token_can_come_from_a_file(
    cluster: Cluster, service: RunningService, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(service.tokens["bob"] + "\n")
    env = client_env(cluster, service.url, NSPROV_TOKEN_FILE=str(token_file))

    def bobs() -> list[object]:
        with service.client() as http:
            return list(http.get("/api/v1/namespaces", headers=service.auth("bob")).json()["items"])

    # The list shows a namespace until it is gone: another test's may still be going.
    wait_until(lambda: not bobs(), timeout=60, message="bob holds no namespace")
    listed = nsprov(env, "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"items": []}


def install_client_only(repo: Path, workdir: Path) -> Path:
    """A fresh virtualenv with ``pip install nsprov`` (no extra) from this checkout; its bin/.

    The source is copied first so the build leaves nothing in the work tree; pip
    takes the dependencies from its cache or the package index.
    """
    source = workdir / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, source / name)
    shutil.copytree(repo / "service", source / "service",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))  # fmt: skip
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(source)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    return venv / "bin"


@pytest.mark.venv
def test_pip_install_nsprov_is_a_client_without_kubernetes(
    service: RunningService, tmp_path: Path
) -> None:
    """About 30 s: builds nsprov and installs it with its dependencies into a new virtualenv."""
    bin_ = install_client_only(Path(__file__).resolve().parents[2], tmp_path)
    python = str(bin_ / "python")
    for module in ("kubernetes", "starlette", "uvicorn", "prometheus_client"):
        found = subprocess.run(
            [python, "-c", f"import importlib.util as u; print(u.find_spec({module!r}) is None)"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        assert found.stdout.strip() == "True", f"{module} is installed"
    env = {"PATH": str(bin_), "NSPROV_URL": service.url, "NSPROV_TOKEN": service.tokens["alice"]}

    def alices() -> list[dict[str, object]]:
        with service.client() as http:
            items = http.get("/api/v1/namespaces", headers=service.auth("alice")).json()["items"]
        return list(items)

    # The list shows a namespace until it is gone: let another test's deletion finish first,
    # or the two lists below may straddle its end.
    wait_until(lambda: all(i["state"] != "MARKED_FOR_DELETION" for i in alices()), timeout=60,
               message="alice's namespaces being deleted are gone")  # fmt: skip
    listed = subprocess.run(
        [str(bin_ / "nsprov"), "list", "-o", "json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    # Whatever alice holds now (other tests of this module may keep one), as the API says.
    assert json.loads(listed.stdout) == {"items": alices()}
    serve = subprocess.run(
        [str(bin_ / "nsprov"), "serve"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert serve.returncode == 2
    assert serve.stderr.endswith("missing): pip install 'nsprov[server]'\n")
    assert serve.stderr.count("\n") == 1


DIAGNOSTICS_GRANT = "nsprov-test-diagnostics"

_FAILING_JOB = textwrap.dedent(
    """
    cat <<YAML | kubectl create -f - >/dev/null
    apiVersion: v1
    kind: Pod
    metadata: {name: web}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: app
          image: registry.invalid/app:1
          env: [{name: PASSWORD, value: hunter2-not-in-any-report}]
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
    ---
    apiVersion: v1
    kind: Event
    metadata: {name: web.second}
    involvedObject: {kind: Pod, name: web, namespace: $NSPROV_NAMESPACE}
    reason: SecondThing
    message: happened second
    type: Warning
    firstTimestamp: "2030-01-01T00:00:09Z"
    lastTimestamp: "2030-01-01T00:00:09Z"
    ---
    apiVersion: v1
    kind: Event
    metadata: {name: web.first}
    involvedObject: {kind: Pod, name: web, namespace: $NSPROV_NAMESPACE}
    reason: FirstThing
    message: happened first
    type: Normal
    firstTimestamp: "2030-01-01T00:00:01Z"
    lastTimestamp: "2030-01-01T00:00:01Z"
    YAML
    exit 3
    """
)


@pytest.fixture(scope="module")
def diagnosable(cluster: Cluster, grants: None, tmp_path_factory) -> Iterator[RunningService]:
    """A service whose grant lets a job make pods and events and read them back."""
    rbac = client.RbacAuthorizationV1Api(cluster.api)
    rbac.create_cluster_role(
        client.V1ClusterRole(
            metadata=client.V1ObjectMeta(name=DIAGNOSTICS_GRANT),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["pods", "events"], verbs=["get", "list", "create"]
                ),
                client.V1PolicyRule(api_groups=[""], resources=["pods/log"], verbs=["get"]),
            ],
        )
    )
    try:
        with running_service(
            cluster.kubeconfig,
            tmp_path_factory.mktemp("diagnosable"),
            [f"--cluster-role={DIAGNOSTICS_GRANT}", "--max-ttl=2h"],
        ) as running:
            yield running
    finally:
        rbac.delete_cluster_role(DIAGNOSTICS_GRANT)


def test_diagnostics_of_a_failed_job_before_its_namespace_goes(
    cluster: Cluster, diagnosable: RunningService, core: client.CoreV1Api, tmp_path: Path
) -> None:
    env = client_env(cluster, diagnosable.url, diagnosable.tokens["alice"], GITHUB_ACTIONS="true")
    ran = nsprov(
        env, "run", "--diagnostics=on-failure", "--", "sh", "-c", _FAILING_JOB, cwd=tmp_path
    )
    assert ran.returncode == 3, ran.stderr
    name = _NAME.search(ran.stderr).group(0)  # type: ignore[union-attr]
    log = ran.stderr.splitlines()
    start = log.index(f"::group::nsprov diagnostics: {name}")
    assert log[start + 1].startswith("::stop-commands::")
    end = log.index("::endgroup::")
    report = (tmp_path / "nsprov-diagnostics" / f"{name}.txt").read_text()
    assert log[start + 2 : end - 1] == report.splitlines()
    assert report.startswith(f"nsprov diagnostics: namespace {name} at ")
    assert "(CMD exited 3)" in report.splitlines()[0]
    # Events by time, not by name or creation; the pod (no node here) stays Pending.
    assert report.index("FirstThing  pod/web: happened first") < report.index(
        "SecondThing  pod/web: happened second"
    )
    assert "pod/web: phase Pending" in report
    assert "hunter2" not in ran.stderr + report
    assert log[-1] == f"nsprov: namespace {name} is being deleted"
    assert log.index(f"nsprov: diagnostics written to nsprov-diagnostics/{name}.txt") > end
    assert namespace_status(core, name) in ("deleting", "gone")

    passed = nsprov(env, "run", "--diagnostics=on-failure", "--", "true", cwd=tmp_path)
    assert passed.returncode == 0
    assert "::group::" not in passed.stderr


def test_keep_on_failure_extends_the_namespace_and_says_until_when(
    cluster: Cluster, diagnosable: RunningService, core: client.CoreV1Api, tmp_path: Path
) -> None:
    summary = tmp_path / "summary.md"
    env = client_env(
        cluster, diagnosable.url, diagnosable.tokens["alice"], GITHUB_STEP_SUMMARY=str(summary)
    )
    ran = nsprov(env, "run", "--ttl=10m", "--keep-on-failure=0.05d", "--", "sh", "-c", "exit 2")
    assert ran.returncode == 2, ran.stderr
    kept = ran.stderr.splitlines()[-1]
    match = re.fullmatch(
        r"nsprov: CMD failed \(exit 2\): kept namespace (np-[a-z0-9]{10}) for a look until "
        r"(\S+Z); kubeconfig: (\S+); `nsprov delete np-[a-z0-9]{10}` ends it",
        kept,
    )
    assert match, kept
    name, until, kubeconfig = match.groups()
    assert namespace_status(core, name) == "active"
    got = json.loads(nsprov(env, "get", name, "-o", "json").stdout)
    assert got["expiresAt"] == until
    left = time.mktime(time.strptime(until, "%Y-%m-%dT%H:%M:%SZ")) - time.mktime(time.gmtime())
    assert 60 * 60 < left <= 72 * 60 + 5  # 0.05d = 72m, not the 10m it was made with
    assert f"namespace `{name}` kept until {until}" in summary.read_text()
    # The kept kubeconfig works: the extension's fresh token, the namespace still there.
    listed = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "get", "pods", "-o", "name"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    Path(kubeconfig).unlink()
    Path(kubeconfig).parent.rmdir()
    assert nsprov(env, "delete", name, "--wait").returncode == 0
