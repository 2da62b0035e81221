"""``Authorization`` header -> the Caller: owner, tenant and who asked, for every route.

Two kinds of bearer token reach nsprov: static secrets from the token file (or
NSPROV_TOKEN) and OIDC ID tokens of the issuers the policy file trusts. The
order is fixed: the static store is asked first (a constant-time digest
comparison, microseconds), so a secret always means what the token file says;
a token it does not know is verified as an ID token when it has the shape of a
JWT and a policy is in force, and refused otherwise.

Without a policy file the owner is the token's name, as it always was. With one,
every identity, static tokens included, must be admitted by a tenant: the first
tenant whose conditions all hold names the owner; none = 403.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from nsprov.core.bearer import MAX_HEADER_BYTES, MAX_TOKEN_BYTES
from nsprov.core.errors import Forbidden, Unauthorized
from nsprov.core.kube import Kube
from nsprov.core.settings import Settings
from nsprov.identity.auth import TokenStore
from nsprov.policy.file import PolicyFile
from nsprov.policy.model import (
    NoTenant,
    Principal,
    Profile,
    admit,
    flags_profile,
    lookup_claim,
    resolve,
)

if TYPE_CHECKING:
    from nsprov.identity.oidc import Verifier

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.identity")

VERIFY_THREADS = 4
"""Worker threads ID-token verification may hold at once. Its own limiter, not anyio's
default one: the default is shared with every Kubernetes call, and verification is
reachable without credentials (a slow issuer must not starve the API of threads)."""

# Claims worth keeping on a namespace to say which job asked for it: GitHub's, GitLab's and
# a Kubernetes pod's (by JSON pointer). Output key -> claim.
AUDIT_CLAIMS: Mapping[str, str] = {
    "iss": "iss",
    "sub": "sub",
    # GitHub Actions
    "repository": "repository",
    "ref": "ref",
    "workflow": "workflow",
    "run_id": "run_id",
    "run_attempt": "run_attempt",
    "actor": "actor",
    "environment": "environment",
    # GitLab CI
    "project_path": "project_path",
    "pipeline_id": "pipeline_id",
    "job_id": "job_id",
    "user_login": "user_login",
    # Kubernetes ServiceAccount tokens
    "pod": "/kubernetes.io/pod/name",
}
_MAX_AUDIT_VALUE = 200


def audit_claims(claims: Mapping[str, Any]) -> dict[str, str]:
    """The audit claims present in ``claims``, as short strings."""
    found: dict[str, str] = {}
    for key, claim in AUDIT_CLAIMS.items():
        value = lookup_claim(claims, claim)
        if isinstance(value, str | int) and not isinstance(value, bool):
            found[key] = str(value)[:_MAX_AUDIT_VALUE]
    return found


_FLAGS = flags_profile(Settings())


@dataclass(frozen=True)
class Caller:
    """Who is calling: the owner whose namespaces it may touch, its tenant, audit claims,
    and what its tenant's namespaces get (resolved from the same policy that admitted it,
    so a reload mid-request cannot mix two policies)."""

    owner: str
    tenant: str | None = None
    requested_by: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    profile: Profile = field(default=_FLAGS, compare=False, repr=False)

    def requested_by_json(self) -> str:
        """Compact JSON: what the namespace's ``nsprov.io/requested-by`` annotation holds."""
        return json.dumps(dict(self.requested_by), sort_keys=True, separators=(",", ":"))


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments whose first is a JSON object: what we treat as an ID token."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or len(parts[0]) > MAX_HEADER_BYTES:
        return False
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        return False
    return isinstance(header, dict)


def _verifier_for(kube: Kube | None) -> Verifier:
    from nsprov.identity.oidc import Verifier  # here: PyJWT loads only when an ID token needs it

    return Verifier(kube)


def bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthorized("missing Authorization header (expected 'Bearer <token>')")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must use the Bearer scheme")
    token = token.strip()
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized(f"token is longer than {MAX_TOKEN_BYTES} bytes")
    return token


class Authenticator:
    """Static tokens, OIDC ID tokens and the policy, behind one ``authenticate``."""

    def __init__(
        self,
        tokens: TokenStore | None,
        policy: PolicyFile | None = None,
        *,
        kube: Kube | None = None,
        verifier: Verifier | None = None,
        make_verifier: Callable[[], Verifier] | None = None,
        base: Profile = _FLAGS,
    ) -> None:
        self.tokens = tokens
        self.policy = policy
        self.base = base
        self._verifier = verifier
        self._make_verifier = make_verifier or (lambda: _verifier_for(kube))
        self._verifier_lock = threading.Lock()
        self.verify_limiter = anyio.CapacityLimiter(VERIFY_THREADS)

    @property
    def verifier(self) -> Verifier:
        """Made on first use: PyJWT and cryptography (about 11 MiB) are loaded only by a
        replica that meets an ID token, never by one that serves static tokens alone."""
        with self._verifier_lock:
            if self._verifier is None:
                self._verifier = self._make_verifier()
            return self._verifier

    async def authenticate(self, header: str | None) -> Caller:
        if self.policy is not None and self.policy.due():
            # A changed file is parsed here, off the event loop: a large policy takes
            # seconds, and every other request (and /healthz) would wait them out.
            await anyio.to_thread.run_sync(self.policy.current)
        token = bearer_token(header)
        name = self._static(header)
        if name is not None:
            return self._admit_token(name)
        if self.policy is None or not looks_like_jwt(token):
            raise Unauthorized("invalid token")
        policy = self.policy.current()
        issuer, claims = await anyio.to_thread.run_sync(
            self.verifier.verify, token, policy, limiter=self.verify_limiter
        )
        principal = Principal(issuer=issuer, token=None, claims=claims)
        try:
            admission = admit(policy, principal)
        except NoTenant as exc:
            log.info("refused %s", exc.detail)
            raise Forbidden(exc.detail) from None
        profile = resolve(self.base, policy.defaults, admission.tenant)
        return Caller(admission.owner, admission.tenant.name, audit_claims(claims), profile)

    def _static(self, header: str | None) -> str | None:
        if self.tokens is None:
            return None
        try:
            return self.tokens.authenticate(header)
        except Unauthorized:
            return None

    def _admit_token(self, name: str) -> Caller:
        audit = MappingProxyType({"token": name})
        if self.policy is None:
            return Caller(name, None, audit, self.base)
        policy = self.policy.current()
        try:
            admission = admit(policy, Principal(issuer=None, token=name, claims={}))
        except NoTenant as exc:
            log.info("refused %s", exc.detail)
            raise Forbidden(exc.detail) from None
        profile = resolve(self.base, policy.defaults, admission.tenant)
        return Caller(admission.owner, admission.tenant.name, audit, profile)
