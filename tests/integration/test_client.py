"""The ``nsprov`` client commands, run as a CI job or a person runs them, against the real service.

Each command runs as its own process (the console script, found on PATH like
kubectl) with only the environment a CI system would give it.
"""

from __future__ import annotations

import json
import os
import re
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
    assert table[0].split()[:4] == ["NAME", "STATE", "EXPIRES-AT", "EXPIRES-IN"]
    (row,) = [line.split() for line in table[1:] if line.startswith(f"{name} ")]
    assert row[:3] == [name, "ACTIVE", created["expiresAt"]]
    assert row[3] in ("10m", "9m")
    # bob sees none of alice's namespaces
    bob = {**env, "NSPROV_TOKEN": service.tokens["bob"]}
    bobs = json.loads(nsprov(bob, "list", "-o", "json").stdout)["items"]
    assert [i for i in bobs if i["owner"] != "bob"] == []

    got = yaml.safe_load(nsprov(env, "get", name, "-o", "yaml").stdout)
    assert got["name"] == name
    assert got["owner"] == "alice"

    extended = nsprov(env, "extend", name, "--ttl", "1h", "-o", "json")
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
    assert missing.stderr == f"nsprov: 404 Not Found: namespace {name!r} not found\n"


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


def test_a_service_that_is_down_is_exit_5_and_one_line(cluster: Cluster) -> None:
    env = client_env(cluster, f"http://127.0.0.1:{free_port()}", "t" * 20, NSPROV_TIMEOUT="3s")
    started = time.monotonic()
    listed = nsprov(env, "list")
    assert listed.returncode == EXIT_UNAVAILABLE
    assert time.monotonic() - started < 15
    assert listed.stderr.count("\n") == 1
    assert listed.stderr.startswith("nsprov: GET http://127.0.0.1:")
    assert "gave up after" in listed.stderr
    assert listed.stdout == ""
    ran = nsprov(env, "run", "--", "sh", "-c", "exit 0")
    assert ran.returncode == EXIT_UNAVAILABLE


def test_a_wrong_token_is_exit_3_and_names_no_token(
    cluster: Cluster, service: RunningService
) -> None:
    env = client_env(cluster, service.url, "not-a-real-token-at-all")
    listed = nsprov(env, "list")
    assert listed.returncode == EXIT_AUTH
    assert listed.stderr.startswith("nsprov: 401 Unauthorized")
    assert listed.stderr.count("\n") == 1
    assert "not-a-real-token" not in listed.stderr


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
    assert too_long.stderr == "nsprov: 400 Bad Request: ttl '3h' exceeds the maximum of 2h0m0s\n"


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
    listed = subprocess.run(
        [str(bin_ / "nsprov"), "list", "-o", "json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    # Whatever alice holds now (other tests of this module may keep one), as the API says.
    with service.client() as http:
        expected = http.get("/api/v1/namespaces", headers=service.auth("alice")).json()["items"]
    assert json.loads(listed.stdout) == {"items": expected}
    serve = subprocess.run(
        [str(bin_ / "nsprov"), "serve"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert serve.returncode == 2
    assert serve.stderr.endswith("missing): pip install 'nsprov[server]'\n")
    assert serve.stderr.count("\n") == 1
