"""Keyless CI: nsprov admits OIDC ID tokens of a loopback issuer by the policy's tenant rules.

Two loopback issuers stand in for GitHub's and GitLab's (real HTTPS servers with
discovery, JWKS and rotating keys); nsprov runs as a real process with a policy
file and fetches their keys over TLS like it would fetch GitHub's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from tests.integration.conftest import Cluster, live_managed_namespaces
from tests.integration.service import RunningService, metric, problem, running_service
from tests.oidc_issuer import LoopbackIssuer, new_key
from tests.support import wait_until

pytestmark = pytest.mark.usefixtures("grants", "clean_namespaces")


def github_claims(repository: str = "acme/web-app", ref: str = "refs/heads/main") -> dict[str, Any]:
    """Claims shaped like a GitHub Actions ID token's."""
    owner = repository.split("/")[0]
    return {
        "sub": f"repo:{repository}:ref:{ref}",
        "repository": repository,
        "repository_owner": owner,
        "ref": ref,
        "ref_type": "branch",
        "workflow": "CI",
        "run_id": "4242",
        "run_attempt": "1",
        "actor": "octocat",
        "event_name": "push",
        "job_workflow_ref": f"{repository}/.github/workflows/ci.yml@{ref}",
    }


def gitlab_claims(project: str = "platform/api", protected: str = "true") -> dict[str, Any]:
    """Claims shaped like a GitLab CI ID token's."""
    return {
        "sub": f"project_path:{project}:ref_type:branch:ref:main",
        "namespace_path": project.split("/")[0],
        "project_path": project,
        "ref": "main",
        "ref_type": "branch",
        "ref_protected": protected,
        "pipeline_id": "777",
        "job_id": "9001",
        "user_login": "alice",
    }


def _policy(github: LoopbackIssuer, gitlab: LoopbackIssuer) -> str:
    return f"""
issuers:
  - {{name: github, issuer: "{github.url}", audience: nsprov, caFile: "{github.ca_file}"}}
  - {{name: gitlab, issuer: "{gitlab.url}", audience: nsprov, caFile: "{gitlab.ca_file}"}}
tenants:
  - name: web
    match:
      issuer: github
      claims: {{repository_owner: acme, repository: "acme/web-*", ref: refs/heads/main}}
    owner: "github:{{repository}}"
  - name: platform
    match:
      issuer: gitlab
      claims: {{namespace_path: platform, ref_protected: "true"}}
    owner: "gitlab:{{project_path}}"
  - name: legacy
    match: {{token: alice}}
"""


@pytest.fixture(scope="module")
def github() -> Iterator[LoopbackIssuer]:
    with LoopbackIssuer() as issuer:
        yield issuer


@pytest.fixture(scope="module")
def gitlab() -> Iterator[LoopbackIssuer]:
    with LoopbackIssuer() as issuer:
        yield issuer


@pytest.fixture(scope="module")
def policy_file(
    github: LoopbackIssuer, gitlab: LoopbackIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(_policy(github, gitlab))
    return path


@pytest.fixture(scope="module")
def service(
    cluster: Cluster, grants: None, policy_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    workdir = tmp_path_factory.mktemp("nsprov-oidc")
    with running_service(
        cluster.kubeconfig, workdir, [f"--policy-file={policy_file}", "--controller=false"]
    ) as running:
        yield running


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _create(service: RunningService, token: str) -> httpx.Response:
    with service.client() as http:
        return http.post("/api/v1/namespaces", params={"ttl": "10m"}, headers=_bearer(token))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    head, payload, signature = token.split(".")

    def decode(s: str) -> Any:
        return json.loads(base64.urlsafe_b64decode(s + "==="))

    return decode(head), decode(payload), signature


def _reassemble(header: dict[str, Any], payload: dict[str, Any], signature: str) -> str:
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(payload).encode()),
                     signature])  # fmt: skip


# ---- the attacker's tokens first ----------------------------------------------------------


def _expired(issuer: LoopbackIssuer) -> str:
    now = int(time.time())
    return issuer.mint({**github_claims(), "iat": now - 900, "nbf": now - 900, "exp": now - 300})


def _not_yet_valid(issuer: LoopbackIssuer) -> str:
    now = int(time.time())
    return issuer.mint({**github_claims(), "nbf": now + 300, "exp": now + 900})


def _wrong_issuer(issuer: LoopbackIssuer) -> str:
    return issuer.mint({**github_claims(), "iss": "https://token.actions.example.com"})


def _wrong_audience(issuer: LoopbackIssuer) -> str:
    return issuer.mint({**github_claims(), "aud": "https://github.com/acme"})


def _unknown_kid_unknown_issuer(issuer: LoopbackIssuer) -> str:
    stranger = new_key("RS256")
    return issuer.mint({**github_claims(), "iss": "https://attacker.example"}, key=stranger)


def _unpublished_key(issuer: LoopbackIssuer) -> str:
    # A trusted iss, but signed with a key the issuer never published.
    return issuer.mint(github_claims(), key=new_key("RS256"))


def _alg_none(issuer: LoopbackIssuer) -> str:
    header, payload, _ = _segments(issuer.mint(github_claims()))
    return _reassemble({**header, "alg": "none"}, payload, "")


def _hs256_with_public_key(issuer: LoopbackIssuer) -> str:
    key = issuer.key(alg="RS256")
    header, payload, _ = _segments(issuer.mint(github_claims(), kid=key.kid))
    head = _b64(json.dumps({**header, "alg": "HS256"}).encode())
    body = _b64(json.dumps(payload).encode())
    mac = hmac.new(key.public_pem(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def _tampered(issuer: LoopbackIssuer) -> str:
    # Signed for acme/other (no tenant), then edited to claim acme/web-app.
    header, payload, signature = _segments(issuer.mint(github_claims("acme/other")))
    return _reassemble(header, {**payload, **github_claims()}, signature)


def _missing_exp(issuer: LoopbackIssuer) -> str:
    return issuer.mint({**github_claims(), "exp": None})


def _huge(issuer: LoopbackIssuer) -> str:
    return issuer.mint({**github_claims(), "padding": "x" * 100_000})


def _nested_header(issuer: LoopbackIssuer) -> str:
    # ~12 KiB (under the 16 KiB bound) of "[[[[...": deeper than the JSON parser recurses.
    return f"{_b64(b'[' * 9000)}.e30.c2ln"


def _nested_payload(issuer: LoopbackIssuer) -> str:
    head = _b64(json.dumps({"alg": "RS256", "kid": issuer.key(alg="RS256").kid}).encode())
    return f"{head}.{_b64(b'[' * 9000)}.c2ln"


BAD_TOKENS: dict[str, tuple[Callable[[LoopbackIssuer], str], str]] = {
    "expired": (_expired, "expired"),
    "not yet valid": (_not_yet_valid, "not valid yet"),
    "wrong iss": (_wrong_issuer, "issuer 'https://token.actions.example.com' is not trusted"),
    "wrong aud": (_wrong_audience, "audience"),
    "unknown kid, unknown issuer": (_unknown_kid_unknown_issuer, "is not trusted"),
    "key the issuer never published": (_unpublished_key, "does not publish"),
    "alg none": (_alg_none, "algorithm 'none' is not accepted"),
    "HS256 with the public key": (_hs256_with_public_key, "algorithm 'HS256' is not accepted"),
    "tampered payload": (_tampered, "signature does not verify"),
    "missing exp": (_missing_exp, "lacks the required claim 'exp'"),
    "header nested 9000 deep": (_nested_header, "invalid token"),
    "payload nested 9000 deep": (_nested_payload, "malformed token"),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_bad_tokens_are_401_and_create_nothing(
    case: str, service: RunningService, github: LoopbackIssuer, core: client.CoreV1Api
) -> None:
    make, expected = BAD_TOKENS[case]
    token = make(github)
    response = _create(service, token)
    body = problem(response, 401)
    assert expected in body["detail"], body
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert token not in response.text
    signature = token.split(".")[-1]
    assert not signature or signature not in body["detail"]
    assert live_managed_namespaces(core) == []


def test_a_100_kb_token_is_431_before_anything_parses_it(
    service: RunningService, github: LoopbackIssuer, core: client.CoreV1Api
) -> None:
    """Above the request head limit (16 KiB), the HTTP layer answers: no JWT code runs."""
    token = _huge(github)
    response = _create(service, token)
    assert response.status_code == 431, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "larger than 16384 bytes" in response.json()["detail"]
    assert "token" in response.json()["detail"]
    assert token not in response.text
    assert live_managed_namespaces(core) == []


# ---- tenants ------------------------------------------------------------------------------


def test_a_github_workflow_of_an_admitted_repository_gets_a_namespace(
    service: RunningService, github: LoopbackIssuer, core: client.CoreV1Api
) -> None:
    response = _create(service, github.mint(github_claims("acme/web-app")))
    assert response.status_code == 201, response.text
    name = response.headers["x-namespace"]
    annotations = core.read_namespace(name).metadata.annotations
    assert annotations["nsprov.io/owner"] == "github:acme/web-app"
    assert annotations["nsprov.io/tenant"] == "web"
    requested_by = json.loads(annotations["nsprov.io/requested-by"])
    assert requested_by == {
        "iss": github.url,
        "sub": "repo:acme/web-app:ref:refs/heads/main",
        "repository": "acme/web-app",
        "ref": "refs/heads/main",
        "workflow": "CI",
        "run_id": "4242",
        "run_attempt": "1",
        "actor": "octocat",
    }
    line = wait_until(
        lambda: [ln for ln in service.log().splitlines() if f"provisioned namespace={name} " in ln],
        timeout=5,
    )[0]
    assert "owner=github:acme/web-app" in line
    assert "tenant=web" in line
    assert annotations["nsprov.io/requested-by"] in line


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        (github_claims("acme/web-app", "refs/heads/feature"), "ref='refs/heads/feature'"),
        (github_claims("acme/api"), "repository='acme/api'"),
        (github_claims("evil/web-app"), "repository_owner='evil'"),
    ],
)
def test_a_workflow_no_tenant_admits_is_403_naming_the_claims(
    claims: dict[str, Any],
    why: str,
    service: RunningService,
    github: LoopbackIssuer,
    core: client.CoreV1Api,
) -> None:
    token = github.mint(claims)
    body = problem(_create(service, token), 403)
    assert "no tenant admits this identity" in body["detail"]
    assert why in body["detail"]
    assert token not in json.dumps(body)
    assert live_managed_namespaces(core) == []


def test_gitlab_pipelines_are_admitted_by_their_own_tenant(
    service: RunningService, gitlab: LoopbackIssuer, github: LoopbackIssuer, core: client.CoreV1Api
) -> None:
    response = _create(service, gitlab.mint(gitlab_claims("platform/api")))
    assert response.status_code == 201, response.text
    annotations = core.read_namespace(response.headers["x-namespace"]).metadata.annotations
    assert annotations["nsprov.io/owner"] == "gitlab:platform/api"
    assert annotations["nsprov.io/tenant"] == "platform"
    requested_by = json.loads(annotations["nsprov.io/requested-by"])
    assert requested_by["pipeline_id"] == "777"
    assert requested_by["job_id"] == "9001"
    assert requested_by["user_login"] == "alice"
    assert requested_by["project_path"] == "platform/api"
    # An unprotected ref is refused; so is a GitLab-shaped token signed by the GitHub issuer
    # (its iss routes it to GitHub's tenants only).
    problem(_create(service, gitlab.mint(gitlab_claims(protected="false"))), 403)
    problem(_create(service, github.mint(gitlab_claims())), 403)


def test_static_tokens_need_a_tenant_too(service: RunningService, core: client.CoreV1Api) -> None:
    response = _create(service, service.tokens["alice"])
    assert response.status_code == 201, response.text
    annotations = core.read_namespace(response.headers["x-namespace"]).metadata.annotations
    assert annotations["nsprov.io/owner"] == "alice"
    assert annotations["nsprov.io/tenant"] == "legacy"
    assert json.loads(annotations["nsprov.io/requested-by"]) == {"token": "alice"}
    body = problem(_create(service, service.tokens["bob"]), 403)
    assert "token 'bob'" in body["detail"]


def test_one_repository_cannot_see_extend_or_delete_anothers_namespaces(
    service: RunningService, github: LoopbackIssuer, core: client.CoreV1Api
) -> None:
    a = _bearer(github.mint(github_claims("acme/web-a")))
    b = _bearer(github.mint(github_claims("acme/web-b")))
    with service.client() as http:
        created = http.post("/api/v1/namespaces", params={"ttl": "10m"}, headers=a)
        assert created.status_code == 201, created.text
        name = created.headers["x-namespace"]
        before = core.read_namespace(name).metadata.labels["nsprov.io/expires-at"]
        assert http.get("/api/v1/namespaces", headers=b).json()["items"] == []
        problem(http.get(f"/api/v1/namespaces/{name}", headers=b), 404)
        problem(http.patch(f"/api/v1/namespaces/{name}", params={"ttl": "1h"}, headers=b), 404)
        problem(http.delete(f"/api/v1/namespaces/{name}", headers=b), 404)
        # A static token cannot reach it either, whatever its name.
        problem(http.delete(f"/api/v1/namespaces/{name}", headers=_bearer(service.tokens["alice"])),
                404)  # fmt: skip
        namespace = core.read_namespace(name)
        assert namespace.metadata.deletion_timestamp is None
        assert namespace.metadata.labels["nsprov.io/expires-at"] == before
        # The owner itself can, with a fresh token of the same repository.
        mine = http.get("/api/v1/namespaces", headers=a).json()["items"]
        assert [item["name"] for item in mine] == [name]
        assert mine[0]["owner"] == "github:acme/web-a"
        again = _bearer(github.mint(github_claims("acme/web-a")))
        assert http.delete(f"/api/v1/namespaces/{name}", headers=again).status_code == 202


def test_a_rotated_key_is_picked_up_without_a_restart(
    service: RunningService, github: LoopbackIssuer
) -> None:
    old = github.mint(github_claims())
    assert _create(service, old).status_code == 201
    kid = github.rotate("ES256")  # the old keys are withdrawn
    fresh = github.mint(github_claims(), kid=kid)
    # Unknown kids refresh the keys at most every 10 s, so this may take that long.
    wait_until(lambda: _create(service, fresh).status_code == 201, timeout=15, interval=0.5,
               message="token signed with the rotated key admitted")  # fmt: skip
    # A token signed with a withdrawn key is refused once the keys were re-read.
    assert "does not publish" in problem(_create(service, old), 401)["detail"]


def test_the_github_shaped_token_endpoint_hands_out_admitted_tokens(
    service: RunningService, github: LoopbackIssuer
) -> None:
    github.id_token_claims = github_claims("acme/web-endpoint")
    with httpx.Client(verify=ssl.create_default_context(cafile=github.ca_file)) as http:
        refused = http.get(github.token_url, params={"audience": "nsprov"},
                           headers={"Authorization": "bearer wrong"})  # fmt: skip
        assert refused.status_code == 401
        answer = http.get(
            github.token_url + "&audience=nsprov",
            headers={"Authorization": f"bearer {github.request_token}"},
        )
    assert answer.status_code == 200
    token = answer.json()["value"]
    assert github.token_requests[-1] == "nsprov"
    response = _create(service, token)
    assert response.status_code == 201, response.text


def test_a_bad_policy_edit_keeps_the_last_good_policy(
    service: RunningService, github: LoopbackIssuer, policy_file: Path
) -> None:
    good = policy_file.read_text()
    errors = metric(service, 'nsprov_policy_reloads_total{result="error"}') or 0.0
    try:
        policy_file.write_text(good.replace("claims:", "claimz:", 1))
        ready = wait_until(
            lambda: (
                (r := httpx.get(f"{service.internal_url}/readyz").json())["policy"]["error"] and r
            ),
            timeout=5,
        )
        assert ready["ready"] is True
        assert "tenants[0].match: unknown key 'claimz'" in ready["policy"]["error"]
        assert metric(service, 'nsprov_policy_reloads_total{result="error"}') == errors + 1
        assert metric(service, "nsprov_policy_last_reload_successful") == 0
        assert "not reloaded, keeping the last good policy" in service.log()
        # The last good policy still admits and refuses as before.
        assert _create(service, github.mint(github_claims())).status_code == 201
        problem(_create(service, github.mint(github_claims("acme/api"))), 403)
    finally:
        policy_file.write_text(good + "\n")
    wait_until(
        lambda: httpx.get(f"{service.internal_url}/readyz").json()["policy"]["error"] is None,
        timeout=5,
    )
    assert metric(service, "nsprov_policy_last_reload_successful") == 1


def test_two_tenants_with_the_same_owner_never_share_namespaces(
    cluster: Cluster, github: LoopbackIssuer, core: client.CoreV1Api, tmp_path: Path
) -> None:
    """Main-branch and pull-request tenants of one repository render the same owner.

    The pull request's identity must not list, extend or delete what main made: the
    namespace records its tenant, and the tenant has to match too.
    """
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"""
issuers:
  - {{name: github, issuer: "{github.url}", audience: nsprov, caFile: "{github.ca_file}"}}
tenants:
  - name: main
    match: {{issuer: github, claims: {{repository: acme/web-app, ref: refs/heads/main}}}}
    owner: "github:{{repository}}"
  - name: pull-requests
    match: {{issuer: github, claims: {{repository: acme/web-app, ref: "refs/pull/**"}}}}
    owner: "github:{{repository}}"
"""
    )
    main = _bearer(github.mint(github_claims("acme/web-app")))
    pull = _bearer(github.mint(github_claims("acme/web-app", ref="refs/pull/7/merge")))
    args = [f"--policy-file={policy}", "--controller=false"]
    with running_service(cluster.kubeconfig, tmp_path, args) as service, service.client() as http:
        created = http.post("/api/v1/namespaces", params={"ttl": "10m"}, headers=main)
        assert created.status_code == 201, created.text
        name = created.headers["x-namespace"]
        assert core.read_namespace(name).metadata.annotations["nsprov.io/tenant"] == "main"
        assert http.get("/api/v1/namespaces", headers=pull).json()["items"] == []
        problem(http.get(f"/api/v1/namespaces/{name}", headers=pull), 404)
        problem(http.patch(f"/api/v1/namespaces/{name}", params={"ttl": "1h"}, headers=pull), 404)
        problem(http.delete(f"/api/v1/namespaces/{name}", headers=pull), 404)
        assert core.read_namespace(name).metadata.deletion_timestamp is None
        assert [
            i["name"] for i in http.get("/api/v1/namespaces", headers=main).json()["items"]
        ] == [name]
        assert http.delete(f"/api/v1/namespaces/{name}", headers=main).status_code == 202


def test_an_unreachable_issuer_is_a_503_that_keeps_its_network_to_itself(
    service: RunningService, policy_file: Path, tmp_path: Path
) -> None:
    # An issuer whose server is gone: its CA is still on disk, its port answers nothing.
    with LoopbackIssuer() as gone:
        ca = tmp_path / "gone-ca.crt"
        ca.write_bytes(gone.ca_file.read_bytes())
        token = gone.mint(github_claims())
    good = policy_file.read_text()
    trusting = good.replace(
        "issuers:\n",
        f'issuers:\n  - {{name: gone, issuer: "{gone.url}", audience: nsprov, caFile: "{ca}"}}\n',
        1,
    )
    try:
        policy_file.write_text(trusting)
        # The policy is re-read (at most once a second) when a request needs it.
        response = wait_until(
            lambda: (r := _create(service, token)).status_code == 503 and r,
            timeout=5,
            interval=0.2,
            message="the new issuer trusted",
        )
        body = problem(response, 503)
        assert body["detail"] == "issuer 'gone' keys unavailable"
        assert response.headers["retry-after"]
        for leak in (gone.url, "127.0.0.1", "https://", "Connection", "Errno"):
            assert leak not in response.text
        # The operator's log has the URL and the error, under the request's id.
        rid = body["requestId"]
        lines = wait_until(
            lambda: [
                ln
                for ln in service.log().splitlines()
                if "keys not refreshed" in ln and f"[{rid}]" in ln
            ],
            timeout=5,
        )
        assert f"{gone.url}/.well-known/openid-configuration unreachable" in lines[0]
    finally:
        policy_file.write_text(good + "\n")
    wait_until(lambda: _create(service, token).status_code == 401, timeout=5, interval=0.2,
               message="the policy restored")  # fmt: skip
