"""The API wing's Kubernetes calls on the event loop, with the same answers as ``kube.Kube``.

A request used to send each of its API calls through ``kube.Kube`` on a worker thread:
the hop to the thread and back, and the generated client's per-call work (urllib3,
header and URL assembly), cost about 0.65 ms of CPU per call on this project's
two-core machine, as much as the API server's own answer to a GET, and two calls side
by side (a pool claim's PATCH and TokenRequest) fought over the GIL. aiohttp, which
the official client itself depends on (``kubernetes.aio``), sends the same call from
the event loop for about 0.3 ms, and two side by side take the longer of the two, not
their sum. ``kubernetes.aio`` has its own configuration loaders; this reuses the one
configuration ``kube.load_api_client`` loaded (TLS files, the bearer token and its
refresh), so the threads and the loop always speak as the same identity.

``ThreadedKube`` gives a ``kube.Kube`` the same async interface (unit tests' fakes,
and a configuration this client does not cover, such as a proxy); ``for_client``
chooses.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
from collections.abc import Callable
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

import aiohttp
import anyio
import yarl
from kubernetes import client
from kubernetes.client.rest import should_bypass_proxies

from nsprov.core.errors import ClusterUnavailable
from nsprov.core.kube import (
    JSON,
    MERGE_PATCH,
    Kube,
    KubeError,
    _decoded,
    _not_ready,
    _unreachable,
)

log = logging.getLogger("nsprov.kube")

# load_incluster_config's hook re-reads the mounted token file once it is a minute old:
# a small local read, cheap enough for the event loop, unlike a kubeconfig's (_headers).
_IN_CLUSTER_HOOK = "kubernetes.config.incluster_config"
_MAX_HEADER_LINE = 65536

T = TypeVar("T")


class KubeCalls(Protocol):
    """What the API wing asks of the Kubernetes API, awaited (see the module docstring)."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        content_type: str = JSON,
        timeout: float | None = None,
    ) -> dict[str, Any]: ...

    async def get(self, path: str, **kw: Any) -> dict[str, Any]: ...

    async def post(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]: ...

    async def create(self, path: str, body: dict[str, Any], **kw: Any) -> bool: ...

    async def delete(
        self, path: str, body: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]: ...

    async def merge_patch(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]: ...

    async def replace(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class _Verbs:
    """The verbs, each one ``request``."""

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        content_type: str = JSON,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    async def get(self, path: str, **kw: Any) -> dict[str, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return await self.request("POST", path, body=body, **kw)

    async def create(self, path: str, body: dict[str, Any], **kw: Any) -> bool:
        """POST ``body``; False when it already exists (409), which every caller tolerates."""
        try:
            await self.post(path, body, **kw)
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def delete(
        self, path: str, body: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        return await self.request("DELETE", path, body=body, **kw)

    async def merge_patch(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH, **kw)

    async def replace(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """PUT: the whole object; with metadata.resourceVersion set, a compare-and-swap."""
        return await self.request("PUT", path, body=body, **kw)


class ThreadedKube:
    """A ``kube.Kube`` (or a test's fake of one), each call on a worker thread."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        content_type: str = JSON,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        return await self._run(self.kube.request, method, path, body=body, query=query,
                               content_type=content_type, timeout=timeout)  # fmt: skip

    # Each verb goes to the sync client's own verb: tests' fakes implement those.
    async def get(self, path: str, **kw: Any) -> dict[str, Any]:
        return await self._run(self.kube.get, path, **kw)

    async def post(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return await self._run(self.kube.post, path, body, **kw)

    async def create(self, path: str, body: dict[str, Any], **kw: Any) -> bool:
        return await self._run(self.kube.create, path, body, **kw)

    async def delete(
        self, path: str, body: dict[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        return await self._run(self.kube.delete, path, body, **kw)

    async def merge_patch(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return await self._run(self.kube.merge_patch, path, body, **kw)

    async def replace(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return await self._run(self.kube.replace, path, body, **kw)

    @staticmethod
    async def _run(fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kw))

    async def aclose(self) -> None:
        return None


class AsyncKube(_Verbs):
    """JSON in, JSON out, on the event loop: ``kube.Kube``'s answers and errors.

    Its connections belong to the event loop that first used it (the public app's);
    ``aclose`` ends them, and the next call opens new ones.
    """

    def __init__(self, configuration: client.Configuration, *, pool_size: int,
                 timeout: float = 30.0) -> None:  # fmt: skip
        self.configuration = configuration
        self.timeout = timeout
        self._pool_size = pool_size
        self._ssl = _tls(configuration)
        self._server_hostname = configuration.tls_server_name or None
        self._host = str(configuration.host).rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def supports(cls, configuration: client.Configuration) -> bool:
        """Whether this client speaks to the API server exactly as ApiClient would: not
        through a proxy, and without a hostname check other than the usual one.

        The kubernetes Configuration takes its proxy from HTTPS_PROXY too, and ApiClient
        goes direct to a host NO_PROXY names; so does this client (it never reads the
        environment: aiohttp's trust_env is off)."""
        proxied = bool(configuration.proxy) and not should_bypass_proxies(
            configuration.host, configuration.no_proxy or ""
        )
        return not proxied and configuration.assert_hostname is None

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is not None and self._loop is not loop:
            # Its connections are the other loop's transports: they cannot be used here.
            raise RuntimeError("an AsyncKube serves the one event loop that first used it")
        if self._session is None:
            self._loop = loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=self._pool_size),
                # The API server's answers are read whole; as the threads' client does,
                # ask for them unencoded (gzip would cost CPU on both ends), and, as it
                # does, decode one that comes encoded anyway (a proxy in front of it):
                # never hand compressed bytes on as the answer.
                headers={"Accept-Encoding": "identity"},
                # urllib3 keeps no cookies: a Set-Cookie from a proxy or load balancer in
                # front of the API server must not be stored and sent back on every call.
                cookie_jar=aiohttp.DummyCookieJar(),
                # http.client's limit for a header line (_MAXLINE), not aiohttp's 8 kB:
                # a longer one would make an answer the threads read an outage.
                max_line_size=_MAX_HEADER_LINE,
                max_field_size=_MAX_HEADER_LINE,
            )
        return self._session

    async def _headers(self, accept: str, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": accept}
        if content_type is not None:
            headers["Content-Type"] = content_type
        # The bearer token, refreshed by the configuration's hook as ApiClient's would be.
        # The one scheme its configuration has (client certificates are in the TLS context).
        hook = self.configuration.refresh_api_key_hook
        if hook is None or getattr(hook, "__module__", None) == _IN_CLUSTER_HOOK:
            auth = self.configuration.auth_settings()
        else:
            # A kubeconfig's hook may run an exec plugin or an OIDC refresh, blocking for
            # as long as that takes (an interactive login: for good). On the threads it
            # held up one call; on the loop it would hold up every request and /healthz.
            auth = await anyio.to_thread.run_sync(self.configuration.auth_settings)
        bearer = auth.get("BearerToken")
        if bearer and bearer["value"]:
            headers[bearer["key"]] = bearer["value"]
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        content_type: str = JSON,
        timeout: float | None = None,
        accept: str = JSON,
    ) -> dict[str, Any]:
        """Send one request; return the decoded body or raise KubeError / ClusterUnavailable."""
        if query:
            path = f"{path}?{urlencode(query)}"
        status, data = await self._send(method, path, body, content_type, timeout, accept)
        try:
            return _decoded(status, data)
        except KubeError as exc:
            raise await self._refusal_or_not_ready(exc) from None

    async def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        content_type: str,
        timeout: float | None,
        accept: str = JSON,
    ) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = await self._headers(accept, content_type if data is not None else None)
        try:
            async with self._open().request(
                method,
                # As encoded here (urlencode), byte for byte what the threads' client sends.
                yarl.URL(self._host + path, encoded=True),
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
                server_hostname=self._server_hostname,
                # urllib3 without retries (kube.load_api_client) hands a 3xx back as it
                # is, a KubeError; aiohttp would follow it, re-sending the body (a 307's)
                # to wherever a proxy in front of the API server points, and answer with
                # whatever is there as if the API server had.
                allow_redirects=False,
            ) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise _unreachable(exc) from exc

    async def _refusal_or_not_ready(self, error: KubeError) -> Exception:
        """``error``, unless it is a 403 from an API server that is not ready (kube.py)."""
        return error if error.status != 403 or await self.ready() else _not_ready(error)

    async def ready(self) -> bool:
        """Whether the API server says it is ready (``GET /readyz``, a few seconds at most)."""
        try:
            status, _ = await self._send("GET", "/readyz", None, JSON, min(2.0, self.timeout))
        except ClusterUnavailable:
            return False
        return status == 200

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _tls(configuration: client.Configuration) -> ssl.SSLContext | bool:
    """The TLS settings ApiClient's urllib3 pool would use, as one SSLContext."""
    if not configuration.verify_ssl:
        # insecure-skip-tls-verify: the server goes unchecked, but urllib3 still presents
        # the client certificate (cert_reqs=CERT_NONE with cert_file), the identity.
        if not configuration.cert_file:
            return False
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(
            cafile=configuration.ssl_ca_cert, cadata=configuration.ca_cert_data
        )
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, keyfile=configuration.key_file)
    return context


def for_client(kube: Kube, *, pool_size: int) -> KubeCalls:
    """The event loop's client for ``kube``'s API server, as the same identity; threads
    when the configuration needs what only ApiClient does (``AsyncKube.supports``)."""
    configuration = kube.api.configuration
    if AsyncKube.supports(configuration):
        return AsyncKube(configuration, pool_size=pool_size, timeout=kube.timeout)
    log.info("Kubernetes calls of requests go through worker threads (a proxy or "
             "assert_hostname is configured)")  # fmt: skip
    return ThreadedKube(kube)
