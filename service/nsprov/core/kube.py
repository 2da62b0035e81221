"""Kubernetes client setup and the one way the service makes API calls.

We use the official client's ApiClient for what it does well (kubeconfig and
in-cluster config, auth refresh, TLS, a pooled urllib3 connection) but send and
receive plain JSON: the generated typed methods validate and deserialize every
object through pydantic models, which costs more CPU than the rest of a
provisioning request, and the bundle module already speaks dicts.

Every call carries a timeout; the connection pool is sized to the number of
worker threads so a burst of requests never opens (and discards) extra
connections, which urllib3 would warn about.

A restarted kube-apiserver serves requests before its authorizer's caches
(RBAC's RoleBindings and ClusterRoles) have synced, and until then it refuses
calls it allows a moment later: a 403 that is not a refusal. So a 403 is
checked against the API server's own ``/readyz`` (readable by every identity
once it is ready): while the server is not ready, the call failed because the
cluster is unavailable (503 + Retry-After to our clients, a retry for the
controller), not because nsprov lacks a permission (a 500 that names it).
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from nsprov.core.errors import ClusterUnavailable

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.kube")

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
# The API server's metadata-only view of a list and of a watch's objects: every object as
# a PartialObjectMetadata (apiVersion, kind, metadata), its body never sent.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


def _unreachable(exc: Exception) -> ClusterUnavailable:
    # The transport's own text (hosts, certificate details) goes to the log, not to clients.
    log.warning("Kubernetes API unreachable: %s: %s", type(exc).__name__, exc)
    return ClusterUnavailable("Kubernetes API unreachable")


class KubeError(Exception):
    """An API call answered with an error status; ``status`` and ``reason`` say which."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def load_api_client(kubeconfig: str | None, pool_size: int) -> client.ApiClient:
    """An ApiClient from ``kubeconfig``, else in-cluster config, else the default lookup."""
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException:
            config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = pool_size
    # The client's own retries would multiply our timeouts; callers decide about retrying.
    configuration.retries = False
    return client.ApiClient(configuration)


def ca_data(api: client.ApiClient, ca_file: Path | None) -> str | None:
    """Base64 CA bundle for kubeconfigs: --ca-file, else the CA the service itself trusts."""
    path = ca_file or api.configuration.ssl_ca_cert
    if not path:
        return None
    return base64.b64encode(Path(path).read_bytes()).decode()


def _decoded(status: int, data: bytes) -> dict[str, Any]:
    """The JSON body of a finished response, or KubeError / ClusterUnavailable."""
    if status >= 500 or status == 429:
        # 429: API Priority and Fairness is shedding load; a retry later will do.
        log.warning("Kubernetes API answered %d", status)
        raise ClusterUnavailable(f"Kubernetes API answered {status}")
    try:
        decoded: dict[str, Any] = json.loads(data) if data else {}
    except ValueError:
        decoded = {"message": data[:200].decode(errors="replace")}
    if not 200 <= status <= 299:
        raise KubeError(status, str(decoded.get("reason", "")), str(decoded.get("message", "")))
    return decoded


def _not_ready(error: KubeError) -> ClusterUnavailable:
    """What a 403 from an API server that says it is not ready is (the module docstring)."""
    log.warning("Kubernetes API refused a call while not ready (restarting?): %s", error)
    return ClusterUnavailable("Kubernetes API server not ready")


@dataclass
class Kube:
    """Thin JSON-in, JSON-out access to the API server through one shared ApiClient."""

    api: client.ApiClient
    timeout: float = 30.0

    @property
    def host(self) -> str:
        return str(self.api.configuration.host)

    def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        content_type: str,
        timeout: float | tuple[float, float],
        accept: str = JSON,
    ) -> urllib3.BaseHTTPResponse:
        """One request through the shared client; the response body is not read yet."""
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        method_, url, headers_, _, _ = self.api.param_serialize(
            method, path, header_params=headers, auth_settings=["BearerToken"]
        )
        try:
            response: urllib3.BaseHTTPResponse = self.api.call_api(
                method_, url, header_params=headers_, body=body, _request_timeout=timeout
            ).response
        except (urllib3.exceptions.HTTPError, OSError, ApiException) as exc:
            # ApiException here is a transport problem (status 0), e.g. a TLS failure.
            raise _unreachable(exc) from exc
        return response

    def request(
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
        response = self._send(method, path, body, content_type, timeout or self.timeout, accept)
        try:
            data = response.data
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _unreachable(exc) from exc
        try:
            return _decoded(response.status, data)
        except KubeError as exc:
            raise self._refusal_or_not_ready(exc) from None

    def stream(
        self, path: str, query: dict[str, str], *, read_timeout: float, accept: str = JSON
    ) -> urllib3.BaseHTTPResponse:
        """Open a streaming GET (a watch); the caller iterates lines and releases it."""
        response = self._send(
            "GET", f"{path}?{urlencode(query)}", None, JSON, (self.timeout, read_timeout), accept
        )
        if response.status != 200:
            try:
                _decoded(response.status, response.data)
            except KubeError as exc:
                raise self._refusal_or_not_ready(exc) from None
            finally:
                response.release_conn()
            raise KubeError(response.status, "", "a watch answered without a stream")
        return response

    def _refusal_or_not_ready(self, error: KubeError) -> Exception:
        """``error``, unless it is a 403 from an API server that is not ready (see above)."""
        return error if error.status != 403 or self.ready() else _not_ready(error)

    def ready(self) -> bool:
        """Whether the API server says it is ready (``GET /readyz``, a few seconds at most)."""
        try:
            response = self._send("GET", "/readyz", None, JSON, min(2.0, self.timeout))
            try:
                response.data  # noqa: B018 - read, so the connection goes back to the pool
            except (urllib3.exceptions.HTTPError, OSError):
                return False
        except ClusterUnavailable:
            return False
        return response.status == 200

    def get(self, path: str, **kw: Any) -> dict[str, Any]:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return self.request("POST", path, body=body, **kw)

    def create(self, path: str, body: dict[str, Any], **kw: Any) -> bool:
        """POST ``body``; False when it already exists (409), which every caller tolerates."""
        try:
            self.post(path, body, **kw)
        except KubeError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def delete(self, path: str, body: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        return self.request("DELETE", path, body=body, **kw)

    def replace(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """PUT: the whole object; with metadata.resourceVersion set, a compare-and-swap."""
        return self.request("PUT", path, body=body, **kw)

    def merge_patch(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return self.request("PATCH", path, body=body, content_type=MERGE_PATCH, **kw)
