"""ID-token verification against a real HTTPS issuer on loopback (no cluster needed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nsprov.errors import IssuerUnavailable, Unauthorized
from nsprov.oidc import Verifier, looks_like_jwt
from nsprov.policy import Policy
from nsprov.policyfile import parse_policy
from tests.oidc_issuer import LoopbackIssuer

GITHUB = {"sub": "repo:acme/web:ref:refs/heads/main", "repository": "acme/web"}


@pytest.fixture(scope="module")
def issuer() -> Iterator[LoopbackIssuer]:
    with LoopbackIssuer() as running:
        yield running


def _policy(issuer: LoopbackIssuer) -> Policy:
    return parse_policy(
        f"issuers: [{{name: gh, issuer: '{issuer.url}', audience: nsprov, "
        f"caFile: '{issuer.ca_file}'}}]"
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_good_token_yields_its_claims_with_rsa_and_ec_keys(issuer: LoopbackIssuer) -> None:
    verifier = Verifier()
    for alg in ("RS256", "ES256"):
        trusted, claims = verifier.verify(issuer.mint(GITHUB, alg=alg), _policy(issuer))
        assert trusted.name == "gh"
        assert claims["repository"] == "acme/web"


def test_keys_are_cached(issuer: LoopbackIssuer) -> None:
    verifier = Verifier()
    before = issuer.jwks_requests
    for _ in range(5):
        verifier.verify(issuer.mint(GITHUB), _policy(issuer))
    assert issuer.jwks_requests == before + 1


def test_a_flood_of_unknown_kids_costs_the_issuer_one_fetch(issuer: LoopbackIssuer) -> None:
    verifier = Verifier(refresh_interval=60)
    policy = _policy(issuer)
    verifier.verify(issuer.mint(GITHUB), policy)
    before = issuer.jwks_requests
    header = {"alg": "RS256", "kid": "made-up-0"}
    good = issuer.mint(GITHUB).split(".")
    for i in range(50):
        header["kid"] = f"made-up-{i}"
        forged = ".".join([_b64(json.dumps(header).encode()), good[1], good[2]])
        with pytest.raises(Unauthorized, match="does not publish"):
            verifier.verify(forged, policy)
    assert issuer.jwks_requests - before <= 1


def test_a_rotated_key_is_fetched_once_the_interval_allows(issuer: LoopbackIssuer) -> None:
    verifier = Verifier(refresh_interval=0)
    policy = _policy(issuer)
    verifier.verify(issuer.mint(GITHUB), policy)
    kid = issuer.rotate("ES256", keep_old=True)
    _, claims = verifier.verify(issuer.mint(GITHUB, kid=kid), policy)
    assert claims["sub"] == GITHUB["sub"]


def test_algorithm_confusion_is_refused_before_any_key_is_used(issuer: LoopbackIssuer) -> None:
    verifier = Verifier()
    policy = _policy(issuer)
    key = issuer.key(alg="RS256")
    payload = _b64(json.dumps(issuer.claims(GITHUB)).encode())
    for alg in ("HS256", "none", "RS1"):
        head = _b64(json.dumps({"alg": alg, "kid": key.kid}).encode())
        signature = hmac.new(key.public_pem(), f"{head}.{payload}".encode(), hashlib.sha256)
        token = f"{head}.{payload}.{_b64(signature.digest()) if alg == 'HS256' else ''}"
        with pytest.raises(Unauthorized, match="is not accepted"):
            verifier.verify(token, policy)
    # An RSA key used with an EC algorithm name is refused too.
    head = _b64(json.dumps({"alg": "ES256", "kid": key.kid}).encode())
    with pytest.raises(Unauthorized, match="does not fit"):
        verifier.verify(f"{head}.{payload}.AAAA", policy)


def test_an_unreachable_issuer_is_a_503_not_a_401(tmp_path: Path) -> None:
    with LoopbackIssuer() as issuer:
        (tmp_path / "ca.crt").write_bytes(issuer.ca_file.read_bytes())
        policy = parse_policy(
            f"issuers: [{{name: gh, issuer: '{issuer.url}', audience: nsprov, caFile: ca.crt}}]",
            tmp_path,
        )
        token = issuer.mint(GITHUB)
    with pytest.raises(IssuerUnavailable, match="unreachable"):
        Verifier().verify(token, policy)


def test_discovery_must_name_the_issuer_exactly(issuer: LoopbackIssuer) -> None:
    policy = parse_policy(
        f"issuers: [{{name: gh, issuer: '{issuer.url}/', audience: nsprov, "
        f"caFile: '{issuer.ca_file}'}}]"
    )
    token = issuer.mint({**GITHUB, "iss": f"{issuer.url}/"})
    with pytest.raises(IssuerUnavailable):
        Verifier().verify(token, policy)


def test_tls_is_verified_against_the_ca_file(issuer: LoopbackIssuer) -> None:
    policy = parse_policy(f"issuers: [{{name: gh, issuer: '{issuer.url}', audience: nsprov}}]")
    with pytest.raises(IssuerUnavailable):
        Verifier().verify(issuer.mint(GITHUB), policy)


def test_what_looks_like_a_jwt() -> None:
    assert looks_like_jwt(_b64(b'{"alg":"RS256"}') + ".e30.sig")
    assert not looks_like_jwt("0123456789abcdef0123")
    assert not looks_like_jwt("a.b.c")
    assert not looks_like_jwt(_b64(b"[1]") + ".e30.sig")
