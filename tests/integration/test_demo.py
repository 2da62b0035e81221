"""``make demo`` against another cluster: only by NSPROV_DEMO_KUBECONFIG, named before it writes.

The demo runs as ``make demo`` runs it, with a KUBECONFIG that stands for a newcomer's
production cluster: a listening socket that counts connections. The demo must not
touch it, must name the cluster it does use (server URL and context) before its first
write, say that the grant there is empty and how to fill it, and show the nsprov
client beside curl.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.integration.conftest import REPO, Cluster, live_managed_namespaces
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")


class _Production:
    """A TCP listener standing in for production's API server: counts who connects."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()
        self._thread.join(timeout=5)


def test_demo_uses_only_the_explicit_cluster_and_names_it_before_writing(
    cluster: Cluster, core: client.CoreV1Api, tmp_path: Path
) -> None:
    production = _Production()
    prod_kubeconfig = tmp_path / "prod-kubeconfig"
    prod_kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "prod", "cluster": {"server": f"https://127.0.0.1:{production.port}"}}
                ],
                "users": [{"name": "admin", "user": {"token": "prod-token"}}],
                "contexts": [{"name": "prod", "context": {"cluster": "prod", "user": "admin"}}],
                "current-context": "prod",
            }
        )
    )
    context = yaml.safe_load(cluster.kubeconfig.read_text())["current-context"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NSPROV_")},
        "KUBECONFIG": str(prod_kubeconfig),
        "NSPROV_DEMO_KUBECONFIG": str(cluster.kubeconfig),
    }
    lines: list[str] = []
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.demo"], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    def read() -> None:
        for line in process.stdout or []:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    try:
        reader.start()
        wait_until(
            lambda: any("press Ctrl-C" in line for line in lines) or process.poll() is not None,
            timeout=120,
            message="the demo up and waiting",
        )
        assert process.poll() is None, "".join(lines)
    except AssertionError:
        print("".join(lines))
        raise
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        reader.join(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
        production.close()
    output = "".join(lines)
    assert process.returncode == 0, output

    assert production.connections == 0, "the demo never talks to KUBECONFIG's cluster"
    named = output.index(
        f"Using the cluster of NSPROV_DEMO_KUBECONFIG: server {cluster.server}, context {context}"
    )
    assert named < output.index("Starting nsprov"), "named before anything is written"
    assert "ClusterRole namespace-provisioner-grant grants nothing" in output
    assert "deploy/overlay/grant.yaml" in output
    assert "Creating ClusterRole" not in output, "no grant of the demo's on another cluster"

    assert "$ nsprov create --ttl 30m --kubeconfig-out" in output
    assert "$ nsprov list" in output
    assert output.count("np-") >= 2
    wait_until(lambda: live_managed_namespaces(core) == [], timeout=30, message="demo cleaned up")
