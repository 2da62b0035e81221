"""Start and stop a real etcd + kube-apiserver + kube-controller-manager on 127.0.0.1.

Tests of nsprov must see what a real cluster does: RBAC deciding, TokenRequest
minting bound tokens, the namespace controller really emptying and removing a
namespace. This module runs those components from binaries built by
``tests.cluster.build`` in a private temp dir, on free loopback ports, and tears
every process down (by process group) when stopped.

Each component gets its own process group so that ``stop()`` reaches anything it
forked, and ``PR_SET_PDEATHSIG`` so that a launcher killed with SIGKILL does not
leave orphans holding ports.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.cluster import build, pki
from tests.cluster import node as node_module

# The controllers nsprov relies on; the rest of kube-controller-manager stays off.
CONTROLLERS = (
    "namespace",
    "serviceaccount",
    "root-ca-cert-publisher",
    "garbagecollector",
    "clusterrole-aggregation",
    # Fills in a ResourceQuota's status (hard and used): until it has, the API server
    # refuses every create the quota covers, and nsprov has no usage to show.
    "resourcequota",
)
# The in-cluster issuer name stays accepted; tokens are issued by the API server's own URL so
# that its discovery document and keys are reachable: a real OIDC issuer for tests.
IN_CLUSTER_ISSUER = "https://kubernetes.default.svc.cluster.local"
_PR_SET_PDEATHSIG = 1
# What start(audit=True) records: DELETE of namespaces only, at Metadata level (who, what,
# the answer's code), once each, when the answer is complete. Tests count those calls;
# nothing else is written, so the log costs the API server next to nothing.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived", "ResponseStarted"],
    "rules": [
        {
            "level": "Metadata",
            "verbs": ["delete"],
            "resources": [{"group": "", "resources": ["namespaces"]}],
        },
        {"level": "None"},
    ],
}


class ControlPlaneError(RuntimeError):
    """A component failed to start or to become ready."""


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` different free ports: all held open at once while they are picked (two
    calls of ``free_port`` in a row can give the same port, and once did in CI)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Component:
    """One long-running binary of the control plane, restartable with the same flags."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0, *, kill: bool = False) -> None:
        """End the process group: SIGTERM (SIGKILL after ``timeout``), or SIGKILL at once."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # The group may hold children that outlived the leader.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ControlPlane:
    """A running control plane; create it with :func:`start`."""

    workdir: Path
    server: str
    kubeconfig: Path
    pki: pki.Pki
    components: dict[str, Component] = field(default_factory=dict)
    node: node_module.Node | None = None
    audit_log: Path | None = None  # with start(audit=True): the API server's audit log

    @property
    def pids(self) -> list[int]:
        return [c.pid for c in self.components.values() if c.pid is not None]

    def admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET ``path`` on the API server as admin; returns status and body."""
        request = urllib.request.Request(self.server + path)  # noqa: S310 - https only
        try:
            with urllib.request.urlopen(  # noqa: S310 - our own https server
                request, timeout=timeout, context=self.admin_ssl_context()
            ) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop_component(self, name: str, *, kill: bool = False) -> None:
        """Stop one component (as a crash with ``kill``); start_component brings it back."""
        self.components[name].stop(kill=kill)

    def start_component(self, name: str, timeout: float = 60.0) -> None:
        """Start a stopped component again with the same flags and ports."""
        component = self.components[name]
        component.start()
        if name == "kube-apiserver":
            _wait(self, component, "/readyz", timeout)

    def stop(self) -> None:
        """End every process (reverse start order) and remove the temp dir."""
        if self.node is not None:
            self.node.stop()
            self.node = None
        for component in reversed(list(self.components.values())):
            component.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _wait_until(component: Component, ready: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not component.running():
            raise ControlPlaneError(
                f"{component.name} exited before {what} "
                f"(log {component.log_path}):\n{component.log_tail()}"
            )
        with contextlib.suppress(OSError, ssl.SSLError):
            if ready():
                return
        time.sleep(0.1)
    raise ControlPlaneError(
        f"{component.name} not {what} after {timeout:.0f}s "
        f"(log {component.log_path}):\n{component.log_tail()}"
    )


def _wait(plane: ControlPlane, component: Component, path: str, timeout: float) -> None:
    _wait_until(component, lambda: plane.get(path, timeout=2)[0] == 200, f"ready ({path})", timeout)


def _tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def _etcd(bins: build.Binaries, workdir: Path) -> tuple[Component, int]:
    client_port, peer_port = free_ports(2)
    peer = f"http://127.0.0.1:{peer_port}"
    client = f"http://127.0.0.1:{client_port}"
    argv = [
        str(bins.etcd),
        "--name=nsprov-test",
        f"--data-dir={workdir / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=nsprov-test={peer}",
        # A test cluster needs no durability across power loss; fsync dominates on CI disks.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]
    return Component("etcd", argv, workdir / "etcd.log"), client_port


def _apiserver(
    bins: build.Binaries,
    workdir: Path,
    keys: pki.Pki,
    etcd_port: int,
    port: int,
    with_node: bool = False,
    audit_log: Path | None = None,
) -> Component:
    argv = [
        str(bins.kube_apiserver),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={workdir / 'apiserver-certs'}",
        f"--tls-cert-file={keys.serving_cert}",
        f"--tls-private-key-file={keys.serving_key}",
        f"--client-ca-file={keys.ca_cert}",
        "--authorization-mode=RBAC",
        # The first issuer signs (and is what discovery announces); the second is accepted.
        f"--service-account-issuer=https://127.0.0.1:{port}",
        f"--service-account-issuer={IN_CLUSTER_ISSUER}",
        f"--service-account-jwks-uri=https://127.0.0.1:{port}/openid/v1/jwks",
        # Anonymous requests reach the discovery endpoints only where RBAC lets them
        # (system:service-account-issuer-discovery bound to system:unauthenticated).
        "--anonymous-auth=true",
        f"--service-account-key-file={keys.sa_public_key}",
        f"--service-account-signing-key-file={keys.sa_private_key}",
        "--service-cluster-ip-range=10.0.0.0/24",
        "--profiling=false",
        "--v=1",
    ]
    if audit_log is not None:
        policy = workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY, sort_keys=False))
        argv += [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={audit_log}",
            # Each event is written before the API server answers (no batching buffer a
            # SIGKILL could lose), and the file is never rotated or pruned during a run.
            "--audit-log-mode=blocking",
            "--audit-log-format=json",
            "--audit-log-maxsize=0",
        ]
    if with_node:
        # The Node authorizer gives the kubelet exactly its node's objects.
        argv[argv.index("--authorization-mode=RBAC")] = "--authorization-mode=Node,RBAC"
        argv += [
            # The node writes the ``kubernetes`` Service's endpoints itself: the
            # forwarder on its veth, port 6443 (tests/cluster/node.py says why).
            "--endpoint-reconciler-type=none",
            # logs/exec/port-forward: the API server dials the kubelet at the node IP.
            f"--kubelet-client-certificate={keys.admin_cert}",
            f"--kubelet-client-key={keys.admin_key}",
            f"--kubelet-certificate-authority={keys.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
            # As in real clusters: Pod Security, not this flag, decides who runs privileged.
            "--allow-privileged=true",
        ]
    return Component("kube-apiserver", argv, workdir / "kube-apiserver.log")


def _controller_manager(
    bins: build.Binaries, workdir: Path, keys: pki.Pki, with_node: bool = False
) -> Component:
    controllers = CONTROLLERS + (node_module.NODE_CONTROLLERS if with_node else ())
    argv = [
        str(bins.kube_controller_manager),
        f"--kubeconfig={workdir / 'kubeconfig'}",
        f"--controllers={','.join(controllers)}",
        f"--root-ca-file={keys.ca_cert}",
        f"--service-account-private-key-file={keys.sa_private_key}",
        "--leader-elect=false",
        # No serving endpoint: nothing scrapes it, and it would need another port.
        "--secure-port=0",
        "--v=1",
    ]
    return Component("kube-controller-manager", argv, workdir / "kube-controller-manager.log")


def write_admin_kubeconfig(path: Path, server: str, keys: pki.Pki) -> None:
    """Write a self-contained kubeconfig (data embedded) for the admin identity."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "nsprov-test",
                "cluster": {"server": server, "certificate-authority-data": b64(keys.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "nsprov-test-admin",
                "user": {
                    "client-certificate-data": b64(keys.admin_cert),
                    "client-key-data": b64(keys.admin_key),
                },
            }
        ],
        "contexts": [
            {
                "name": "nsprov-test",
                "context": {"cluster": "nsprov-test", "user": "nsprov-test-admin"},
            }
        ],
        "current-context": "nsprov-test",
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)


def _controllers_working(plane: ControlPlane) -> bool:
    # The serviceaccount and root-ca-cert-publisher controllers fill every namespace;
    # seeing both in "default" proves kube-controller-manager is up and acting.
    sa_status, _ = plane.get("/api/v1/namespaces/default/serviceaccounts/default", timeout=2)
    cm_status, _ = plane.get("/api/v1/namespaces/default/configmaps/kube-root-ca.crt", timeout=2)
    return sa_status == 200 and cm_status == 200


def start(timeout: float = 120.0, *, with_node: bool = False, audit: bool = False) -> ControlPlane:
    """Build if needed, start all components, wait until they work, return the plane.

    ``with_node`` adds a real node (tests/cluster/node.py): kubelet, containerd and
    kube-scheduler; :func:`node_module.unavailable` says beforehand whether it can.
    ``audit`` has the API server log every namespace DELETE to ``plane.audit_log``
    (:data:`AUDIT_POLICY`; read it with :func:`audit_events`).
    """
    bins = build.ensure_built()
    if with_node:
        build.ensure_node_built()
    workdir = Path(tempfile.mkdtemp(prefix="nsprov-cluster-"))
    try:
        return _start_in(workdir, bins, timeout, with_node, audit)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _start_in(
    workdir: Path, bins: build.Binaries, timeout: float, with_node: bool = False,
    audit: bool = False,
) -> ControlPlane:  # fmt: skip
    network = node_module.Network.create() if with_node else None
    try:
        return _start_components(workdir, bins, timeout, network, audit)
    except BaseException:
        if network is not None:
            network.remove()
        raise


def _start_components(
    workdir: Path,
    bins: build.Binaries,
    timeout: float,
    network: node_module.Network | None,
    audit: bool = False,
) -> ControlPlane:
    with_node = network is not None
    keys = pki.generate(workdir / "pki", extra_ips=(network.host_ip,) if network else ())
    api_port = free_port()
    server = f"https://127.0.0.1:{api_port}"
    kubeconfig = workdir / "kubeconfig"
    write_admin_kubeconfig(kubeconfig, server, keys)
    plane = ControlPlane(workdir=workdir, server=server, kubeconfig=kubeconfig, pki=keys)
    if audit:
        plane.audit_log = workdir / "audit.log"
    try:
        etcd, etcd_port = _etcd(bins, workdir)
        plane.components["etcd"] = etcd
        etcd.start()
        _wait_until(etcd, lambda: _tcp_open(etcd_port), "listening", timeout)

        apiserver = _apiserver(bins, workdir, keys, etcd_port, api_port, with_node, plane.audit_log)
        plane.components["kube-apiserver"] = apiserver
        apiserver.start()
        _wait(plane, apiserver, "/readyz", timeout)

        manager = _controller_manager(bins, workdir, keys, with_node)
        plane.components["kube-controller-manager"] = manager
        manager.start()
        _wait_until(manager, lambda: _controllers_working(plane), "working", timeout)
        if network is not None:
            plane.node = node_module.start(plane, network, timeout)
    except BaseException:
        plane.stop()
        raise
    return plane


@contextlib.contextmanager
def running(
    timeout: float = 120.0, *, with_node: bool = False, audit: bool = False
) -> Iterator[ControlPlane]:
    """Context manager around :func:`start` / :meth:`ControlPlane.stop`."""
    plane = start(timeout, with_node=with_node, audit=audit)
    try:
        yield plane
    finally:
        plane.stop()


def audit_events(path: Path) -> list[dict[str, Any]]:
    """The events in an audit log (JSON lines; a line cut short by a SIGKILL is skipped)."""
    events = []
    with path.open(errors="replace") as log:
        for line in log:
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
    return events


def describe(plane: ControlPlane) -> str:
    """One JSON line that tells where the control plane is."""
    return json.dumps(
        {"server": plane.server, "kubeconfig": str(plane.kubeconfig), "pids": plane.pids}
    )
