"""Build the test control plane's binaries from Go modules, once per version.

The machines this project runs on have no docker and no prebuilt Kubernetes, but
they do reach the Go module proxy. ``go build`` of the published modules gives us
the real kube-apiserver, kube-controller-manager, kubectl and etcd. A cold build
takes many minutes on two cores, so the results are cached outside the repo,
keyed by version, and a warm call costs one ``stat`` per binary.

Run ``python -m tests.cluster build`` (or ``python tests/cluster/build.py``) to
build ahead of time; ``--json`` prints each binary's path and size.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
# The etcd release k8s.io/kubernetes v1.36.3 requires (go.etcd.io/etcd/*/v3 in its go.mod).
ETCD_VERSION = "v3.6.8"
# The release's date, from the module proxy's .info; a fixed date keeps builds reproducible.
KUBERNETES_BUILD_DATE = "2026-07-22T18:07:38Z"
# The node's network add-ons (tests/cluster/addons.py), each pinned in its go/<name>/go.mod.
# kube-router: only its NetworkPolicy firewall runs, test-only (see addons.py on why).
KUBE_ROUTER_VERSION = "v2.1.0"
COREDNS_VERSION = "v1.14.7"
# The release tooling's binaries (charts/ and .github/workflows), each pinned in go/<name>/go.mod.
HELM_VERSION = "v4.3.2"
ACTIONLINT_VERSION = "v1.7.12"

GO_DIR = Path(__file__).resolve().parent / "go"


class BuildError(RuntimeError):
    """A binary of the test control plane could not be built."""


@dataclass(frozen=True)
class Binaries:
    """Paths to the control plane's executables."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path


def cache_root() -> Path:
    """Where built binaries live: ``$NSPROV_CACHE_DIR`` or ``~/.cache/nsprov``."""
    override = os.environ.get("NSPROV_CACHE_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "nsprov"


def binaries() -> Binaries:
    """The cached binaries' paths, whether or not they exist yet."""
    kube_dir = cache_root() / f"kubernetes-{KUBERNETES_VERSION}"
    etcd_dir = cache_root() / f"etcd-{ETCD_VERSION}"
    return Binaries(
        etcd=etcd_dir / "etcd",
        kube_apiserver=kube_dir / "kube-apiserver",
        kube_controller_manager=kube_dir / "kube-controller-manager",
        kubectl=kube_dir / "kubectl",
    )


def _version_ldflags() -> str:
    # Without these, /version reports v0.0.0-master and kubectl warns about skew.
    major, minor, _ = KUBERNETES_VERSION.lstrip("v").split(".")
    values = {
        "gitVersion": KUBERNETES_VERSION,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": KUBERNETES_BUILD_DATE,
    }
    flags = [
        f"-X {package}.{name}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for name, value in values.items()
    ]
    return " ".join(["-s", "-w", *flags])


def _go_build(module_dir: Path, package: str, output: Path, ldflags: str) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    # Build into a temp name and rename, so an interrupted build never leaves a
    # truncated binary that a later run would take for a finished one.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.close(fd)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -trimpath -buildvcs=false"}
    command = ["go", "build", "-ldflags", ldflags, "-o", tmp_name, package]
    started = time.monotonic()
    print(f"building {output.name} ({package}) ...", file=sys.stderr, flush=True)
    result = subprocess.run(command, cwd=module_dir, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        Path(tmp_name).unlink(missing_ok=True)
        raise BuildError(
            f"go build {package} failed (exit {result.returncode}) in {module_dir}:\n"
            + result.stderr[-4000:]
        )
    os.chmod(tmp_name, 0o755)  # noqa: S103 - an executable, readable by the user running tests
    os.replace(tmp_name, output)
    print(
        f"built {output} in {time.monotonic() - started:.0f}s",
        file=sys.stderr,
        flush=True,
    )


def ensure_built() -> Binaries:
    """Build whatever binary is missing from the cache and return all paths."""
    if shutil.which("go") is None:
        missing = [p for p in _as_list(binaries()) if not p.exists()]
        if missing:
            raise BuildError("go is not on PATH and the control plane is not built yet")
    bins = binaries()
    kube_ldflags = _version_ldflags()
    plan = [
        (GO_DIR / "etcd", "go.etcd.io/etcd/server/v3", bins.etcd, "-s -w"),
        (
            GO_DIR / "kubernetes",
            "k8s.io/kubernetes/cmd/kube-apiserver",
            bins.kube_apiserver,
            kube_ldflags,
        ),
        (
            GO_DIR / "kubernetes",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            bins.kube_controller_manager,
            kube_ldflags,
        ),
        (GO_DIR / "kubernetes", "k8s.io/kubernetes/cmd/kubectl", bins.kubectl, kube_ldflags),
    ]
    for module_dir, package, output, ldflags in plan:
        if not output.exists():
            _go_build(module_dir, package, output, ldflags)
    return bins


@dataclass(frozen=True)
class NodeBinaries:
    """The optional node's executables: Kubernetes' (same module and version as the rest)
    and its network add-ons' (kube-router's firewall; CoreDNS, which runs as a pod)."""

    kube_scheduler: Path
    kubelet: Path
    kube_proxy: Path
    kube_router: Path
    coredns: Path


def node_binaries() -> NodeBinaries:
    kube_dir = cache_root() / f"kubernetes-{KUBERNETES_VERSION}"
    # CoreDNS is keyed by its main.go too: that file chooses which plugins are linked in.
    coredns_source = (GO_DIR / "coredns" / "main.go").read_bytes()
    coredns_key = hashlib.sha256(coredns_source).hexdigest()[:12]
    return NodeBinaries(
        kube_scheduler=kube_dir / "kube-scheduler",
        kubelet=kube_dir / "kubelet",
        kube_proxy=kube_dir / "kube-proxy",
        kube_router=cache_root() / f"kube-router-{KUBE_ROUTER_VERSION}" / "kube-router",
        coredns=cache_root() / f"coredns-{COREDNS_VERSION}-{coredns_key}" / "coredns",
    )


def ensure_node_built() -> NodeBinaries:
    """Build the node's binaries if missing (many minutes cold, then one stat each).

    Separate from :func:`ensure_built` so that a control plane without a node never
    pays for them.
    """
    bins = node_binaries()
    kube_ldflags = _version_ldflags()
    router_version = "github.com/cloudnativelabs/kube-router/v2/pkg/version.Version"
    plan = (
        ("kubernetes", "k8s.io/kubernetes/cmd/kube-scheduler", bins.kube_scheduler, kube_ldflags),
        ("kubernetes", "k8s.io/kubernetes/cmd/kubelet", bins.kubelet, kube_ldflags),
        ("kubernetes", "k8s.io/kubernetes/cmd/kube-proxy", bins.kube_proxy, kube_ldflags),
        (
            "kube-router",
            "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",
            bins.kube_router,
            f"-s -w -X {router_version}={KUBE_ROUTER_VERSION}",
        ),
        ("coredns", ".", bins.coredns, "-s -w"),
    )
    for module, package, output, ldflags in plan:
        if not output.exists():
            if shutil.which("go") is None:
                raise BuildError(f"go is not on PATH and {output.name} is not built yet")
            _go_build(GO_DIR / module, package, output, ldflags)
    return bins


@dataclass(frozen=True)
class ToolBinaries:
    """The release tooling: helm (the chart's lint, template and install) and actionlint
    (the workflows). Neither is part of a cluster, so neither costs a cluster build."""

    helm: Path
    actionlint: Path


def tool_binaries() -> ToolBinaries:
    return ToolBinaries(
        helm=cache_root() / f"helm-{HELM_VERSION}" / "helm",
        actionlint=cache_root() / f"actionlint-{ACTIONLINT_VERSION}" / "actionlint",
    )


def ensure_tools_built() -> ToolBinaries:
    """Build helm and actionlint if missing (a few minutes cold, then one stat each)."""
    bins = tool_binaries()
    helm_version = "helm.sh/helm/v4/internal/version"
    plan = (
        (
            "helm",
            "helm.sh/helm/v4/cmd/helm",
            bins.helm,
            f"-s -w -X {helm_version}.version={HELM_VERSION} -X {helm_version}.gitTreeState=clean",
        ),
        (
            "actionlint",
            "github.com/rhysd/actionlint/cmd/actionlint",
            bins.actionlint,
            f"-s -w -X github.com/rhysd/actionlint.version={ACTIONLINT_VERSION}",
        ),
    )
    for module, package, output, ldflags in plan:
        if not output.exists():
            if shutil.which("go") is None:
                raise BuildError(f"go is not on PATH and {output.name} is not built yet")
            _go_build(GO_DIR / module, package, output, ldflags)
    return bins


def go_build(module_dir: Path, package: str, output: Path, ldflags: str) -> None:
    """Build one static binary into ``output`` (atomically), for the node's helpers."""
    _go_build(module_dir, package, output, ldflags)


def _as_list(bins: Binaries) -> list[Path]:
    return [bins.etcd, bins.kube_apiserver, bins.kube_controller_manager, bins.kubectl]


def main(json_report: bool = False, node: bool = False, tools: bool = False) -> int:
    started = time.monotonic()
    if tools:
        # The tooling needs no cluster: `make tools-build` builds only helm and actionlint.
        try:
            built = ensure_tools_built()
        except BuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(
            f"helm {HELM_VERSION} and actionlint {ACTIONLINT_VERSION} ready "
            f"in {built.helm.parent.parent}"
        )
        return 0
    try:
        bins = ensure_built()
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if node:
        try:
            ensure_node_built()
        except BuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if json_report:
        report = {
            "kubernetes": KUBERNETES_VERSION,
            "etcd": ETCD_VERSION,
            "seconds": round(time.monotonic() - started, 1),
            "binaries": {
                p.name: {"path": str(p), "bytes": p.stat().st_size} for p in _as_list(bins)
            },
        }
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"control plane binaries ready (Kubernetes {KUBERNETES_VERSION}, etcd {ETCD_VERSION}) "
        f"in {bins.kubectl.parent.parent}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(
        main(
            json_report="--json" in sys.argv[1:],
            node="--node" in sys.argv[1:],
            tools="--tools" in sys.argv[1:],
        )
    )
