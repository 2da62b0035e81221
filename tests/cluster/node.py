"""An optional real node for the test control plane: kubelet + containerd in a netns.

Pods must really run for the Deployment, the probes, in-cluster configuration and
the namespace finalization path to be tested. The node is:

- a network namespace of its own (``nsprov-node-<hex>``) with a veth pair to the
  host: a kubelet refuses a loopback node IP, and tests may only send traffic to
  loopback or to addresses inside network namespaces they created;
- containerd (Debian's) and runc, running inside that netns, with a private root,
  state dir and socket under the control plane's temp dir, and the CNI bridge,
  host-local and loopback plugins giving pods IPs from a /24 the host routes to
  the node;
- kubelet (same Kubernetes module as the control plane) in the same netns, with a
  client cert for ``system:node:<name>``, a serving cert for the node IP and its
  pods in a cgroup subtree of their own, so that stopping finds every process;
- kube-scheduler on the host;
- the network add-ons of tests/cluster/addons.py: kube-proxy and kube-router's
  NetworkPolicy firewall in the node's netns, CoreDNS as a pod behind ``kube-dns``.

The API server stays on 127.0.0.1 (at a free port); a socat forwarder listens on
the host end of the veth at 6443 for the kubelet and pods, and the node writes that
address as the ``kubernetes`` Service's endpoints, so kube-proxy routes 10.0.0.1:443
there and in-cluster clients work unchanged. 6443, kubeadm's port, and not the API
server's own: a NetworkPolicy's egress rule is judged after kube-proxy's DNAT, so a
policy written for a real cluster (443 or 6443 to reach the API) must hold here too.
This machine's cgroup hierarchy is v1 (``failCgroupV1: false``) and it refuses to
lower ``oom_score_adj`` even for root (``restrict_oom_score_adj``).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from tests.cluster import addons, build, images, pki

if TYPE_CHECKING:
    from tests.cluster.controlplane import Component, ControlPlane

CNI_BIN_DIRS = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
CGROUP_V1 = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
REQUIRED_TOOLS = (
    "ip", "nsenter", "iptables", "ipset", "containerd", "ctr", "runc", "socat", "busybox"
)  # fmt: skip
# Where the kubelet and pods reach the API server: the forwarder on the veth's host end.
API_PORT = 6443
# Controllers a node's workloads need beyond the control plane's own list.
NODE_CONTROLLERS = ("deployment", "replicaset", "endpointslice", "disruption", "podgc")


# Where kubelet, containerd's shims and the CNI plugins write whatever their
# configuration says; children before parents. stop() removes what it finds there
# of this node's, and each directory that did not exist before the node started.
_HOST_DIRS = (
    Path("/run/containerd/s"),
    Path("/run/containerd"),
    Path("/var/lib/cni/results"),
    Path("/var/lib/cni"),
    Path("/var/lib/kubelet/device-plugins"),
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/etc/cni/net.d"),
    Path("/etc/cni"),
)


class NodeError(RuntimeError):
    """The node could not start."""


def unavailable() -> str | None:
    """Why a node cannot start on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "the node needs root (network namespaces, mounts, cgroups)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install containerd runc iptables ipset ...)"
    if not any((d / "bridge").exists() for d in CNI_BIN_DIRS):
        return "no CNI plugins (apt-get install containernetworking-plugins)"
    probe = f"nsprov-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _cni_bin_dir() -> Path:
    return next(d for d in CNI_BIN_DIRS if (d / "bridge").exists())


def _sh(*argv: str, netns: str | None = None) -> str:
    command = list(argv)
    if netns is not None:
        command = ["nsenter", f"--net={NETNS_DIR / netns}", "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NodeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result.stdout


def _taken_networks() -> list[ipaddress.IPv4Network]:
    taken = []
    for line in _sh("ip", "-4", "route", "show", "table", "all").splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast", "unreachable", "blackhole", "prohibit"):
            word = line.split()[1]
        with contextlib.suppress(ValueError):
            if word != "default":
                taken.append(ipaddress.IPv4Network(word, strict=False))
    return taken


def _pick_networks() -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    """A free /30 for the veth and a free /24 for pods, both from private ranges."""
    taken = _taken_networks()
    for _ in range(100):
        link = ipaddress.IPv4Network(
            f"172.31.{secrets.randbelow(256)}.{4 * secrets.randbelow(64)}/30"
        )
        pods = ipaddress.IPv4Network(f"10.244.{secrets.randbelow(256)}.0/24")
        if not any(link.overlaps(t) or pods.overlaps(t) for t in taken):
            return link, pods
    raise NodeError("no free private subnet for the node")


@dataclass
class Network:
    """The node's netns, its veth pair and the routes between host and pods."""

    netns: str
    host_if: str
    host_ip: str
    node_ip: str
    pod_cidr: str

    @classmethod
    def create(cls) -> Network:
        suffix = secrets.token_hex(3)
        link, pods = _pick_networks()
        host_ip, node_ip = (str(a) for a in list(link.hosts())[:2])
        network = cls(f"nsprov-node-{suffix}", f"nsp{suffix}h", host_ip, node_ip, str(pods))
        try:
            network._setup(link.prefixlen)
        except BaseException:
            network.remove()
            raise
        return network

    def _setup(self, prefix: int) -> None:
        node_if = self.host_if[:-1] + "n"
        _sh("ip", "netns", "add", self.netns)
        _sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", node_if)
        _sh("ip", "link", "set", node_if, "netns", self.netns)
        _sh("ip", "addr", "add", f"{self.host_ip}/{prefix}", "dev", self.host_if)
        _sh("ip", "link", "set", self.host_if, "up")
        _sh("ip", "-n", self.netns, "addr", "add", f"{self.node_ip}/{prefix}", "dev", node_if)
        _sh("ip", "-n", self.netns, "link", "set", node_if, "up")
        _sh("ip", "-n", self.netns, "link", "set", "lo", "up")
        _sh("ip", "-n", self.netns, "route", "add", "default", "via", self.host_ip)
        # The host reaches pods through the node, which routes between veth and bridge.
        _sh("ip", "route", "add", self.pod_cidr, "via", self.node_ip, "dev", self.host_if)
        _sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=self.netns)
        # Pods on one bridge talk at layer 2; only with this do their packets cross
        # iptables, where the NetworkPolicy firewall filters them and a Service's
        # reply is translated back (per network namespace since Linux 5.3).
        _sh("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1", netns=self.netns)

    @property
    def api_server(self) -> str:
        """The API server's URL from inside the node: the forwarder on the veth's host end."""
        return f"https://{self.host_ip}:{API_PORT}"

    def inode(self) -> int | None:
        try:
            return (NETNS_DIR / self.netns).stat().st_ino
        except FileNotFoundError:
            return None

    def remove(self) -> None:
        """Delete the route, the veth (both ends go together) and the netns."""
        subprocess.run(["ip", "route", "del", self.pod_cidr], capture_output=True)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)


def _cgroup_dirs(name: str) -> list[Path]:
    """The node's cgroup in every v1 hierarchy (cpu,cpuacct may be one dir behind two names)."""
    found: dict[Path, Path] = {}
    for hierarchy in sorted(CGROUP_V1.iterdir()):
        real = hierarchy.resolve()
        if real.is_dir() and real not in found and (real / "cgroup.procs").exists():
            found[real] = real / name
    return list(found.values())


def _make_cgroups(name: str) -> None:
    for directory in _cgroup_dirs(name):
        directory.mkdir(exist_ok=True)
        if directory.parent.name == "cpuset" or (directory / "cpuset.cpus").exists():
            # A v1 cpuset starts empty and admits no task until given CPUs and memory nodes.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                with contextlib.suppress(FileNotFoundError):
                    (directory / knob).write_text((directory.parent / knob).read_text())


def _cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for directory in _cgroup_dirs(name):
        for procs in directory.rglob("cgroup.procs") if directory.exists() else ():
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def _remove_cgroups(name: str) -> None:
    for directory in _cgroup_dirs(name):
        if not directory.exists():
            continue
        for sub in sorted(
            (p for p in directory.rglob("*") if p.is_dir()),
            key=lambda p: len(p.parts),
            reverse=True,
        ):
            with contextlib.suppress(OSError):
                sub.rmdir()
        with contextlib.suppress(OSError):
            directory.rmdir()


def _pids_in_netns(inode: int) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(entry / "ns" / "net").st_ino == inode:
                    pids.add(int(entry.name))
    return pids


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _unmount_under(directory: Path) -> None:
    """Unmount everything mounted below ``directory`` (secret tmpfs, rootfs overlays, shm)."""
    prefix = str(directory.resolve()) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            mounts.append(point)
    for point in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _netns_mounts_of(pids: set[int]) -> list[Path]:
    """Pod netns bind mounts (``/run/netns/cni-*``) that belong to these processes."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            inodes.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
    found = []
    for path in NETNS_DIR.glob("cni-*") if NETNS_DIR.exists() else ():
        with contextlib.suppress(OSError):
            if path.stat().st_ino in inodes:
                found.append(path)
    return found


def _containerd_config(root: Path, cni_conf: Path) -> str:
    state = root / "state"
    return f"""version = 2
root = "{root / "root"}"
state = "{state}"
disabled_plugins = ["io.containerd.internal.v1.tracing", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{root / "containerd.sock"}"
[ttrpc]
  address = "{root / "containerd.sock.ttrpc"}"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{root / "runc"}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{_cni_bin_dir()}"
    conf_dir = "{cni_conf}"
"""


def _cni_config(name: str, pod_cidr: str, bridge: str, ipam_dir: Path) -> str:
    gateway = str(next(ipaddress.IPv4Network(pod_cidr).hosts()))
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            # Named after the node: the plugins' result cache (/var/lib/cni) is keyed by it.
            "name": name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    # The host routes the pod CIDR to the node: no NAT needed, pod IPs stay real.
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(ipam_dir),
                        "ranges": [[{"subnet": pod_cidr, "gateway": gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


@dataclass
class Node:
    """A running node; create it with :func:`start` (the control plane does)."""

    name: str
    workdir: Path
    network: Network
    cgroup: str
    socket: Path
    components: dict[str, Component] = field(default_factory=dict)
    imported: set[str] = field(default_factory=set)
    stopped: bool = False
    host_dirs_before: set[Path] = field(
        default_factory=lambda: {d for d in _HOST_DIRS if d.exists()}
    )

    @property
    def ip(self) -> str:
        return self.network.node_ip

    def ctr(self, *args: str, timeout: float = 300.0) -> str:
        """Run ``ctr`` against this node's containerd, in the CRI namespace."""
        result = subprocess.run(
            ["ctr", f"--address={self.socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise NodeError(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def import_image(self, image: images.Image) -> None:
        """Make ``image`` available to pods (imagePullPolicy IfNotPresent/Never)."""
        if image.name in self.imported:
            return
        self.ctr("images", "import", str(image.tarball))
        self.imported.add(image.name)

    def stop(self) -> None:
        """Stop kubelet, pods, containerd and the forwarder; remove cgroups, mounts, netns.

        Idempotent: the control plane calls it, and so does an atexit hook in case a
        test run ends without reaching the control plane's stop.
        """
        if self.stopped:
            return
        self.stopped = True
        for name in ("kube-scheduler", "kubelet", "kube-router", "kube-proxy"):
            if name in self.components:
                self.components[name].stop(timeout=10)
        inode = self.network.inode()
        pod_pids = _cgroup_pids(self.cgroup)
        pod_netns = _netns_mounts_of(pod_pids)
        _kill_all(pod_pids)
        containers: list[str] = []
        if self.components.get("containerd") and self.components["containerd"].running():
            with contextlib.suppress(NodeError, subprocess.TimeoutExpired):
                containers = self.ctr("containers", "ls", "-q", timeout=10).split()
        for name in ("containerd", "apiserver-forwarder"):
            if name in self.components:
                self.components[name].stop(timeout=10)
        # Shims daemonize out of containerd's process group but stay in the node's netns.
        if inode is not None:
            _kill_all(_pids_in_netns(inode))
        _wait_gone(lambda: _cgroup_pids(self.cgroup) | (_pids_in_netns(inode) if inode else set()))
        for path in pod_netns:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
            with contextlib.suppress(OSError):
                path.unlink()
        _unmount_under(self.workdir)
        _remove_cgroups(self.cgroup)
        self.network.remove()
        self._clean_host_dirs(containers)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _clean_host_dirs(self, containers: list[str]) -> None:
        leftovers: list[Path] = []
        for container in containers:
            # A shim's socket: /run/containerd/s/<sha256 of address/namespace/id> (1.6).
            key = hashlib.sha256(f"{self.socket}/k8s.io/{container}".encode()).hexdigest()
            leftovers.append(Path("/run/containerd/s") / key)
            leftovers += Path("/var/lib/cni/results").glob(f"*-{container}-*")
        if Path("/var/log/containers").exists():
            workdir = str(self.workdir)
            for link in Path("/var/log/containers").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(link).startswith(workdir):
                        leftovers.append(link)
        if Path("/var/lib/kubelet/device-plugins") not in self.host_dirs_before:
            leftovers.append(Path("/var/lib/kubelet/device-plugins/kubelet.sock"))
        # libcni takes a lock file in its default conf dir, whatever the configured one.
        cni_default = Path("/etc/cni/net.d")
        if cni_default.exists() and [p.name for p in cni_default.iterdir()] == ["cni.lock"]:
            leftovers.append(cni_default / "cni.lock")
        for path in leftovers:
            with contextlib.suppress(OSError):
                path.unlink()
        for directory in _HOST_DIRS:
            if directory not in self.host_dirs_before:
                with contextlib.suppress(OSError):
                    directory.rmdir()


def _wait_gone(pids: Callable[[], set[int]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = pids()
        if not left:
            return
        _kill_all(left)
        time.sleep(0.1)


def _kubelet_kubeconfig(path: Path, server: str, keys: pki.Pki, certs: pki.NodeCerts) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": server, "certificate-authority": str(keys.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "kubelet",
                "user": {
                    "client-certificate": str(certs.client_cert),
                    "client-key": str(certs.client_key),
                },
            }
        ],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "kubelet"}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def _kubelet_config(node: Node, keys: pki.Pki, certs: pki.NodeCerts) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine's hierarchy is cgroup v1, which 1.35+ refuses without this opt-out.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{node.cgroup}",
        "containerRuntimeEndpoint": f"unix://{node.socket}",
        "address": node.ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(certs.serving_cert),
        "tlsPrivateKeyFile": str(certs.serving_key),
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(keys.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": addons.CLUSTER_DOMAIN,
        "clusterDNS": [addons.DNS_SERVICE_IP],
        "resolvConf": "",
        "failSwapOn": False,
        "podCIDR": node.network.pod_cidr,
        "maxPods": 60,
        # Images here are imported, never pulled: garbage collecting one would break tests.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%"},
        "syncFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
        "logging": {"format": "text"},
        "podLogsDir": str(node.workdir / "pod-logs"),
    }  # fmt: skip


def start(plane: ControlPlane, network: Network, timeout: float = 120.0) -> Node:
    """Start containerd, kubelet and kube-scheduler for ``plane`` on ``network``."""
    bins = build.ensure_node_built()
    workdir = plane.workdir / "node"
    workdir.mkdir()
    name = network.netns
    node = Node(
        name=name,
        workdir=workdir,
        network=network,
        cgroup=name,
        socket=workdir / "containerd" / "containerd.sock",
    )
    atexit.register(node.stop)
    try:
        _start(node, plane, bins, timeout)
    except BaseException:
        node.stop()
        raise
    return node


def _start(
    node: Node,
    plane: ControlPlane,
    bins: build.NodeBinaries,
    timeout: float,
) -> None:
    # Imported here: controlplane imports this module to start a node.
    from tests.cluster.controlplane import Component, _wait_until

    network = node.network
    api_port = int(plane.server.rsplit(":", 1)[1])
    in_netns = ["nsenter", f"--net={NETNS_DIR / network.netns}", "--"]

    forwarder = Component(
        "apiserver-forwarder",
        [
            "socat",
            f"TCP-LISTEN:{API_PORT},bind={network.host_ip},fork,reuseaddr",
            f"TCP:127.0.0.1:{api_port}",
        ],
        node.workdir / "forwarder.log",
    )
    node.components[forwarder.name] = forwarder
    forwarder.start()

    root = node.workdir / "containerd"
    cni_conf = node.workdir / "cni"
    root.mkdir()
    cni_conf.mkdir()
    (cni_conf / "10-nsprov.conflist").write_text(
        _cni_config(node.name, network.pod_cidr, "cni0", node.workdir / "cni-ipam")
    )
    (root / "config.toml").write_text(_containerd_config(root, cni_conf))
    containerd = Component(
        "containerd",
        [*in_netns, "containerd", f"--config={root / 'config.toml'}", "--log-level=warn"],
        node.workdir / "containerd.log",
    )
    node.components[containerd.name] = containerd
    containerd.start()
    _wait_until(containerd, node.socket.exists, "serving", timeout)
    _wait_until(containerd, lambda: bool(node.ctr("version", timeout=5)), "answering", timeout)
    for image in (images.pause_image(), images.busybox_image()):
        node.import_image(image)

    _make_cgroups(node.cgroup)
    certs = pki.issue_node(plane.pki, node.workdir / "pki", node.name, node.ip)
    kubeconfig = node.workdir / "kubelet.kubeconfig"
    _kubelet_kubeconfig(kubeconfig, network.api_server, plane.pki, certs)
    config_path = node.workdir / "kubelet.yaml"
    config_path.write_text(yaml.safe_dump(_kubelet_config(node, plane.pki, certs)))
    kubelet = Component(
        "kubelet",
        [
            *in_netns,
            str(bins.kubelet),
            f"--config={config_path}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={node.workdir / 'kubelet'}",
            f"--cert-dir={node.workdir / 'kubelet-certs'}",
            f"--hostname-override={node.name}",
            f"--node-ip={node.ip}",
            "--v=1",
        ],
        node.workdir / "kubelet.log",
    )
    node.components[kubelet.name] = kubelet
    kubelet.start()

    scheduler = Component(
        "kube-scheduler",
        [
            str(bins.kube_scheduler),
            f"--kubeconfig={plane.kubeconfig}",
            "--leader-elect=false",
            "--secure-port=0",
            "--v=1",
        ],
        node.workdir / "kube-scheduler.log",
    )
    node.components[scheduler.name] = scheduler
    scheduler.start()

    _wait_until(kubelet, lambda: _node_ready(plane, node.name), "Ready", timeout)
    _start_network_addons(node, plane, bins, timeout)
    _untaint(plane, node.name)


def _start_network_addons(
    node: Node, plane: ControlPlane, bins: build.NodeBinaries, timeout: float
) -> None:
    """kube-proxy and kube-router's firewall in the node's netns, then CoreDNS as a pod.

    Before the node is untainted, so that no pod starts before Services route and
    NetworkPolicies are enforced. Each add-on is ready when its rules are in the
    node's iptables: the ``kubernetes`` Service's for kube-proxy, the forward
    chain's hook for kube-router.
    """
    from tests.cluster.controlplane import Component, _wait_until

    network = node.network
    in_netns = ["nsenter", f"--net={NETNS_DIR / network.netns}", "--"]
    server = network.api_server
    api = addons.api_endpoints(network.host_ip, API_PORT)
    addons.apply(plane, [*api, *addons.KUBE_ROUTER_RBAC])

    proxy_kubeconfig = node.workdir / "kube-proxy.kubeconfig"
    proxy_cert = pki.issue_client(plane.pki, node.workdir / "pki", addons.KUBE_PROXY_USER)
    addons.write_kubeconfig(proxy_kubeconfig, server, plane.pki, proxy_cert)
    proxy_config = node.workdir / "kube-proxy.yaml"
    proxy_config.write_text(yaml.safe_dump(addons.kube_proxy_config(node, proxy_kubeconfig)))
    proxy = Component(
        "kube-proxy",
        [*in_netns, str(bins.kube_proxy), f"--config={proxy_config}", "--v=1"],
        node.workdir / "kube-proxy.log",
    )
    node.components[proxy.name] = proxy
    proxy.start()

    router_kubeconfig = node.workdir / "kube-router.kubeconfig"
    router_cert = pki.issue_client(plane.pki, node.workdir / "pki", addons.KUBE_ROUTER_USER)
    addons.write_kubeconfig(router_kubeconfig, server, plane.pki, router_cert)
    router = Component(
        "kube-router",
        [*in_netns, *addons.kube_router_argv(bins.kube_router, node, router_kubeconfig)],
        node.workdir / "kube-router.log",
    )
    node.components[router.name] = router
    router.start()

    def rules(table: str) -> str:
        return _sh("iptables-save", "-t", table, netns=network.netns)

    _wait_until(proxy, lambda: "10.0.0.1/32" in rules("nat"), "routing Services", timeout)
    _wait_until(router, lambda: "-j KUBE-ROUTER-FORWARD" in rules("filter"), "filtering", timeout)

    node.import_image(images.coredns_image())
    addons.apply(plane, addons.dns_objects())


def _node_ready(plane: ControlPlane, name: str) -> bool:
    status, body = plane.get(f"/api/v1/nodes/{name}", timeout=2)
    if status != 200:
        return False
    conditions = json.loads(body).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _untaint(plane: ControlPlane, name: str) -> None:
    """Drop the not-ready taint the API server put on the new node.

    The node-lifecycle controller would do it, but it also evicts pods from a node
    whose status is late, which a loaded CI machine would trigger; the test control
    plane runs without it.
    """
    kubectl = str(build.binaries().kubectl)
    for effect in ("NoSchedule", "NoExecute"):
        subprocess.run(
            [
                kubectl,
                f"--kubeconfig={plane.kubeconfig}",
                "taint",
                "node",
                name,
                f"node.kubernetes.io/not-ready:{effect}-",
            ],
            capture_output=True,
            check=False,
        )
