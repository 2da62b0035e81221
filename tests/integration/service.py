"""Run ``nsprov serve`` as a real process against the test cluster.

The service runs exactly as an admin would run it (console script, flags, a
token file), so these tests exercise uvicorn, the lifespan and the real
threadpool rather than an in-process test client.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.controlplane import free_ports
from tests.support import wait_until

OWNERS = ("alice", "bob")


@dataclass
class RunningService:
    url: str
    internal_url: str
    tokens: dict[str, str]
    token_file: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def auth(self, owner: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[owner]}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def start_again(self, timeout: float = 30, *, wait_ready: bool = True) -> None:
        """Start the same service again (same flags, ports and tokens)."""
        self.process = _spawn(self.argv, self.env, self.log_path)
        if wait_ready:
            _wait_ready(self, timeout)

    def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.internal_url}/readyz", timeout=2).status_code == 200
        return False


def _spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )


def _wait_ready(service: RunningService, timeout: float) -> None:
    def ready() -> bool:
        if service.process.poll() is not None:
            raise AssertionError(f"nsprov exited {service.process.returncode}:\n{service.log()}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{service.internal_url}/readyz", timeout=2).status_code == 200
        return False

    wait_until(ready, timeout=timeout, message="nsprov /readyz")


def start_service(
    kubeconfig: Path,
    workdir: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    *,
    ready_timeout: float = 30,
    wait_ready: bool = True,
    owners: Sequence[str] = OWNERS,
) -> RunningService:
    workdir.mkdir(parents=True, exist_ok=True)
    tokens = {owner: secrets.token_urlsafe(24) for owner in owners}
    token_file = workdir / "tokens"
    token_file.write_text("".join(f"{o}: {t}\n" for o, t in tokens.items()))
    token_file.chmod(0o600)
    port, internal = free_ports(2)
    argv = [
        sys.executable,
        "-m",
        "nsprov.cli",
        "serve",
        f"--kubeconfig={kubeconfig}",
        f"--listen=127.0.0.1:{port}",
        f"--listen-internal=127.0.0.1:{internal}",
        *args,
    ]
    full_env = {
        # Not the runner's POD_NAME either (CI in a pod): two replicas would share a Lease
        # identity, and both would lead. A test that wants one passes it in ``env``.
        **{k: v for k, v in os.environ.items() if not k.startswith("NSPROV_") and k != "POD_NAME"},
        "NSPROV_TOKEN_FILE": str(token_file),
        "PYTHONWARNINGS": "error::ResourceWarning",
        **(env or {}),
    }
    log_path = workdir / f"nsprov-{port}.log"
    service = RunningService(
        url=f"http://127.0.0.1:{port}",
        internal_url=f"http://127.0.0.1:{internal}",
        tokens=tokens,
        token_file=token_file,
        log_path=log_path,
        process=_spawn(argv, full_env, log_path),
        argv=argv,
        env=full_env,
    )
    if not wait_ready:
        return service
    try:
        _wait_ready(service, timeout=ready_timeout)
    except BaseException:
        service.stop()
        raise
    return service


@contextlib.contextmanager
def running_service(
    kubeconfig: Path,
    workdir: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    *,
    owners: Sequence[str] = OWNERS,
) -> Iterator[RunningService]:
    service = start_service(kubeconfig, workdir, args, env, owners=owners)
    try:
        yield service
    finally:
        service.stop()


def kubeconfig_from(response: httpx.Response, path: Path) -> Path:
    """Save a create/extend response's kubeconfig (YAML or JSON body) to ``path``."""
    if response.headers["content-type"].startswith("application/json"):
        text = response.json()["kubeconfig"]
    else:
        text = response.text
    path.write_text(text)
    path.chmod(0o600)
    return path


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Assert ``response`` is an RFC 9457 problem with ``status``; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["requestId"] == response.headers["x-request-id"]
    return body


def provision(service: RunningService, ttl: str) -> tuple[str, int]:
    """POST a namespace as alice; its name and expiry (unix seconds)."""
    with service.client() as http:
        response = http.post("/api/v1/namespaces", params={"ttl": ttl}, headers=service.auth())
    assert response.status_code == 201, response.text
    expires = calendar.timegm(time.strptime(response.headers["x-expires-at"], "%Y-%m-%dT%H:%M:%SZ"))
    return response.headers["x-namespace"], expires


def metric(service: RunningService, name: str, *labels: str) -> float | None:
    """The sum of a metric's samples (those whose labels include every one of ``labels``,
    e.g. ``'result="hit"'``), or None when absent or the service is down."""
    try:
        text = httpx.get(f"{service.internal_url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    total = None
    for line in text.splitlines():
        if not (line.startswith(name + " ") or line.startswith(name + "{")):
            continue
        head, _, value = line.rpartition(" ")
        if all(label in head for label in labels):
            total = (total or 0.0) + float(value)
    return total


def namespace_status(core: client.CoreV1Api, name: str) -> str:
    """active, deleting or gone."""
    try:
        namespace = core.read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return "gone"
        raise
    return "deleting" if namespace.metadata.deletion_timestamp else "active"


def wait_expired_line(service: RunningService, name: str, timeout: float = 5) -> str:
    """The one line in which ``service`` deleted ``name`` as expired, once it is written.

    The API server shows the deletion a moment before the controller logs it.
    """
    lines = wait_until(lambda: expired_lines(service, name), timeout=timeout,
                       message=f"expiry of {name} logged")  # fmt: skip
    assert len(lines) == 1, lines
    return lines[0]


def expired_lines(service: RunningService, name: str) -> list[str]:
    """The log lines in which this service deleted ``name`` because it expired."""
    return [
        line
        for line in service.log().splitlines()
        if f"deleted namespace={name} " in line and "reason=expired" in line
    ]
