"""The event loop's client answers as the threads' client does (kubeasync.py).

Both are pointed at one small HTTP server on 127.0.0.1 that plays the API server's
answers (statuses, Status bodies, /readyz, a slow answer), and every case asserts that
the two clients agree: the API wing may switch between them without a caller noticing.
The real API server's side (TLS, client certificates, bearer tokens) is in
tests/integration/test_kubeasync.py.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from kubernetes import client

from nsprov.core import kubeasync
from nsprov.core.errors import ClusterUnavailable
from nsprov.core.kube import Kube, KubeError
from nsprov.core.kubeasync import AsyncKube, KubeCalls, ThreadedKube, for_client
from tests.cluster import pki

SLOW_SECONDS = 2.0


@dataclass
class _ApiServer:
    """Answers by path; remembers every request it saw."""

    readyz: int = 200
    seen: list[dict[str, Any]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append({
            "method": request.method,
            "path": request.path_qs,
            "body": json.loads(body) if body else None,
            "content_type": request.headers.get("Content-Type"),
            "accept": request.headers.get("Accept"),
            "authorization": request.headers.get("Authorization"),
            "cookie": request.headers.get("Cookie"),
        })  # fmt: skip
        name = request.path.rsplit("/", 1)[-1]
        if request.path == "/readyz":
            return web.Response(status=self.readyz, text="ok")
        if name.startswith("redirect-"):  # a proxy or load balancer in front of it
            status = int(name.removeprefix("redirect-"))
            return web.Response(status=status, headers={"Location": "/api/v1/namespaces/there"})
        if name == "cookie":  # a load balancer's affinity cookie, say
            response = web.json_response({"kind": "Namespace", "metadata": {"name": name}})
            response.set_cookie("affinity", "replica-2")
            return response
        if name == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if name.startswith("status-"):
            status = int(name.removeprefix("status-"))
            return web.json_response(
                {"kind": "Status", "reason": f"Reason{status}", "message": f"said {status}"},
                status=status,
            )
        if name == "gzipped":  # sent compressed though identity was asked for
            data = json.dumps({"kind": "Namespace", "metadata": {"name": name}}).encode()
            return web.Response(
                body=gzip.compress(data),
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        if name == "big-header":  # 20 kB: within http.client's 64 kB a header line
            return web.json_response({"kind": "Namespace"}, headers={"X-Big": "a" * 20_000})
        if name == "not-json":
            return web.Response(status=418, text="<html>teapot</html>")
        return web.json_response({"kind": "Namespace", "metadata": {"name": name}})


@dataclass
class _Rig:
    server: _ApiServer
    configuration: client.Configuration
    port: int


@pytest.fixture
async def rig() -> AsyncIterator[_Rig]:
    server = _ApiServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.api_key = {"authorization": "token-1"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    configuration.retries = False
    try:
        yield _Rig(server, configuration, port)
    finally:
        await runner.cleanup()


def _threads(configuration: client.Configuration, timeout: float = 30.0) -> KubeCalls:
    return ThreadedKube(Kube(client.ApiClient(configuration), timeout=timeout))


def _loop(configuration: client.Configuration, timeout: float = 30.0) -> KubeCalls:
    return AsyncKube(configuration, pool_size=4, timeout=timeout)


Make = Callable[..., KubeCalls]
CLIENTS = pytest.mark.parametrize("make", [_threads, _loop], ids=["threads", "loop"])


async def _outcome(call: Awaitable[Any]) -> Any:
    """What a call came to: its answer, or its error's class and fields."""
    try:
        return await call
    except KubeError as exc:
        return ("KubeError", exc.status, exc.reason, exc.message)
    except ClusterUnavailable as exc:
        return ("ClusterUnavailable", exc.status, exc.detail)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_both_clients_send_the_same_requests(rig: _Rig) -> None:
    for make in (_threads, _loop):
        kube = make(rig.configuration)
        try:
            assert await kube.get("/api/v1/namespaces/a", query={"labelSelector": "x=y,z"}) == {
                "kind": "Namespace", "metadata": {"name": "a"}
            }  # fmt: skip
            await kube.post("/api/v1/namespaces", {"metadata": {"name": "b"}})
            await kube.merge_patch("/api/v1/namespaces/c", {"metadata": {"labels": {"k": "v"}}})
            await kube.replace("/api/v1/namespaces/d", {"metadata": {"name": "d"}})
            await kube.delete("/api/v1/namespaces/e", {"preconditions": {"uid": "u"}})
        finally:
            await kube.aclose()
    threads, loop = rig.server.seen[:5], rig.server.seen[5:]
    assert loop == threads
    assert [(s["method"], s["content_type"]) for s in loop] == [
        ("GET", None),
        ("POST", "application/json"),
        ("PATCH", "application/merge-patch+json"),
        ("PUT", "application/json"),
        ("DELETE", "application/json"),
    ]
    assert loop[0]["path"] == "/api/v1/namespaces/a?labelSelector=x%3Dy%2Cz"
    assert {s["authorization"] for s in loop} == {"Bearer token-1"}
    assert {s["accept"] for s in loop} == {"application/json"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "readyz"),
    [
        ("status-404", 200),
        ("status-409", 200),
        ("status-401", 500),  # not a 403: /readyz is not asked
        ("status-403", 200),  # refused by a ready API server
        ("status-403", 500),  # not ready yet: unavailable
        ("status-403", 403),
        ("status-429", 200),
        ("status-500", 200),
        ("status-503", 200),
        ("not-json", 200),
    ],
)
async def test_both_clients_come_to_the_same_outcome(rig: _Rig, path: str, readyz: int) -> None:
    rig.server.readyz = readyz
    outcomes = []
    for make in (_threads, _loop):
        kube = make(rig.configuration)
        try:
            outcomes.append(await _outcome(kube.get(f"/api/v1/namespaces/{path}")))
        finally:
            await kube.aclose()
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] in ("KubeError", "ClusterUnavailable")
    asked = [s["path"] for s in rig.server.seen].count("/readyz")
    assert asked == (2 if path == "status-403" else 0)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("method", ["GET", "POST", "PATCH"])
async def test_a_redirect_is_an_answer_not_followed(rig: _Rig, status: int, method: str) -> None:
    """urllib3 without retries (load_api_client) hands back a 3xx; the loop's client must
    not follow it elsewhere, re-sending the body and answering with another's object."""
    outcomes = []
    for make in (_threads, _loop):
        kube = make(rig.configuration)
        body = None if method == "GET" else {"metadata": {"name": "x"}}
        try:
            outcomes.append(
                await _outcome(
                    kube.request(method, f"/api/v1/namespaces/redirect-{status}", body=body)
                )
            )
        finally:
            await kube.aclose()
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][:2] == ("KubeError", status)
    assert [s["path"] for s in rig.server.seen] == [f"/api/v1/namespaces/redirect-{status}"] * 2


@pytest.mark.anyio
async def test_cookies_are_neither_kept_nor_sent(rig: _Rig) -> None:
    """urllib3 keeps no cookies; the loop's client must not either. A host name, not an
    IP address: aiohttp's jar ignores cookies from IP addresses."""
    rig.configuration.host = f"http://localhost:{rig.port}"
    for make in (_threads, _loop):
        kube = make(rig.configuration)
        try:
            await kube.get("/api/v1/namespaces/cookie")
            await kube.get("/api/v1/namespaces/after")
        finally:
            await kube.aclose()
    assert [s["cookie"] for s in rig.server.seen] == [None] * 4


@pytest.mark.anyio
@CLIENTS
async def test_a_body_compressed_unasked_is_read_decompressed(rig: _Rig, make: Make) -> None:
    """urllib3 decodes a Content-Encoding it did not ask for (a proxy in front of the API
    server may compress anyway); the loop's client must not hand the compressed bytes on
    as if they were the answer."""
    kube = make(rig.configuration)
    try:
        answer = await kube.get("/api/v1/namespaces/gzipped")
    finally:
        await kube.aclose()
    assert answer == {"kind": "Namespace", "metadata": {"name": "gzipped"}}


@pytest.mark.anyio
@CLIENTS
async def test_a_long_header_line_is_read(rig: _Rig, make: Make) -> None:
    """http.client reads header lines of up to 64 kB (a proxy's long Set-Cookie, say);
    aiohttp's default stops at 8 kB, which would turn the answer into an outage."""
    kube = make(rig.configuration)
    try:
        assert await kube.get("/api/v1/namespaces/big-header") == {"kind": "Namespace"}
    finally:
        await kube.aclose()


@pytest.mark.anyio
@CLIENTS
async def test_create_tolerates_only_a_conflict(rig: _Rig, make: Make) -> None:
    kube = make(rig.configuration)
    try:
        assert await kube.create("/api/v1/namespaces/status-409", {}) is False
        assert await kube.create("/api/v1/namespaces/fresh", {}) is True
        with pytest.raises(KubeError) as raised:
            await kube.create("/api/v1/namespaces/status-422", {})
        assert (raised.value.status, raised.value.reason) == (422, "Reason422")
    finally:
        await kube.aclose()


@pytest.mark.anyio
@CLIENTS
async def test_an_unreachable_api_server_is_unavailable(rig: _Rig, make: Make) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, never listening: connections are refused
        rig.configuration.host = f"http://127.0.0.1:{closed}"
        kube = make(rig.configuration)
        try:
            with pytest.raises(ClusterUnavailable) as raised:
                await kube.get("/api/v1/namespaces/a")
        finally:
            await kube.aclose()
    assert (raised.value.status, raised.value.detail) == (503, "Kubernetes API unreachable")


@pytest.mark.anyio
@CLIENTS
async def test_a_call_past_its_timeout_is_unavailable(rig: _Rig, make: Make) -> None:
    kube = make(rig.configuration, timeout=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(ClusterUnavailable):
            await kube.get("/api/v1/namespaces/slow")
    finally:
        await kube.aclose()
    assert loop.time() - started < SLOW_SECONDS  # it did not wait for the answer


@pytest.mark.anyio
@CLIENTS
async def test_a_refreshed_token_is_sent_from_then_on(rig: _Rig, make: Make) -> None:
    # As load_incluster_config's hook does once the token file is a minute old.
    tokens = iter(["token-2", "token-3"])

    def refresh(configuration: client.Configuration) -> None:
        configuration.api_key["authorization"] = next(tokens)

    rig.configuration.refresh_api_key_hook = refresh  # type: ignore[assignment]
    kube = make(rig.configuration)
    try:
        await kube.get("/api/v1/namespaces/a")
        await kube.get("/api/v1/namespaces/b")
    finally:
        await kube.aclose()
    assert [s["authorization"] for s in rig.server.seen] == ["Bearer token-2", "Bearer token-3"]


@pytest.mark.anyio
@CLIENTS
async def test_a_slow_token_refresh_never_holds_up_the_event_loop(rig: _Rig, make: Make) -> None:
    """A kubeconfig's exec plugin (or OIDC refresh) runs in the refresh hook, blocking, for
    as long as the plugin takes; it must not stop every other request (and /healthz, on
    the same loop) meanwhile, as it never did on the threads."""

    def refresh(configuration: client.Configuration) -> None:
        time.sleep(0.5)  # an exec plugin fetching a token
        configuration.api_key["authorization"] = "token-2"

    rig.configuration.refresh_api_key_hook = refresh  # type: ignore[assignment]
    kube = make(rig.configuration)
    loop = asyncio.get_running_loop()
    gaps: list[float] = []

    async def ticker() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            gaps.append(loop.time() - last)
            last = loop.time()

    ticking = asyncio.create_task(ticker())
    try:
        await kube.get("/api/v1/namespaces/a")
    finally:
        ticking.cancel()
        await kube.aclose()
    assert rig.server.seen[0]["authorization"] == "Bearer token-2"
    assert gaps, "the event loop never ran while the call was made"
    assert max(gaps) < 0.25


@pytest.mark.anyio
async def test_the_in_cluster_token_is_read_on_the_loop(rig: _Rig, tmp_path: Path) -> None:
    """load_incluster_config's hook (a small file read once a minute) is recognised, so
    nsprov in a pod pays no thread hop a call; and the token it reads is sent."""
    from kubernetes.config.incluster_config import InClusterConfigLoader

    (tmp_path / "token").write_text("pod-token")
    (tmp_path / "ca.crt").write_text("not read here")
    configuration = client.Configuration()
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"}
    InClusterConfigLoader(str(tmp_path / "token"), str(tmp_path / "ca.crt"),
                          environ=environ).load_and_set(configuration)  # fmt: skip
    hook = configuration.refresh_api_key_hook
    assert hook is not None
    assert hook.__module__ == kubeasync._IN_CLUSTER_HOOK
    rig.configuration.api_key = {"BearerToken": "the hook's to replace"}
    rig.configuration.api_key_prefix = {}  # the token file's text carries its "bearer "
    rig.configuration.refresh_api_key_hook = hook

    def no_thread(*args: object, **kwargs: object) -> None:
        raise AssertionError("a thread for the in-cluster token")

    kube = AsyncKube(rig.configuration, pool_size=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(anyio.to_thread, "run_sync", no_thread)
        try:
            await kube.get("/api/v1/namespaces/a")
        finally:
            await kube.aclose()
    assert rig.server.seen[0]["authorization"] == "bearer pod-token"


def test_a_proxy_or_a_hostname_assertion_keeps_the_threads() -> None:
    plain = client.Configuration(host="https://10.0.0.1:6443")
    kube = Kube(client.ApiClient(plain))
    assert isinstance(for_client(kube, pool_size=4), AsyncKube)
    proxied = client.Configuration(host="https://10.0.0.1:6443")
    proxied.proxy = "http://proxy.example:3128"
    assert isinstance(for_client(Kube(client.ApiClient(proxied)), pool_size=4), ThreadedKube)
    asserting = client.Configuration(host="https://10.0.0.1:6443")
    asserting.assert_hostname = "api.example"  # type: ignore[assignment]
    assert isinstance(for_client(Kube(client.ApiClient(asserting)), pool_size=4), ThreadedKube)


def test_a_proxy_the_host_bypasses_keeps_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY for egress with the API server in NO_PROXY (as in many clusters):
    urllib3 goes direct (rest.should_bypass_proxies), so the loop's client may too; a
    host the proxy does apply to stays on the threads."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "10.0.0.1,.cluster.local")
    bypassed = client.Configuration(host="https://10.0.0.1:6443")
    assert bypassed.proxy == "http://proxy.example:3128"  # read from the environment
    assert isinstance(for_client(Kube(client.ApiClient(bypassed)), pool_size=4), AsyncKube)
    named = client.Configuration(host="https://api.cluster.local:6443")
    assert isinstance(for_client(Kube(client.ApiClient(named)), pool_size=4), AsyncKube)
    proxied = client.Configuration(host="https://api.example:6443")
    assert isinstance(for_client(Kube(client.ApiClient(proxied)), pool_size=4), ThreadedKube)


@pytest.mark.anyio
async def test_one_event_loop_owns_the_connections(rig: _Rig) -> None:
    """A call from another loop is refused plainly, not sent on the first loop's transports."""
    kube = AsyncKube(rig.configuration, pool_size=2)

    def in_another_loop() -> dict[str, Any]:
        return asyncio.run(kube.get("/api/v1/namespaces/other"))

    try:
        assert (await kube.get("/api/v1/namespaces/here"))["metadata"]["name"] == "here"
        with pytest.raises(RuntimeError, match="one event loop"):
            await asyncio.get_running_loop().run_in_executor(None, in_another_loop)
        assert (await kube.get("/api/v1/namespaces/again"))["metadata"]["name"] == "again"
    finally:
        await kube.aclose()


def _pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and "api.internal", and a client's (the
    control plane's own certificate helpers, tests/cluster/pki.py)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = pki.subject_name("test-ca")
    ca = pki.issue(ca_name, ca_key, ca_name, ca_key, is_ca=True)
    server_key, user_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("api.internal"),
    ]
    server = pki.issue(pki.subject_name("api"), server_key, ca_name, ca_key, sans=sans)
    user = pki.issue(pki.subject_name("nsprov-user"), user_key, ca_name, ca_key,
                     usage=ExtendedKeyUsageOID.CLIENT_AUTH)  # fmt: skip
    paths = {}
    issued = {"ca": (ca, ca_key), "server": (server, server_key), "user": (user, user_key)}
    for label, (certificate, key) in issued.items():
        paths[label] = directory / f"{label}.crt"
        paths[label].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        paths[f"{label}-key"] = directory / f"{label}.key"
        paths[f"{label}-key"].write_bytes(pki.key_pem(key))
    return paths


@pytest.fixture
async def tls_rig(tmp_path: Path) -> AsyncIterator[tuple[dict[str, Path], int]]:
    """An API server on TLS that asks for a client certificate and answers with whom it
    saw (an API server takes a request without one as anonymous)."""
    pki = _pki(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki["ca"])
    context.load_cert_chain(pki["server"], pki["server-key"])
    context.verify_mode = ssl.CERT_OPTIONAL

    async def whoami(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(pair[0] for pair in peer["subject"]) if peer else {}
        return web.json_response({"user": subject.get("commonName", "system:anonymous")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", whoami)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield pki, runner.addresses[0][1]
    finally:
        await runner.cleanup()


@pytest.mark.anyio
@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")  # urllib3, of verify=False
@pytest.mark.parametrize(
    ("verify", "server_name"), [(True, None), (True, "api.internal"), (False, None)]
)
async def test_both_clients_present_the_client_certificate(
    tls_rig: tuple[dict[str, Path], int], verify: bool, server_name: str | None
) -> None:
    """insecure-skip-tls-verify does not drop the client certificate: urllib3 still
    presents it (cert_reqs=CERT_NONE with cert_file), so the identity stays the same."""
    pki, port = tls_rig
    configuration = client.Configuration(host=f"https://127.0.0.1:{port}")
    configuration.retries = False
    configuration.verify_ssl = verify
    configuration.ssl_ca_cert = str(pki["ca"]) if verify else None
    configuration.cert_file, configuration.key_file = str(pki["user"]), str(pki["user-key"])
    configuration.tls_server_name = server_name
    outcomes = []
    for make in (_threads, _loop):
        kube = make(configuration)
        try:
            outcomes.append(await _outcome(kube.get("/api/v1/namespaces")))
        finally:
            await kube.aclose()
    assert outcomes == [{"user": "nsprov-user"}] * 2
