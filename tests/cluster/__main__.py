"""Command line for the test control plane: build, run, up, down.

``up`` starts ``run`` as a detached process and returns once the admin
kubeconfig is written (``make cluster``); ``down`` ends it and waits until
every process is gone (``make cluster-down``). ``run`` keeps the control plane
in the foreground until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.cluster import build, controlplane, images, node

_REPO = Path(__file__).resolve().parents[2]


def _state_paths(state_dir: Path) -> tuple[Path, Path, Path]:
    return state_dir / "kubeconfig", state_dir / "launcher.pid", state_dir / "launcher.log"


def _run(state_dir: Path, with_node: bool = False) -> int:
    kubeconfig, pid_file, _ = _state_paths(state_dir)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    started = time.monotonic()
    plane = controlplane.start(with_node=with_node)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plane.kubeconfig, kubeconfig)
        kubeconfig.chmod(0o600)
        print(
            f"control plane ready in {time.monotonic() - started:.1f}s: {plane.server}\n"
            f"  export KUBECONFIG={kubeconfig}",
            flush=True,
        )
        if plane.node is not None:
            print(f"node {plane.node.name} Ready at {plane.node.ip}", flush=True)
        # Last: `up` takes the pid file as the sign that the lines above are written.
        pid_file.write_text(f"{os.getpid()}\n")
        while not stop.wait(1.0):
            components = list(plane.components.values())
            if plane.node is not None:
                components += plane.node.components.values()
            dead = [c.name for c in components if not c.running()]
            if dead:
                print(f"error: {', '.join(dead)} exited; stopping", file=sys.stderr, flush=True)
                return 1
        return 0
    finally:
        plane.stop()
        kubeconfig.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)


def _up(state_dir: Path, timeout: float, with_node: bool = False) -> int:
    kubeconfig, pid_file, log_file = _state_paths(state_dir)
    if pid_file.exists() and controlplane.pid_alive(int(pid_file.read_text())):
        print(f"control plane already running; export KUBECONFIG={kubeconfig}")
        return 0
    # Build in the foreground so a first-time user sees the (slow) progress.
    build.ensure_built()
    if with_node:
        reason = node.unavailable()
        if reason:
            print(f"error: the node cannot start here: {reason}", file=sys.stderr)
            return 1
        build.ensure_node_built()
    state_dir.mkdir(parents=True, exist_ok=True)
    kubeconfig.unlink(missing_ok=True)
    with log_file.open("wb") as log:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.cluster",
                "run",
                "--state-dir",
                str(state_dir),
                *(["--node"] if with_node else []),
            ],
            cwd=_REPO,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if kubeconfig.exists() and pid_file.exists():
            print(f"control plane running (pid {child.pid}); export KUBECONFIG={kubeconfig}")
            if with_node:
                ready = [line for line in log_file.read_text().splitlines() if "Ready at" in line]
                print(ready[-1] if ready else "node Ready")
            return 0
        if child.poll() is not None:
            print(f"error: control plane failed to start:\n{log_file.read_text()}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    child.terminate()
    print(f"error: control plane not ready after {timeout:.0f}s; see {log_file}", file=sys.stderr)
    return 1


def _down(state_dir: Path, timeout: float) -> int:
    _, pid_file, _ = _state_paths(state_dir)
    if not pid_file.exists():
        print("control plane not running")
        return 0
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while controlplane.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if controlplane.pid_alive(pid):
        print(f"error: launcher {pid} still running after {timeout:.0f}s", file=sys.stderr)
        return 1
    pid_file.unlink(missing_ok=True)
    print("control plane stopped")
    return 0


def _images() -> int:
    """Build (or find cached) every image the node runs; print names, tarballs, sizes."""
    try:
        built = [
            images.pause_image(),
            images.busybox_image(),
            images.coredns_image(),
            images.base_image(),
            images.nsprov_image(),
        ]
    except (images.ImageError, build.BuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for image in built:
        size = image.tarball.stat().st_size / 1e6
        print(f"{image.name}: {image.tarball} ({size:.0f} MB)")
    return 0


def _image() -> int:
    """nsprov's image alone (what `make release-check` builds): its tarball and size."""
    try:
        image = images.nsprov_image()
    except (images.ImageError, build.BuildError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{image.name}: {image.tarball} ({image.tarball.stat().st_size / 1e6:.0f} MB)")
    return 0


def _tool(rest: list[str]) -> int:
    """Run helm or actionlint (built if missing) with the remaining arguments."""
    if not rest or rest[0] not in ("helm", "actionlint"):
        print("usage: python -m tests.cluster tool {helm,actionlint} [ARG...]", file=sys.stderr)
        return 2
    try:
        binary = str(getattr(build.ensure_tools_built(), rest[0]))
    except build.BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    os.execv(binary, [binary, *rest[1:]])  # noqa: S606 - the cached binary, its args as given


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    parser.add_argument(
        "command", choices=["build", "images", "image", "tool", "run", "up", "down"]
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="tool: helm or actionlint, args")
    parser.add_argument("--state-dir", type=Path, default=_REPO / ".cluster")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--json", action="store_true", help="build: print paths and sizes")
    parser.add_argument(
        "--node", action="store_true", help="build, run, up: with a node (kubelet, containerd)"
    )
    parser.add_argument(
        "--tools", action="store_true", help="build: only the release tooling (helm, actionlint)"
    )
    args = parser.parse_args(argv)
    if args.command == "build":
        return build.main(json_report=args.json, node=args.node, tools=args.tools)
    if args.command == "images":
        return _images()
    if args.command == "image":
        return _image()
    if args.command == "tool":
        return _tool(args.rest)
    if args.command == "run":
        return _run(args.state_dir, args.node)
    if args.command == "up":
        return _up(args.state_dir, args.timeout, args.node)
    return _down(args.state_dir, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
