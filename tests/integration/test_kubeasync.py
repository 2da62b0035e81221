"""The event loop's client (kubeasync.AsyncKube) on the real API server: the same objects
and errors as the threads' client, as the same identity (client certificates, bearer
tokens), and nothing sent to a server whose certificate it does not trust."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from kubernetes import client

from nsprov.core.errors import ClusterUnavailable
from nsprov.core.kube import Kube, KubeError, load_api_client
from nsprov.core.kubeasync import AsyncKube
from tests.cluster import pki
from tests.integration.conftest import Cluster, delete_namespaces
from tests.support import wait_until


def _run(configuration: client.Configuration, work: Any) -> Any:
    """``work(kube)`` on a fresh event loop, with the connections closed after."""

    async def main() -> Any:
        kube = AsyncKube(configuration, pool_size=4, timeout=10)
        try:
            return await work(kube)
        finally:
            await kube.aclose()

    return asyncio.run(main())


def test_the_loop_client_answers_as_the_threads_client(cluster: Cluster) -> None:
    threads = Kube(load_api_client(str(cluster.kubeconfig), 2))
    configuration = threads.api.configuration
    name = f"test-async-{secrets.token_hex(3)}"
    path = f"/api/v1/namespaces/{name}"

    async def work(kube: AsyncKube) -> dict[str, Any]:
        made = await kube.post("/api/v1/namespaces", {"metadata": {"name": name}})
        assert made["metadata"]["name"] == name
        assert await kube.create("/api/v1/namespaces", {"metadata": {"name": name}}) is False
        patched = await kube.merge_patch(path, {"metadata": {"labels": {"nsprov-test": "a"}}})
        assert patched["metadata"]["labels"]["nsprov-test"] == "a"
        stale = {"metadata": {"resourceVersion": made["metadata"]["resourceVersion"],
                              "labels": {"nsprov-test": "b"}}}  # fmt: skip
        with pytest.raises(KubeError) as conflict:
            await kube.merge_patch(path, stale)
        assert (conflict.value.status, conflict.value.reason) == (409, "Conflict")
        await kube.create(f"{path}/serviceaccounts", {"metadata": {"name": "sa"}})
        token = await kube.post(f"{path}/serviceaccounts/sa/token",
                                {"spec": {"expirationSeconds": 600}})  # fmt: skip
        assert token["status"]["token"].count(".") == 2
        with pytest.raises(KubeError) as missing:
            await kube.get(f"{path}/configmaps/none")
        assert (missing.value.status, missing.value.reason) == (404, "NotFound")
        return await kube.get(path)

    try:
        seen = _run(configuration, work)
        assert threads.get(path) == seen  # the same object, the same resourceVersion
        gone = _run(configuration, lambda kube: kube.delete(path))
        assert gone["status"]["phase"] == "Terminating"
    finally:
        delete_namespaces(client.CoreV1Api(cluster.api), [name])
        threads.api.close()


def test_a_bearer_token_is_the_identity_the_server_sees(
    cluster: Cluster, make_namespace: Any
) -> None:
    """A ServiceAccount's token (how nsprov runs in-cluster): refused what its RBAC does
    not allow (a 403 from a ready server is a refusal), allowed what it does."""
    namespace = make_namespace()
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    token = core.create_namespaced_service_account_token(
        "reader", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    admin = cluster.api.configuration
    configuration = client.Configuration(host=admin.host)
    configuration.ssl_ca_cert = admin.ssl_ca_cert
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"

    async def refused(kube: AsyncKube) -> KubeError:
        with pytest.raises(KubeError) as raised:
            await kube.get(configmaps)
        return raised.value

    error = _run(configuration, refused)
    assert error.status == 403
    assert f"system:serviceaccount:{namespace}:reader" in error.message
    client.RbacAuthorizationV1Api(cluster.api).create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )  # fmt: skip

    def allowed() -> dict[str, Any] | None:
        async def call(kube: AsyncKube) -> dict[str, Any] | None:
            try:
                return await kube.get(configmaps)
            except KubeError:
                return None  # the authorizer has not learned the binding yet

        result: dict[str, Any] | None = _run(configuration, call)
        return result

    listing = wait_until(allowed, timeout=30, message="the binding allows the list")
    assert listing["kind"] == "ConfigMapList"


def test_a_server_it_does_not_trust_is_unavailable(cluster: Cluster, tmp_path: Path) -> None:
    """Another CA than the one that signed the API server's certificate: the handshake
    fails, and the call is an outage (503 to callers), not an answer."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = pki.subject_name("not-the-cluster-ca")
    certificate = pki.issue(subject, key, subject, key, is_ca=True)
    ca = tmp_path / "other-ca.crt"
    ca.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    configuration = Kube(load_api_client(str(cluster.kubeconfig), 1)).api.configuration
    configuration.ssl_ca_cert = str(ca)

    async def call(kube: AsyncKube) -> None:
        with pytest.raises(ClusterUnavailable) as raised:
            await kube.get("/api/v1/namespaces/default")
        assert raised.value.detail == "Kubernetes API unreachable"

    _run(configuration, call)


@pytest.mark.filterwarnings("ignore:Unverified HTTPS request")  # urllib3, of verify_ssl off
def test_without_verifying_the_server_it_is_still_the_same_identity(cluster: Cluster) -> None:
    """insecure-skip-tls-verify with a client certificate (kubeconfigs of dev clusters):
    the threads' client still presents the certificate, so the loop's must, or it would
    speak as system:anonymous and every call would be refused."""
    threads = Kube(load_api_client(str(cluster.kubeconfig), 1))
    configuration = threads.api.configuration
    assert configuration.cert_file  # the admin kubeconfig authenticates by certificate
    configuration.verify_ssl = False
    threads = Kube(client.ApiClient(configuration))
    try:
        expected = threads.get("/api/v1/namespaces/default")["metadata"]["uid"]
        seen = _run(configuration, lambda kube: kube.get("/api/v1/namespaces/default"))
        assert seen["metadata"]["uid"] == expected
    finally:
        threads.api.close()


def test_a_token_request_answers_with_the_lifetime_it_gave(
    cluster: Cluster, make_namespace: Any
) -> None:
    """pooltokens judges a token minted ahead by the lifetime in the answer's spec (what
    the API server gave it, shortened if it caps lifetimes), counted by nsprov's clock:
    the API server answers with the request, its expirationSeconds as granted."""
    from nsprov.api.pooltokens import PoolTokens
    from nsprov.core.namespacecache import ReadYourWrites

    namespace = make_namespace()
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_service_account(
        namespace, {"metadata": {"name": "namespace-provisioner"}}
    )
    kube = Kube(load_api_client(str(cluster.kubeconfig), 1))

    class _Nothing:
        def synced(self) -> bool:
            return True

        def items(self) -> list[dict[str, Any]]:
            return []

        def get(self, name: str) -> None:
            return None

    tokens = PoolTokens(kube, ReadYourWrites(_Nothing()), ttls=dict)  # type: ignore[arg-type]
    try:
        before = time.time()
        tokens._mint(namespace, 1800.0)
        after = time.time()
        minted = tokens._tokens[namespace]
        assert (minted.asked, minted.given) == (1860, 1860)
        assert minted.ends is not None
        assert before + 1860 - 1 <= minted.ends[0] <= minted.ends[1] <= after + 1860
    finally:
        kube.api.close()
