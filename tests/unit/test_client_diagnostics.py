"""The diagnostics report without a cluster: a stand-in API server on loopback answers
what the Kubernetes API would (tests/integration/test_client.py reads a real one).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from nsprov.client import diagnostics as client_diagnostics
from nsprov.client.diagnostics import KubeAccess, collect, log_lines, wanted, write_report

NAMESPACE = "np-diagnosed01"
TOKEN = "sa-token-of-the-namespace"

EVENTS = {
    "items": [
        {"lastTimestamp": "2030-01-01T00:00:09Z", "type": "Warning", "reason": "BackOff",
         "involvedObject": {"kind": "Pod", "name": "web"}, "count": 4,
         "message": "Back-off restarting\nfailed container"},
        {"lastTimestamp": "2030-01-01T00:00:01Z", "type": "Normal", "reason": "Scheduled",
         "involvedObject": {"kind": "Pod", "name": "web"}, "message": "assigned"},
    ]
}  # fmt: skip
PODS = {
    "items": [
        {
            "metadata": {"name": "web"},
            "spec": {
                "containers": [{"name": "app", "env": [{"name": "PASSWORD", "value": "hunter2"}]}]
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                                "message": "containers with unready status: [app]"}],
                "containerStatuses": [
                    {"name": "app", "restartCount": 3,
                     "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                     "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}},
                ],
            },
        },
        {
            "metadata": {"name": "pending"},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/0 nodes are available"}]},
        },
    ]
}  # fmt: skip


class _FakeApi(BaseHTTPRequestHandler):
    asked: ClassVar[list[str]] = []
    forbid_events = False
    hang = 0.0

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        type(self).asked.append(self.path)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._send(401, {"kind": "Status", "message": "Unauthorized"})
        if self.hang:
            time.sleep(self.hang)
        base = f"/api/v1/namespaces/{NAMESPACE}"
        if parts.path == f"{base}/events":
            if self.forbid_events:
                message = 'events is forbidden: User "x" cannot list resource "events"'
                return self._send(403, {"kind": "Status", "message": message})
            return self._send(200, EVENTS)
        if parts.path == f"{base}/pods":
            return self._send(200, PODS)
        if parts.path == f"{base}/pods/web/log":
            which = "previous" if query.get("previous") == ["true"] else "current"
            assert query["tailLines"] == ["100"]
            return self._send(200, f"{which} line 1\n{which} line 2\n".encode())
        return self._send(404, {"kind": "Status", "message": "not found"})

    def _send(self, status: int, body: Any) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    _FakeApi.asked = []
    _FakeApi.forbid_events = False
    _FakeApi.hang = 0.0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _kubeconfig(server: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": {"token": TOKEN}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u",
                                                   "namespace": NAMESPACE}}],
            "current-context": "x",
        }
    )  # fmt: skip


def test_the_report_has_events_in_time_order_pods_and_logs_never_env_values(api: str) -> None:
    report = collect(_kubeconfig(api), why="CMD exited 3", now=lambda: 1893456000.0)
    lines = report.splitlines()
    assert (
        lines[0]
        == f"nsprov diagnostics: namespace {NAMESPACE} at 2030-01-01T00:00:00Z (CMD exited 3)"
    )
    events = lines[lines.index("== events (oldest first)") + 1 :][:2]
    assert "Scheduled  pod/web: assigned" in events[0]
    assert "BackOff  pod/web (x4): Back-off restarting failed container" in events[1]
    assert "pod/web: phase Running" in lines
    assert "  Ready=False ContainersNotReady: containers with unready status: [app]" in lines
    assert (
        "  container app: waiting (CrashLoopBackOff), restarts 3, last terminated (Error, exit 1)"
        in lines
    )
    assert "pod/pending: phase Pending" in lines
    assert "  PodScheduled=False Unschedulable: 0/0 nodes are available" in lines
    current = lines.index("== log of pod/web container app (last 100 lines)")
    assert lines[current + 1 : current + 3] == ["current line 1", "current line 2"]
    previous = lines.index("== log of pod/web container app, previous (last 100 lines)")
    assert lines[previous + 1 : previous + 3] == ["previous line 1", "previous line 2"]
    assert "hunter2" not in report
    # No log is asked of a pod whose containers never started; nothing but these reads.
    assert not [p for p in _FakeApi.asked if "/pods/pending/log" in p]
    assert {urlsplit(p).path.rsplit("/", 1)[1] for p in _FakeApi.asked} == {"events", "pods", "log"}


def test_a_forbidden_read_is_a_line_of_the_report(api: str) -> None:
    _FakeApi.forbid_events = True
    report = collect(_kubeconfig(api), why="always")
    assert '(cannot list events: 403 events is forbidden: User "x" cannot list' in report
    assert "pod/web: phase Running" in report


def test_a_hung_api_server_costs_the_deadline_not_more(api: str) -> None:
    _FakeApi.hang = 3.0
    started = time.monotonic()
    report = collect(_kubeconfig(api), why="always", deadline_seconds=1.0)
    assert time.monotonic() - started < 2.5
    assert report.splitlines()[-1] == "(the report stops here: the 1s budget ran out)"


def test_the_report_is_bounded_in_size(api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_diagnostics, "MAX_REPORT_BYTES", 400)
    report = collect(_kubeconfig(api), why="always")
    assert len(report.encode()) < 400 + 200
    assert report.splitlines()[-1] == "(the report stops here: it reached 400 bytes)"


def test_an_unreadable_kubeconfig_is_one_line() -> None:
    assert collect("kind: Config\n", why="x").startswith(
        "nsprov diagnostics: cannot read the kubeconfig"
    )
    with pytest.raises(ValueError, match="lacks"):
        KubeAccess.from_kubeconfig("current-context: x\ncontexts: []\n")


def test_on_github_the_report_is_a_group_no_log_line_can_command() -> None:
    text = "pod/web: phase Running\n::add-mask::oops\n::endgroup::\n"
    lines = list(log_lines("nsprov diagnostics: np-x", text, github=True))
    assert lines[0] == "::group::nsprov diagnostics: np-x"
    assert lines[1].startswith("::stop-commands::")
    resume = lines[1].removeprefix("::stop-commands::")
    assert len(resume) == 32
    assert lines[2:5] == text.splitlines()
    assert lines[5:] == [f"::{resume}::", "::endgroup::"]
    plain = list(log_lines("title", "a\n", github=False))
    assert plain == ["---- title ----", "a", "---- end of title ----"]


def test_modes() -> None:
    assert wanted("on-failure", failed=True)
    assert not wanted("on-failure", failed=False)
    assert wanted("always", failed=False)
    assert not wanted("never", failed=True)


def test_the_report_file_is_named_after_the_namespace(tmp_path: Path) -> None:
    path = write_report("np-x", "report\n", tmp_path / "nsprov-diagnostics")
    assert path == tmp_path / "nsprov-diagnostics" / "np-x.txt"
    assert path.read_text() == "report\n"
