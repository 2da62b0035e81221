"""Which credential wins, and what a Caller records (no cluster: static tokens and policy only)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from nsprov.auth import TokenStore
from nsprov.errors import Forbidden, Unauthorized
from nsprov.identity import Authenticator, Caller, audit_claims
from nsprov.policyfile import PolicyFile

# A static secret that happens to have the shape of a JWT.
JWT_SHAPED = (
    base64.urlsafe_b64encode(b'{"alg":"RS256"}').rstrip(b"=").decode() + ".e30.c2lnbmF0dXJl"
)


def _run(authenticator: Authenticator, token: str) -> Caller:
    return asyncio.run(authenticator.authenticate(f"Bearer {token}"))


def test_the_token_file_is_asked_first_even_for_jwt_shaped_secrets(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("tenants: [{name: legacy, match: {token: ci}}]")
    authenticator = Authenticator(TokenStore({"ci": JWT_SHAPED}), PolicyFile(policy))
    caller = _run(authenticator, JWT_SHAPED)
    assert caller == Caller("ci", "legacy", {"token": "ci"})
    assert caller.requested_by_json() == '{"token":"ci"}'


def test_without_a_policy_file_everything_is_as_before() -> None:
    authenticator = Authenticator(TokenStore({"alice": "a" * 20}))
    assert _run(authenticator, "a" * 20) == Caller("alice", None, {"token": "alice"})
    with pytest.raises(Unauthorized, match="invalid token"):
        _run(authenticator, JWT_SHAPED[:-2])  # an ID token needs a policy that trusts its issuer
    with pytest.raises(Unauthorized, match="longer than 16384"):
        _run(authenticator, "a" * 20_000)
    with pytest.raises(Unauthorized, match="Bearer scheme"):
        asyncio.run(authenticator.authenticate("Basic abc"))


def test_a_static_token_without_a_tenant_is_403(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("tenants: [{name: legacy, match: {token: ci}}]")
    authenticator = Authenticator(TokenStore({"bob": "b" * 20}), PolicyFile(policy))
    with pytest.raises(Forbidden, match="no tenant admits this identity: token 'bob'"):
        _run(authenticator, "b" * 20)


def test_audit_claims_keep_the_known_ones_short() -> None:
    claims = {
        "iss": "https://gh",
        "sub": "repo:a/b",
        "run_id": 42,
        "actor": "x" * 500,
        "secret_thing": "no",
        "ref_protected": True,
        "kubernetes.io": {"pod": {"name": "runner-1"}},
    }
    audit = audit_claims(claims)
    assert audit == {
        "iss": "https://gh",
        "sub": "repo:a/b",
        "run_id": "42",
        "actor": "x" * 200,
        "pod": "runner-1",
    }
    assert json.loads(Caller("o", "t", audit).requested_by_json()) == audit
