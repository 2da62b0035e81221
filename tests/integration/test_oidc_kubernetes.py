"""The control plane's own ServiceAccount issuer as a real OIDC issuer no one here wrote.

kube-apiserver issues ServiceAccount tokens as its own https URL and serves the
discovery document and JWKS there (tests/cluster/controlplane.py); nsprov runs
with exactly the RBAC of k8s/ (which includes ``tokenreviews create``) and a
policy that admits ServiceAccounts of ``nsprov-ci-*`` namespaces, with
``tokenReview: true`` so a token outliving its ServiceAccount is refused.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from tests.cluster.controlplane import ControlPlane
from tests.integration.conftest import Cluster, delete_namespaces, live_managed_namespaces
from tests.integration.service import RunningService, problem, running_service
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")

SERVICE_ACCOUNT = "builder"


def _service(
    issuer_discovery: ControlPlane,
    manifest_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    token_review: bool,
) -> Iterator[RunningService]:
    workdir = tmp_path_factory.mktemp("nsprov-k8s-oidc")
    policy = workdir / "policy.yaml"
    policy.write_text(f"""
issuers:
  - name: cluster
    issuer: "{issuer_discovery.server}"
    audience: nsprov
    caFile: "{issuer_discovery.pki.ca_cert}"
    tokenReview: {"true" if token_review else "false"}
tenants:
  - name: ci
    match:
      issuer: cluster
      claims: {{/kubernetes.io/namespace: "nsprov-ci-*"}}
    owner: "cluster:{{/kubernetes.io/namespace}}/{{/kubernetes.io/serviceaccount/name}}"
  - name: too-broad              # admits nsprov's own namespaces (np-*): nsprov must not
    match:
      issuer: cluster
      claims: {{/kubernetes.io/namespace: "np-*"}}
    owner: "cluster:{{/kubernetes.io/namespace}}/{{/kubernetes.io/serviceaccount/name}}"
""")
    with running_service(
        manifest_kubeconfig,
        workdir,
        [f"--policy-file={policy}", "--controller=false", "--leader-elect=false"],
    ) as running:
        yield running


@pytest.fixture(scope="module")
def service(
    cluster: Cluster,
    issuer_discovery: ControlPlane,
    manifest_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningService]:
    yield from _service(issuer_discovery, manifest_kubeconfig, tmp_path_factory, token_review=True)


@pytest.fixture(scope="module")
def unreviewed_service(
    cluster: Cluster,
    issuer_discovery: ControlPlane,
    manifest_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningService]:
    """The same policy, but the issuer trusted on its signature alone (no TokenReview)."""
    yield from _service(issuer_discovery, manifest_kubeconfig, tmp_path_factory, token_review=False)


@pytest.fixture
def service_account_token(core: client.CoreV1Api) -> Iterator[Callable[..., tuple[str, str]]]:
    """Make a namespace with a ServiceAccount; return (namespace, a token for audience nsprov)."""
    created: list[str] = []

    def make(prefix: str, audience: str = "nsprov") -> tuple[str, str]:
        name = f"{prefix}-{secrets.token_hex(4)}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        created.append(name)
        core.create_namespaced_service_account(
            name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=SERVICE_ACCOUNT))
        )
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[audience], expiration_seconds=600)
        )
        status = core.create_namespaced_service_account_token(SERVICE_ACCOUNT, name, request)
        return name, status.status.token

    yield make
    delete_namespaces(core, created)


def _create(service: RunningService, token: str) -> httpx.Response:
    with service.client() as http:
        return http.post(
            "/api/v1/namespaces",
            params={"ttl": "10m"},
            headers={"Authorization": f"Bearer {token}"},
        )


def test_a_service_account_of_an_admitted_namespace_gets_a_namespace(
    service: RunningService,
    service_account_token: Callable[..., tuple[str, str]],
    core: client.CoreV1Api,
    issuer_discovery: ControlPlane,
) -> None:
    namespace, token = service_account_token("nsprov-ci")
    response = _create(service, token)
    assert response.status_code == 201, response.text
    annotations = core.read_namespace(response.headers["x-namespace"]).metadata.annotations
    assert annotations["nsprov.io/owner"] == f"cluster:{namespace}/{SERVICE_ACCOUNT}"
    assert annotations["nsprov.io/tenant"] == "ci"
    requested_by = json.loads(annotations["nsprov.io/requested-by"])
    assert requested_by == {
        "iss": issuer_discovery.server,
        "sub": f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}",
    }


def test_a_service_account_of_another_namespace_is_403(
    service: RunningService,
    service_account_token: Callable[..., tuple[str, str]],
    core: client.CoreV1Api,
) -> None:
    namespace, token = service_account_token("nsprov-other")
    body = problem(_create(service, token), 403)
    assert "/kubernetes.io/namespace=" + repr(namespace) in body["detail"]
    assert live_managed_namespaces(core) == []


def test_a_token_for_another_audience_is_401(
    service: RunningService,
    service_account_token: Callable[..., tuple[str, str]],
    core: client.CoreV1Api,
    issuer_discovery: ControlPlane,
) -> None:
    # The API server's own audience: what the tokens in nsprov's kubeconfigs carry.
    _, token = service_account_token("nsprov-ci", audience=issuer_discovery.server)
    assert "audience" in problem(_create(service, token), 401)["detail"]
    assert live_managed_namespaces(core) == []


def test_a_token_of_a_deleted_service_account_is_refused(
    service: RunningService,
    service_account_token: Callable[..., tuple[str, str]],
    core: client.CoreV1Api,
) -> None:
    namespace, token = service_account_token("nsprov-ci")
    first = _create(service, token)
    assert first.status_code == 201, first.text
    core.delete_namespaced_service_account(SERVICE_ACCOUNT, namespace)
    # The signature still verifies; only the TokenReview knows the ServiceAccount is gone.
    # kube-apiserver caches a successful token authentication for 10 s, so the refusal
    # may take that long; a read (GET) probes it without creating anything.
    headers = {"Authorization": f"Bearer {token}"}
    with service.client() as http:
        wait_until(
            lambda: http.get("/api/v1/namespaces", headers=headers).status_code == 401,
            timeout=15,
            interval=0.5,
            message="token of the deleted ServiceAccount refused",
        )
    assert "revoked" in problem(_create(service, token), 401)["detail"]
    assert live_managed_namespaces(core) == [first.headers["x-namespace"]]


def test_a_service_account_of_a_namespace_nsprov_made_cannot_provision(
    service: RunningService,
    service_account_token: Callable[..., tuple[str, str]],
    core: client.CoreV1Api,
) -> None:
    """A tenant that can run pods can mint its own ServiceAccount tokens, for any audience.

    Even under a tenant glob that admits it, a namespace nsprov provisioned never
    provisions the next one (that would escape the caps and the lifetime limit); a
    namespace of the same shape that nsprov did not make is admitted.
    """
    _, token = service_account_token("nsprov-ci")
    created = _create(service, token)
    assert created.status_code == 201, created.text
    provisioned = created.headers["x-namespace"]
    core.create_namespaced_service_account(
        provisioned, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=SERVICE_ACCOUNT))
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=["nsprov"], expiration_seconds=600)
    )
    inner = core.create_namespaced_service_account_token(SERVICE_ACCOUNT, provisioned, request)
    body = problem(_create(service, inner.status.token), 403)
    assert "cannot provision namespaces" in body["detail"]
    assert live_managed_namespaces(core) == [provisioned]
    # The same glob admits a namespace of that shape that nsprov did not make.
    _, lookalike = service_account_token("np-lookalike")
    assert _create(service, lookalike).status_code == 201


def test_without_token_review_a_provisioned_namespace_still_cannot_provision(
    unreviewed_service: RunningService,
    service_account_token: Callable[..., tuple[str, str]],
    core: client.CoreV1Api,
) -> None:
    """The attack of issue 19: with ``tokenReview`` off, a pod in a provisioned namespace
    got a child namespace (201) with a new owner and a fresh lifetime."""
    _, token = service_account_token("nsprov-ci")
    created = _create(unreviewed_service, token)
    assert created.status_code == 201, created.text
    provisioned = created.headers["x-namespace"]
    core.create_namespaced_service_account(
        provisioned, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=SERVICE_ACCOUNT))
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=["nsprov"], expiration_seconds=600)
    )
    inner = core.create_namespaced_service_account_token(SERVICE_ACCOUNT, provisioned, request)
    body = problem(_create(unreviewed_service, inner.status.token), 403)
    assert f"namespace {provisioned!r}, which nsprov provisioned" in body["detail"]
    assert "cannot provision namespaces" in body["detail"]
    assert live_managed_namespaces(core) == [provisioned]


def test_a_token_of_a_provisioned_namespace_cannot_provision_once_that_namespace_is_gone(
    unreviewed_service: RunningService,
    service_account_token: Callable[..., tuple[str, str]],
    core: client.CoreV1Api,
) -> None:
    """Review finding: the refusal asks the API server whether the token's namespace is one
    nsprov provisioned, and a namespace that is gone (404) is not. A job keeps a token its
    pod was given (a projected token may ask for any audience and, with no
    --service-account-max-token-expiration, years of life) and, once its namespace has
    expired, provisions with it: a new owner and a fresh lifetime, outside its tenant's caps
    and maxLifetime, for as long as the token's exp allows. A token whose namespace is gone
    is dead anyway (its ServiceAccount went with it): it should be refused."""
    _, token = service_account_token("nsprov-ci")
    created = _create(unreviewed_service, token)
    assert created.status_code == 201, created.text
    provisioned = created.headers["x-namespace"]
    core.create_namespaced_service_account(
        provisioned, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=SERVICE_ACCOUNT))
    )
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=["nsprov"], expiration_seconds=3600)
    )
    inner = core.create_namespaced_service_account_token(SERVICE_ACCOUNT, provisioned, request)
    problem(_create(unreviewed_service, inner.status.token), 403)  # refused while it lives
    delete_namespaces(core, [provisioned])

    def gone() -> bool:
        try:
            core.read_namespace(provisioned)
        except client.exceptions.ApiException as exc:
            return exc.status == 404
        return False

    wait_until(gone, timeout=90, interval=0.5, message=f"{provisioned} gone")
    after = _create(unreviewed_service, inner.status.token)
    assert after.status_code in (401, 403), (
        f"{after.status_code}: the dead namespace {provisioned}'s token provisioned "
        f"{after.headers.get('x-namespace')}"
    )
