"""Which credential wins, and what a Caller records (no cluster: static tokens and policy only)."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from nsprov.core.errors import Forbidden, Unauthorized
from nsprov.identity.auth import TokenStore
from nsprov.identity.authenticator import VERIFY_THREADS, Authenticator, Caller, audit_claims
from nsprov.identity.oidc import Verifier
from nsprov.policy.file import PolicyFile
from nsprov.policy.model import Issuer, Policy

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


def test_a_slow_policy_reload_never_holds_up_the_event_loop(tmp_path: Path) -> None:
    """A changed policy file is parsed on a worker thread (a 1 MiB policy takes PyYAML
    seconds), and a request meanwhile is answered at once with the policy in force."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("tenants: [{name: legacy, match: {token: ci}}]")
    slow, parsing, release = threading.Event(), threading.Event(), threading.Event()

    def validate(_: Policy) -> None:  # runs inside the parse: here, a slow one
        if slow.is_set():
            parsing.set()
            release.wait(10)

    files = PolicyFile(policy, validate=validate, recheck_seconds=0.0)
    authenticator = Authenticator(TokenStore({"ci": "c" * 20}), files)
    header = "Bearer " + "c" * 20
    policy.write_text("tenants: [{name: renamed, match: {token: ci}}]")
    slow.set()
    # Without the worker thread the parse would block the loop until this fires.
    safety = threading.Timer(3.0, release.set)
    safety.start()

    async def main() -> tuple[float, Caller, Caller]:
        reloading = asyncio.create_task(authenticator.authenticate(header))
        start = time.monotonic()
        await asyncio.to_thread(parsing.wait, 5)
        meanwhile = await authenticator.authenticate(header)
        elapsed = time.monotonic() - start
        release.set()
        return elapsed, meanwhile, await reloading

    try:
        elapsed, meanwhile, reloaded = asyncio.run(main())
    finally:
        safety.cancel()
    assert elapsed < 2.0, f"a request waited {elapsed:.1f}s for another's policy reload"
    assert meanwhile.tenant == "legacy"  # the policy in force while the new one parses
    assert reloaded.tenant == "renamed"
    assert _run(authenticator, "c" * 20).tenant == "renamed"


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


def test_id_token_verification_has_its_own_few_threads(tmp_path: Path) -> None:
    # Verification is reachable without credentials and may block on a slow issuer: it must
    # not borrow the default thread limiter that every Kubernetes call shares.
    policy = tmp_path / "policy.yaml"
    policy.write_text("tenants: [{name: legacy, match: {token: ci}}]")
    release = threading.Event()
    running: list[int] = []
    lock = threading.Lock()

    class BlockingVerifier(Verifier):
        def verify(self, token: str, policy: Policy) -> tuple[Issuer, dict[str, Any]]:
            with lock:
                running.append(1)
            release.wait(10)
            raise Unauthorized("slow issuer")

    authenticator = Authenticator(None, PolicyFile(policy), verifier=BlockingVerifier())

    async def flood() -> tuple[float, float]:
        async def one() -> None:
            with pytest.raises(Unauthorized):
                await authenticator.authenticate(f"Bearer {JWT_SHAPED}")

        async with anyio.create_task_group() as tasks:
            for _ in range(20):
                tasks.start_soon(one)
            with anyio.fail_after(5):
                while authenticator.verify_limiter.borrowed_tokens < VERIFY_THREADS:
                    await anyio.sleep(0.01)
            await anyio.sleep(0.1)  # would more threads start? (they must not)
            shared = anyio.to_thread.current_default_thread_limiter().borrowed_tokens
            own = authenticator.verify_limiter.borrowed_tokens
            release.set()
        return shared, own

    shared, own = anyio.run(flood)
    assert shared == 0
    assert own == VERIFY_THREADS
    assert len(running) == 20  # all got their answer, a few at a time


def test_a_replica_without_id_tokens_never_loads_pyjwt() -> None:
    """PyJWT and cryptography cost about 11 MiB a replica: loaded only when an issuer is
    trusted (at start) or an ID token first needs verifying."""
    import subprocess
    import sys

    probe = (
        "import sys; from nsprov import app; import nsprov.identity.authenticator as identity\n"
        "a = identity.Authenticator(None)\n"
        "assert 'jwt' not in sys.modules and 'cryptography' not in sys.modules, 'loaded early'\n"
        "a.verifier\n"
        "assert 'jwt' in sys.modules, 'not loaded on use'\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
