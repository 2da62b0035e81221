"""``make demo``: a working provisioner in one command, used once with curl, the ``nsprov``
client and kubectl.

Where the provisioner runs: on the control plane of ``make cluster`` if it is up, else on
a fresh local control plane that lives as long as the demo. Never on the cluster of
``$KUBECONFIG`` or ``~/.kube/config``: a newcomer's may be production, and a demo
creates namespaces. Another cluster only when ``NSPROV_DEMO_KUBECONFIG`` names its
kubeconfig, and then the demo says which cluster (server URL, context) before it
writes anything, and adds no grant there: where the grant is missing or empty, it
says how to make one. The provisioner keeps running until Ctrl-C, so you can go on
with curl or nsprov (the token is in a file; see what the demo prints).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import build, controlplane

_REPO = Path(__file__).resolve().parents[1]
DEMO_GRANT = "nsprov-demo-grant"
GRANT = "namespace-provisioner-grant"
EXPLICIT = "NSPROV_DEMO_KUBECONFIG"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(
    argv: list[str], env: dict[str, str] | None = None, *, shown: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv``, printing it (or ``shown``, how a reader would type it) and its output."""
    print("$ " + shlex.join(shown or argv), flush=True)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    output = (result.stdout + result.stderr).rstrip()
    if output:
        print(output, flush=True)
    return result


def _port(preferred: int, taken: int | None = None) -> int:
    """``preferred`` if it is free (the README's URLs then work as written), else any but
    ``taken`` (the other listener's)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return next(p for p in controlplane.free_ports(2) if p != taken)
    return preferred


@dataclass(frozen=True)
class ClusterChoice:
    """Where the demo runs nsprov."""

    kubeconfig: Path | None
    """The admin kubeconfig; None: start a fresh local control plane."""
    local: bool
    """A local control plane, which the demo may add its own grant to."""
    not_used: str | None
    """A kubeconfig the environment configures and the demo leaves alone, to say so."""


def choose_cluster(env: Mapping[str, str], home: Path, repo: Path = _REPO) -> ClusterChoice:
    """The cluster of NSPROV_DEMO_KUBECONFIG if set, else ``make cluster``'s, else a fresh one.

    KUBECONFIG and ~/.kube/config are never chosen, only named (``not_used``): the
    cluster a newcomer's shell points at may be production.
    """
    configured = env.get("KUBECONFIG") or None
    if configured is None and (home / ".kube" / "config").exists():
        configured = str(home / ".kube" / "config")
    explicit = env.get(EXPLICIT)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SystemExit(f"{EXPLICIT}={explicit}: no such file")
        return ClusterChoice(path, local=False, not_used=None)
    local = repo / ".cluster" / "kubeconfig"
    return ClusterChoice(local if local.exists() else None, local=True, not_used=configured)


def describe_cluster(kubeconfig: Path) -> tuple[str, str]:
    """(server URL, context name) of the kubeconfig's current context."""
    config: dict[str, Any] = yaml.safe_load(kubeconfig.read_text()) or {}
    name = config.get("current-context")
    contexts = {c.get("name"): c.get("context") or {} for c in config.get("contexts") or []}
    if not name or name not in contexts:
        raise SystemExit(f"{kubeconfig}: no current context; set one (kubectl config use-context)")
    clusters = {c.get("name"): c.get("cluster") or {} for c in config.get("clusters") or []}
    server = clusters.get(contexts[name].get("cluster"), {}).get("server")
    if not server:
        raise SystemExit(f"{kubeconfig}: context {name!r} names no cluster with a server")
    return str(server), str(name)


def grant_advice(role: dict[str, Any] | None, kubeconfig: Path) -> str | None:
    """What to do about the ClusterRole every namespace's kubeconfig is bound to, if anything.

    None when it grants something. On another cluster the demo adds no grant of its own.
    """
    apply = f"KUBECONFIG={kubeconfig} kubectl apply -f {_REPO / 'deploy/overlay/grant.yaml'}"
    if role is None:
        return (
            f"ClusterRole {GRANT} does not exist on this cluster, and nsprov hands out no "
            f"namespace without it. Make it (an app-deploying start, read it first):\n"
            f"  {apply}\n"
            f"or the empty one of k8s/ (its kubeconfigs can then do nothing):\n"
            f"  KUBECONFIG={kubeconfig} kubectl apply -f {_REPO / 'k8s/grant-clusterrole.yaml'}"
        )
    if not role.get("rules"):
        return (
            f"ClusterRole {GRANT} grants nothing: a namespace's kubeconfig can do nothing in it. "
            f"To let it deploy an app (read the file first):\n  {apply}"
        )
    return None


def _read_grant(kubectl: str, env: dict[str, str]) -> dict[str, Any] | None:
    found = subprocess.run(
        [kubectl, "get", "clusterrole", GRANT, "-o", "json", "--ignore-not-found"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if found.returncode != 0:
        raise SystemExit(f"cannot read ClusterRole {GRANT}: {found.stderr.strip()}")
    if not found.stdout.strip():
        return None
    role: dict[str, Any] = yaml.safe_load(found.stdout)
    return role


@contextlib.contextmanager
def _cluster() -> Iterator[tuple[Path, bool]]:
    """(admin kubeconfig, whether it is a local control plane we may add a grant to)."""
    choice = choose_cluster(os.environ, Path.home())
    if choice.not_used:
        step(f"Not using {choice.not_used}: make demo runs on a local control plane")
        print(f"  (another cluster only with {EXPLICIT}=<its kubeconfig> make demo)")
    if choice.kubeconfig is not None and not choice.local:
        server, context = describe_cluster(choice.kubeconfig)
        step(f"Using the cluster of {EXPLICIT}: server {server}, context {context}")
        print(f"  ({choice.kubeconfig}; the demo creates namespaces there and deletes them)")
        yield choice.kubeconfig, False
        return
    if choice.kubeconfig is not None:
        step(f"Using the control plane of `make cluster` ({choice.kubeconfig})")
        yield choice.kubeconfig, True
        return
    step("No cluster configured: starting a local control plane (etcd, kube-apiserver, ...)")
    started = time.monotonic()
    plane = controlplane.start()
    print(f"ready in {time.monotonic() - started:.1f}s at {plane.server}")
    try:
        yield plane.kubeconfig, True
    finally:
        step("Stopping the local control plane")
        plane.stop()


def _add_demo_grant(kubectl: str, env: dict[str, str]) -> None:
    manifest = f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {DEMO_GRANT}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
"""
    step(f"Creating ClusterRole {DEMO_GRANT} (what each namespace's kubeconfig may do)")
    print(manifest.strip())
    subprocess.run(
        [kubectl, "apply", "-f", "-"],
        input=manifest,
        env=env,
        text=True,
        check=True,
        capture_output=True,
    )


def _nsprov_client() -> str | None:
    """The ``nsprov`` console script of this environment (make install puts it in .venv)."""
    beside = Path(sys.executable).parent / "nsprov"
    if beside.exists():
        return str(beside)
    return shutil.which("nsprov")


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"nsprov exited with {process.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=2) as response,  # noqa: S310 - loopback
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"nsprov not ready after {timeout:.0f}s")


def main() -> int:
    bins = build.ensure_built()
    kubectl = str(bins.kubectl)
    workdir = Path(tempfile.mkdtemp(prefix="nsprov-demo-"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with _cluster() as (admin_kubeconfig, local):
        admin_env = {**os.environ, "KUBECONFIG": str(admin_kubeconfig)}
        grant = GRANT
        if local:
            _add_demo_grant(kubectl, admin_env)
            grant = DEMO_GRANT
        else:
            advice = grant_advice(_read_grant(kubectl, admin_env), admin_kubeconfig)
            if advice is not None:
                step("The grant")
                print(advice)
                if "does not exist" in advice:
                    workdir.rmdir()
                    return 1

        token = secrets.token_urlsafe(32)
        token_file = workdir / "tokens"
        token_file.write_text(f"demo: {token}\n")
        token_file.chmod(0o600)
        # curl reads the header from a file, so the token never appears in argv.
        header_file = workdir / "auth-header"
        header_file.write_text(f"Authorization: Bearer {token}\n")
        header_file.chmod(0o600)
        # The nsprov client reads the token alone from a file (NSPROV_TOKEN_FILE).
        client_token = workdir / "token"
        client_token.write_text(token + "\n")
        client_token.chmod(0o600)
        port = _port(8080)
        internal = _port(9090, taken=port)
        url = f"http://127.0.0.1:{port}"

        step(f"Starting nsprov on {url} (metrics on :{internal})")
        argv = [
            sys.executable, "-m", "nsprov.cli", "serve",
            f"--kubeconfig={admin_kubeconfig}",
            f"--listen=127.0.0.1:{port}",
            f"--listen-internal=127.0.0.1:{internal}",
            f"--cluster-role={grant}",
        ]  # fmt: skip
        print(f"$ NSPROV_TOKEN_FILE={token_file} nsprov {shlex.join(argv[3:])}")
        log_path = workdir / "nsprov.log"
        print(f"  (its log: {log_path})")
        # Its own session: Ctrl-C reaches the demo, which still needs nsprov to clean up.
        with log_path.open("wb") as log:
            service = subprocess.Popen(
                argv,
                env={**os.environ, "NSPROV_TOKEN_FILE": str(token_file)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        namespace = ""
        client_namespace = ""
        nsprov = _nsprov_client()
        client_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("NSPROV_")},
            "NSPROV_URL": url,
            "NSPROV_TOKEN_FILE": str(client_token),
        }
        try:
            _wait_ready(f"http://127.0.0.1:{internal}/readyz", service)
            kubeconfig = workdir / "kubeconfig"
            step("Provisioning a namespace with curl (ttl 30m)")
            created = show(
                [
                    "curl", "--silent", "--show-error", "--fail-with-body",
                    "--header", f"@{header_file}",
                    "--request", "POST", f"{url}/api/v1/namespaces?ttl=30m",
                    "--dump-header", str(workdir / "headers"),
                    "--output", str(kubeconfig),
                ]
            )  # fmt: skip
            if created.returncode != 0:
                print(kubeconfig.read_text() if kubeconfig.exists() else "", file=sys.stderr)
                return 1
            kubeconfig.chmod(0o600)
            headers = (workdir / "headers").read_text().splitlines()
            print("\n".join(h for h in headers if h.lower().startswith("x-")))
            namespace = next(
                h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("x-namespace:")
            )

            tenant_env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
            step("Using the returned kubeconfig with kubectl")
            show([kubectl, "config", "view", "--minify", "-o", "jsonpath={..namespace}"],
                 tenant_env)  # fmt: skip
            print()
            if local:
                show([kubectl, "create", "configmap", "hello", "--from-literal=from=nsprov"],
                     tenant_env)  # fmt: skip
                show([kubectl, "get", "configmaps"], tenant_env)
            show([kubectl, "get", "configmaps", "--namespace", "default"], tenant_env)
            for verb, resource in (("create", "configmaps"), ("create", "pods")):
                show([kubectl, "auth", "can-i", verb, resource], tenant_env)

            step("Listing this token's namespaces")
            show(["curl", "--silent", "--header", f"@{header_file}", f"{url}/api/v1/namespaces"])
            print()
            if nsprov is not None:
                step("The same with the nsprov client (pip install nsprov), as a CI job runs it")
                print(f"$ export NSPROV_URL={url} NSPROV_TOKEN_FILE={client_token}")
                made = show(
                    [nsprov, "create", "--ttl", "30m", "--kubeconfig-out",
                     str(workdir / "kubeconfig-client"), "-o", "name"],
                    client_env,
                    shown=["nsprov", "create", "--ttl", "30m", "--kubeconfig-out",
                           str(workdir / "kubeconfig-client"), "-o", "name"],
                )  # fmt: skip
                if made.returncode == 0:
                    client_namespace = made.stdout.strip()
                show([nsprov, "list"], client_env, shown=["nsprov", "list"])
            step("nsprov keeps running; press Ctrl-C to stop. Try it yourself:")
            print(f"  export KUBECONFIG={kubeconfig}")
            print(f"  curl -H @{header_file} -X POST '{url}/api/v1/namespaces?ttl=10m'")
            print(f"  curl -H @{header_file} {url}/api/v1/namespaces")
            if nsprov is not None:
                print(f"  export NSPROV_URL={url} NSPROV_TOKEN_FILE={client_token}")
                print("  nsprov run --ttl 10m -- kubectl get configmaps")
            print(f"  curl http://127.0.0.1:{internal}/metrics")
            print(f"  tail -f {log_path}")
            with contextlib.suppress(KeyboardInterrupt):
                while not stop.wait(0.5):
                    if service.poll() is not None:
                        print(f"nsprov exited with {service.returncode}:", file=sys.stderr)
                        print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
                        return 1
            return 0
        finally:
            if namespace:
                step(f"Deleting {namespace} through the API")
                show(["curl", "--silent", "--header", f"@{header_file}", "--request", "DELETE",
                      f"{url}/api/v1/namespaces/{namespace}"])  # fmt: skip
                print()
            if client_namespace and nsprov is not None:
                step(f"Deleting {client_namespace} with the client")
                show([nsprov, "delete", client_namespace], client_env,
                     shown=["nsprov", "delete", client_namespace])  # fmt: skip
            step("Stopping nsprov")
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                service.kill()
            for path in workdir.iterdir():
                path.unlink()
            workdir.rmdir()


if __name__ == "__main__":
    sys.exit(main())
