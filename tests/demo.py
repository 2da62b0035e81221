"""``make demo``: a working provisioner in one command, used once with curl and kubectl.

Where the provisioner runs: on the cluster of ``$KUBECONFIG`` (or
``~/.kube/config``) when one is configured, else on the control plane of
``make cluster`` if it is up, else on a fresh local control plane that lives
as long as the demo. The provisioner keeps running until Ctrl-C, so you can go
on with curl (the token is in a file; see what the demo prints).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.cluster import build, controlplane

_REPO = Path(__file__).resolve().parents[1]
DEMO_GRANT = "nsprov-demo-grant"


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    print("$ " + shlex.join(argv), flush=True)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    output = (result.stdout + result.stderr).rstrip()
    if output:
        print(output, flush=True)
    return result


def _port(preferred: int) -> int:
    """``preferred`` if it is free (the README's URLs then work as written), else any."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return controlplane.free_port()
    return preferred


@contextlib.contextmanager
def _cluster() -> Iterator[tuple[Path, bool]]:
    """(admin kubeconfig, whether it is a local control plane we may add a grant to)."""
    configured = os.environ.get("KUBECONFIG") or (
        str(Path.home() / ".kube" / "config") if (Path.home() / ".kube/config").exists() else None
    )
    if configured:
        step(f"Using the cluster configured in {configured}")
        yield Path(configured), False
        return
    local = _REPO / ".cluster" / "kubeconfig"
    if local.exists():
        step(f"Using the control plane of `make cluster` ({local})")
        yield local, True
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
        grant = "namespace-provisioner-grant"
        if local:
            _add_demo_grant(kubectl, admin_env)
            grant = DEMO_GRANT

        token = secrets.token_urlsafe(32)
        token_file = workdir / "tokens"
        token_file.write_text(f"demo: {token}\n")
        token_file.chmod(0o600)
        # curl reads the header from a file, so the token never appears in argv.
        header_file = workdir / "auth-header"
        header_file.write_text(f"Authorization: Bearer {token}\n")
        header_file.chmod(0o600)
        port, internal = _port(8080), _port(9090)
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
            step("nsprov keeps running; press Ctrl-C to stop. Try it yourself:")
            print(f"  export KUBECONFIG={kubeconfig}")
            print(f"  curl -H @{header_file} -X POST '{url}/api/v1/namespaces?ttl=10m'")
            print(f"  curl -H @{header_file} {url}/api/v1/namespaces")
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
