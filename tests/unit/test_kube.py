"""A 403 from an API server that is not ready yet is an outage, not a refusal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from nsprov.core.errors import ClusterUnavailable
from nsprov.core.kube import Kube, KubeError

FORBIDDEN = json.dumps({"kind": "Status", "reason": "Forbidden", "message": "no"}).encode()


@dataclass
class _Response:
    status: int
    data: bytes = b""

    def release_conn(self) -> None:
        pass


class _Server:
    """Answers every call with ``status``, and /readyz with ``readyz`` (None: unreachable)."""

    def __init__(self, status: int, readyz: int | None) -> None:
        self.status = status
        self.readyz = readyz
        self.paths: list[str] = []

    def send(self, method: str, path: str, *args: Any) -> _Response:
        self.paths.append(path)
        if path == "/readyz":
            if self.readyz is None:
                raise ClusterUnavailable("Kubernetes API unreachable")
            return _Response(self.readyz, b"ok")
        return _Response(self.status, FORBIDDEN if self.status == 403 else b"{}")


def _kube(monkeypatch: pytest.MonkeyPatch, server: _Server) -> Kube:
    kube = Kube(api=None)  # type: ignore[arg-type] # _send is replaced
    monkeypatch.setattr(kube, "_send", server.send)
    return kube


@pytest.mark.parametrize("readyz", [500, 403, None])
def test_a_403_while_the_api_server_is_not_ready_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, readyz: int | None
) -> None:
    # 500: a check fails (informers not synced); 403: even /readyz is refused, since
    # RBAC's caches are empty; None: it went away again.
    server = _Server(403, readyz)
    kube = _kube(monkeypatch, server)
    with pytest.raises(ClusterUnavailable) as raised:
        kube.get("/api/v1/namespaces/np-abc")
    assert raised.value.status == 503
    assert "not ready" in raised.value.detail
    with pytest.raises(ClusterUnavailable):
        kube.stream("/api/v1/namespaces", {"watch": "1"}, read_timeout=1)
    assert server.paths.count("/readyz") == 2


def test_a_403_from_a_ready_api_server_is_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = _kube(monkeypatch, _Server(403, 200))
    with pytest.raises(KubeError) as raised:
        kube.get("/api/v1/namespaces/np-abc")
    assert raised.value.status == 403
    with pytest.raises(KubeError):
        kube.stream("/api/v1/namespaces", {"watch": "1"}, read_timeout=1)


@pytest.mark.parametrize("status", [401, 404, 409])
def test_other_errors_do_not_ask_readyz(monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    server = _Server(status, 500)
    with pytest.raises(KubeError):
        _kube(monkeypatch, server).get("/api/v1/namespaces/np-abc")
    assert "/readyz" not in server.paths
