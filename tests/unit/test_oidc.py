"""ID-token verification against a real HTTPS issuer on loopback (no cluster needed)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from nsprov.core.errors import Forbidden, IssuerUnavailable, Unauthorized
from nsprov.identity import oidc
from nsprov.identity.authenticator import looks_like_jwt
from nsprov.identity.oidc import IssuerKeys, Verifier, fetch_json
from nsprov.policy.file import parse_policy
from nsprov.policy.model import Policy
from tests.oidc_issuer import LoopbackIssuer, new_key
from tests.support import wait_until

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


def test_an_unreachable_issuer_is_a_503_not_a_401(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with LoopbackIssuer() as issuer:
        (tmp_path / "ca.crt").write_bytes(issuer.ca_file.read_bytes())
        policy = parse_policy(
            f"issuers: [{{name: gh, issuer: '{issuer.url}', audience: nsprov, caFile: ca.crt}}]",
            tmp_path,
        )
        token = issuer.mint(GITHUB)
    with (
        caplog.at_level(logging.WARNING, "nsprov.oidc"),
        pytest.raises(IssuerUnavailable) as raised,
    ):
        Verifier().verify(token, policy)
    # The caller learns which issuer, not our network: no URL, address or socket error.
    assert raised.value.detail == "issuer 'gh' keys unavailable"
    # The operator gets all of it in the log.
    assert f"{issuer.url}/.well-known/openid-configuration unreachable" in caplog.text
    assert "ConnectionRefusedError" in caplog.text


def _forged(issuer: LoopbackIssuer, kid: str) -> str:
    good = issuer.mint(GITHUB).split(".")
    return ".".join([_b64(json.dumps({"alg": "RS256", "kid": kid}).encode()), good[1], good[2]])


def test_a_slow_refresh_holds_no_caller_and_runs_once_per_interval() -> None:
    # A JWKS that takes 3 s to arrive, a refresh interval of 1 s, and a flood of made-up
    # kids: one request fetches, the others are refused while it is still fetching (they
    # neither queue behind it nor start another fetch when it ends), and known keys keep
    # working meanwhile.
    with LoopbackIssuer() as issuer:
        verifier = Verifier(refresh_interval=1.0)
        policy = _policy(issuer)
        verifier.verify(issuer.mint(GITHUB), policy)
        before = issuer.jwks_requests
        issuer.jwks_delay = 3.0

        def outcome(token: str) -> str:
            try:
                verifier.verify(token, policy)
            except Unauthorized as exc:
                return exc.detail
            return "ok"

        with ThreadPoolExecutor(max_workers=12) as pool:
            time.sleep(1.0)  # the interval since the first fetch passes: a refresh is allowed
            first = pool.submit(outcome, _forged(issuer, "made-up-first"))
            wait_until(lambda: issuer.jwks_requests == before + 1, timeout=5)
            flood = [pool.submit(outcome, _forged(issuer, f"made-up-{i}")) for i in range(10)]
            known = pool.submit(outcome, issuer.mint(GITHUB))
            for future in flood:
                assert "does not publish" in future.result()
            assert known.result() == "ok"
            assert not first.done(), "a caller waited for another request's refresh"
            assert "does not publish" in first.result()
        # Right after the slow fetch ended, the interval counts from its end: no new fetch.
        issuer.jwks_delay = 0.0
        with pytest.raises(Unauthorized, match="does not publish"):
            verifier.verify(_forged(issuer, "made-up-after"), policy)
        assert issuer.jwks_requests == before + 1


def test_a_fetch_has_a_total_deadline(
    issuer: LoopbackIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each piece of the answer comes well within the per-read timeout; the whole does not.
    monkeypatch.setattr(oidc, "FETCH_DEADLINE", 1.0)
    issuer.jwks_delay = 4.0
    try:
        started = time.monotonic()
        with pytest.raises(IssuerUnavailable, match="did not answer within 1 s"):
            fetch_json(f"{issuer.url}/jwks", str(issuer.ca_file))
        assert time.monotonic() - started < 2.5
    finally:
        issuer.jwks_delay = 0.0


def test_keys_not_refreshed_for_a_day_are_refused(issuer: LoopbackIssuer) -> None:
    now = [0.0]
    answers: list[Any] = [issuer.jwks()]

    def fetch(url: str, ca_file: str | None) -> dict[str, Any]:
        if not answers:
            raise IssuerUnavailable(f"{url} unreachable")
        answer: dict[str, Any] = answers.pop()
        return answer

    trusted = parse_policy(
        f"issuers: [{{name: gh, issuer: '{issuer.url}', audience: nsprov, "
        f"jwksUri: '{issuer.url}/jwks'}}]"
    ).issuers[0]
    keys = IssuerKeys(trusted, fetch=fetch, clock=lambda: now[0])
    kid = issuer.key(alg="RS256").kid
    assert keys.signing_key(kid, "RS256")
    # The issuer goes away: cached keys are served while they are less than a day old...
    now[0] = oidc.KEYS_MAX_STALENESS - 60
    assert keys.signing_key(kid, "RS256")
    # ... and refused after: an issuer that withdrew a leaked key must win eventually.
    now[0] = oidc.KEYS_MAX_STALENESS + 60
    with pytest.raises(IssuerUnavailable, match="issuer 'gh' keys unavailable"):
        keys.signing_key(kid, "RS256")
    # Once the issuer answers again, its keys are used again.
    answers.append(issuer.jwks())
    now[0] += oidc.REFRESH_INTERVAL
    assert keys.signing_key(kid, "RS256")


def test_deeply_nested_json_in_a_token_is_a_401_not_a_crash(issuer: LoopbackIssuer) -> None:
    # ~12 KiB fits under the 16 KiB bound, and nests far deeper than the JSON parser recurses.
    nested = _b64(b"[" * 9000)
    policy = _policy(issuer)
    assert not looks_like_jwt(f"{nested}.e30.sig")
    with pytest.raises(Unauthorized, match="header is longer than 4096 bytes"):
        Verifier().verify(f"{nested}.e30.sig", policy)
    head = _b64(b'{"alg":"RS256"}')
    with pytest.raises(Unauthorized, match="malformed token"):
        Verifier().verify(f"{head}.{nested}.sig", policy)
    # A header under the bound that still nests too deep for the parser.
    deep = _b64(b"[" * 3000)
    assert not looks_like_jwt(f"{deep}.e30.sig")
    with pytest.raises(Unauthorized, match="malformed token"):
        Verifier().verify(f"{deep}.e30.sig", policy)


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


def test_while_an_issuers_first_keys_are_on_their_way_others_get_a_503_at_once(
    issuer: LoopbackIssuer,
) -> None:
    arrived = threading.Event()
    release = threading.Event()

    def fetch(url: str, ca_file: str | None) -> dict[str, Any]:
        arrived.set()
        release.wait(10)
        return issuer.jwks()

    trusted = parse_policy(
        f"issuers: [{{name: gh, issuer: '{issuer.url}', audience: nsprov, "
        f"jwksUri: '{issuer.url}/jwks'}}]"
    ).issuers[0]
    keys = IssuerKeys(trusted, fetch=fetch)
    kid = issuer.key(alg="RS256").kid
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(keys.signing_key, kid, "RS256")
        assert arrived.wait(5)
        try:
            with pytest.raises(IssuerUnavailable, match="issuer 'gh' keys unavailable"):
                keys.signing_key(kid, "RS256")
        finally:
            release.set()
        assert first.result(timeout=5)
    assert keys.signing_key(kid, "RS256")


def test_a_key_parsed_from_a_replaced_jwk_is_not_served_for_the_new_one(
    issuer: LoopbackIssuer,
) -> None:
    # Readers take no lock: one may parse a JWK it read just before a refresh replaced it.
    # Here the issuer reused the kid for new key material; the new key must win.
    old = issuer.key(alg="RS256").public_jwk()
    replacement = {**new_key("RS256").public_jwk(), "kid": old["kid"]}
    answers = [{"keys": [replacement]}, {"keys": [old]}]
    trusted = parse_policy(
        f"issuers: [{{name: gh, issuer: '{issuer.url}', audience: nsprov, "
        f"jwksUri: '{issuer.url}/jwks'}}]"
    ).issuers[0]
    keys = IssuerKeys(trusted, fetch=lambda url, ca: answers.pop(), refresh_interval=0)
    keys.signing_key(old["kid"], "RS256")
    keys._refresh()  # the key material behind the kid changes
    keys._parse(old["kid"], old, "RS256")  # a reader that read the old JWK, parsing late
    served = keys.signing_key(old["kid"], "RS256")
    assert served.key.public_numbers().n == int.from_bytes(
        base64.urlsafe_b64decode(replacement["n"] + "=="), "big"
    )


def test_the_namespaces_a_token_names() -> None:
    bound = {
        "sub": "system:serviceaccount:np-a:builder",
        "kubernetes.io": {"namespace": "np-a", "serviceaccount": {"name": "builder"}},
    }
    assert oidc.kubernetes_namespaces(bound) == {"np-a"}
    legacy = {"sub": "x", "kubernetes.io/serviceaccount/namespace": "np-b"}
    assert oidc.kubernetes_namespaces(legacy) == {"np-b"}
    assert oidc.kubernetes_namespaces({"sub": "system:serviceaccount:np-c:sa"}) == {"np-c"}
    assert oidc.kubernetes_namespaces(GITHUB) == set()
    assert oidc.kubernetes_namespaces({"kubernetes.io": {"namespace": 7}, "sub": "x"}) == set()


def test_a_token_of_a_provisioned_namespace_is_403_without_a_token_review(
    issuer: LoopbackIssuer,
) -> None:
    """The refusal does not depend on ``tokenReview``: the claims alone name the namespace."""
    asked: list[str] = []

    def refusal(namespace: str, iss: str) -> str | None:
        asked.append(namespace)
        return "which nsprov provisioned" if namespace == "np-made" else None

    verifier = Verifier(namespace_refusal=refusal)
    inner = {
        "sub": "system:serviceaccount:np-made:builder",
        "kubernetes.io": {"namespace": "np-made"},
    }
    with pytest.raises(Forbidden, match="'np-made', which nsprov provisioned"):
        verifier.verify(issuer.mint(inner), _policy(issuer))
    outer = {"sub": "system:serviceaccount:ci:builder", "kubernetes.io": {"namespace": "ci"}}
    assert verifier.verify(issuer.mint(outer), _policy(issuer))[1]["sub"].endswith(":ci:builder")
    verifier.verify(issuer.mint(GITHUB), _policy(issuer))
    assert asked == ["np-made", "ci"]
