"""OIDC ID tokens -> verified claims, with each trusted issuer's keys fetched over TLS and cached.

A token names its issuer in ``iss`` before anything is verified, so we read that
claim only to pick one configured issuer, then verify with that issuer's keys and
no one else's: a token can never be checked against keys it chose itself.

What we refuse before any key is touched: tokens above ``MAX_TOKEN_BYTES`` (a
parser must not chew on megabytes an attacker sent), and any ``alg`` outside an
allowlist of asymmetric algorithms (``none`` and HMAC would let whoever knows
the public key forge tokens: algorithm confusion). A key is used only with the
algorithm its type allows.

Keys are refreshed when a token names an unknown ``kid`` (the issuer rotated),
but at most once per ``REFRESH_INTERVAL`` per issuer, counted from the end of
the last attempt, so a flood of made-up kids costs the issuer one request, not
one each, even when the issuer is slow. Nobody waits for a refresh another
request started: the ``kid`` is read before any signature is checked, so a
caller that waited would let an unauthenticated flood hold worker threads.
While one request refreshes, the others use the keys already cached (an unknown
``kid`` is a 401 at once). A fetch has a total deadline (``FETCH_DEADLINE``),
not only a per-socket-operation timeout, and keys that could not be refreshed
for ``KEYS_MAX_STALENESS`` are no longer trusted: an issuer that withdrew a
leaked key must not be outlived by our cache forever.

Network failures are logged in full and answered with a short detail that names
the issuer only: URLs and TLS errors are the operator's business, not a caller's.
All of this blocks on the network, so callers run it on a worker thread.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import jwt
from jwt import exceptions as jwt_errors

from nsprov.core.bearer import MAX_HEADER_BYTES, MAX_TOKEN_BYTES
from nsprov.core.errors import ClusterUnavailable, Forbidden, IssuerUnavailable, Unauthorized
from nsprov.core.kube import Kube, KubeError
from nsprov.policy.model import Issuer, Policy, lookup_claim

# Its name from before the folders: log filters and the tests select on it.
log = logging.getLogger("nsprov.oidc")

LEEWAY_SECONDS = 60
REFRESH_INTERVAL = 10.0
"""Least time between two key fetches of one issuer (unknown kids wait, known keys are served)."""
KEYS_MAX_AGE = 600.0
"""Keys older than this are re-fetched, so a key the issuer withdrew stops working."""
KEYS_MAX_STALENESS = 24 * 3600.0
"""Keys not refreshed successfully for this long are not used: 503 until the issuer answers."""
FETCH_TIMEOUT = 5.0
"""Per socket operation (connect, each read)."""
FETCH_DEADLINE = 8.0
"""For a whole fetch: a server that drips a byte every few seconds is cut off here."""
_MAX_DOCUMENT_BYTES = 512 * 1024
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat")

# Accepted algorithms and the key type (and curve) each may be used with.
ALGORITHMS: Mapping[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}  # fmt: skip


class _Connection(http.client.HTTPSConnection):
    """Remembers its socket: http.client forgets it once a response to HTTP/1.0 (or with
    ``Connection: close``) begins, and the deadline must still be able to cut the read."""

    opened: socket.socket | None = None

    def connect(self) -> None:
        super().connect()
        self.opened = self.sock


def _abort(connection: _Connection) -> None:
    """Cut a fetch off at its deadline: shutting the socket down wakes a blocked read
    (``sock`` while connecting and in the TLS handshake, ``opened`` afterwards)."""
    sock = connection.opened or connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: nothing left to cut
            sock.shutdown(socket.SHUT_RDWR)


def fetch_json(url: str, ca_file: str | None) -> dict[str, Any]:
    """GET an https URL within ``FETCH_DEADLINE`` and return its JSON object.

    IssuerUnavailable says what went wrong, URL included: for the log, not for callers.
    Redirects are not followed (discovery and keys come from the URLs configured or
    announced, nowhere else).
    """
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise IssuerUnavailable(f"refusing to fetch {url}: not https")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # kube-apiserver answers 406 to a JWKS request that does not accept jwk-set+json.
    accept = "application/json, application/jwk-set+json"
    deadline = FETCH_DEADLINE
    started = time.monotonic()
    connection: _Connection | None = None
    timer: threading.Timer | None = None
    try:
        context = ssl.create_default_context(cafile=ca_file)
        connection = _Connection(
            parts.hostname, parts.port, timeout=min(FETCH_TIMEOUT, deadline), context=context
        )
        timer = threading.Timer(deadline, _abort, (connection,))
        timer.daemon = True
        timer.start()
        connection.request("GET", target, headers={"Accept": accept})
        response = connection.getresponse()
        if response.status != 200:
            raise IssuerUnavailable(f"{url} answered {response.status}")
        body = response.read(_MAX_DOCUMENT_BYTES + 1)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        if time.monotonic() - started >= deadline:
            raise IssuerUnavailable(f"{url} did not answer within {deadline:g} s") from None
        raise IssuerUnavailable(f"{url} unreachable: {type(exc).__name__}: {exc}") from None
    finally:
        if timer is not None:
            timer.cancel()
        if connection is not None:
            connection.close()
    if time.monotonic() - started >= deadline:
        # A read cut short by the deadline may end quietly with part of the body.
        raise IssuerUnavailable(f"{url} did not answer within {deadline:g} s")
    if len(body) > _MAX_DOCUMENT_BYTES:
        raise IssuerUnavailable(f"{url} answered more than {_MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise IssuerUnavailable(f"{url} did not answer JSON") from None
    if not isinstance(document, dict):
        raise IssuerUnavailable(f"{url} did not answer a JSON object")
    return document


Fetch = Callable[[str, str | None], dict[str, Any]]


class IssuerKeys:
    """One issuer's signing keys by ``kid``: fetched on demand, refreshed at a bounded rate."""

    def __init__(
        self,
        issuer: Issuer,
        *,
        fetch: Fetch = fetch_json,
        clock: Callable[[], float] = time.monotonic,
        refresh_interval: float = REFRESH_INTERVAL,
    ) -> None:
        self.issuer = issuer
        self._fetch = fetch
        self._clock = clock
        self._interval = refresh_interval
        self._lock = threading.Lock()
        self._keys: dict[str | None, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        # (kid, alg) -> (the JWK it was parsed from, the key). Readers take no lock, so a
        # refresh may swap the keys under one: the JWK is checked, not trusted to match.
        self._parsed: dict[tuple[str | None, str], tuple[dict[str, Any], jwt.PyJWK]] = {}

    def _jwks_uri(self) -> str:
        if self.issuer.jwks_uri:
            return self.issuer.jwks_uri
        ca = str(self.issuer.ca_file) if self.issuer.ca_file else None
        discovery = self._fetch(
            self.issuer.issuer.rstrip("/") + "/.well-known/openid-configuration", ca
        )
        if discovery.get("issuer") != self.issuer.issuer:
            # OpenID Connect Discovery 1.0, 4.3: the document must name the issuer exactly.
            raise IssuerUnavailable(
                f"discovery document of {self.issuer.issuer} names issuer "
                f"{str(discovery.get('issuer'))[:100]!r}"
            )
        uri = discovery.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith("https://"):
            raise IssuerUnavailable(f"discovery document of {self.issuer.issuer} has no https "
                                    "jwks_uri")  # fmt: skip
        return uri

    def _refresh(self) -> None:
        self._attempted_at = self._clock()
        try:
            ca = str(self.issuer.ca_file) if self.issuer.ca_file else None
            document = self._fetch(self._jwks_uri(), ca)
        finally:
            # The interval counts from the end of the attempt too: a fetch slower than the
            # interval must not let the next made-up kid start another one at once.
            self._attempted_at = self._clock()
        keys: dict[str | None, dict[str, Any]] = {}
        for jwk in document.get("keys") or []:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            kid = jwk.get("kid")
            keys[kid if isinstance(kid, str) else None] = jwk
        if not keys:
            raise IssuerUnavailable(f"issuer {self.issuer.name!r} publishes no signing keys")
        self._keys, self._parsed = keys, {}
        self._fetched_at = self._attempted_at
        log.info("issuer %s: %d signing key(s) loaded", self.issuer.name, len(keys))

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at > KEYS_MAX_AGE

    def _too_old(self) -> bool:
        """Keys we may no longer use at all: not refreshed for ``KEYS_MAX_STALENESS``."""
        return self._fetched_at is None or self._clock() - self._fetched_at > KEYS_MAX_STALENESS

    def _may_refresh(self) -> bool:
        return self._attempted_at is None or self._clock() - self._attempted_at >= self._interval

    def _find(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None and None not in self._keys and len(self._keys) == 1:
            return next(iter(self._keys.values()))  # one key and no kid: nothing to choose
        return self._keys.get(kid)

    def _try_refresh(self) -> None:
        """Refresh unless another request is refreshing or the interval forbids it; never
        waits. A failure is logged in full here (the log line carries the request id)."""
        if not self._lock.acquire(blocking=False):
            return  # someone else is fetching: use what is cached meanwhile
        try:
            if self._may_refresh():
                self._refresh()
        except IssuerUnavailable as exc:
            log.warning("issuer %s: keys not refreshed: %s", self.issuer.name, exc.detail)
        finally:
            self._lock.release()

    def signing_key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        """The key ``kid`` for ``alg``; Unauthorized when the issuer has no such key,
        IssuerUnavailable (naming the issuer only) when we have no usable keys."""
        if self._find(kid) is None or self._stale():
            self._try_refresh()
        if not self._keys or self._too_old():
            raise IssuerUnavailable(f"issuer {self.issuer.name!r} keys unavailable")
        jwk = self._find(kid)
        if jwk is None:
            raise Unauthorized(
                f"token signed with key {kid and kid[:64]!r}, which issuer {self.issuer.name!r} "
                "does not publish"
            )
        return self._parse(kid, jwk, alg)

    def _parse(self, kid: str | None, jwk: dict[str, Any], alg: str) -> jwt.PyJWK:
        cached = self._parsed.get((kid, alg))
        if cached is not None and cached[0] is jwk:
            return cached[1]
        kty, crv = ALGORITHMS[alg]
        if jwk.get("kty") != kty or (crv and jwk.get("crv") != crv) or jwk.get("alg", alg) != alg:
            raise Unauthorized(f"token algorithm {alg} does not fit the issuer's key {kid!r}")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
        except jwt_errors.PyJWTError:
            raise Unauthorized(f"issuer key {kid!r} is not usable") from None
        self._parsed[(kid, alg)] = (jwk, key)
        return key


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if len(token.split(".", 1)[0]) > MAX_HEADER_BYTES:
        raise Unauthorized(f"token header is longer than {MAX_HEADER_BYTES} bytes")
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except (jwt_errors.PyJWTError, RecursionError):
        # RecursionError: JSON nested thousands deep (``[[[[...``) fits in 16 KiB.
        raise Unauthorized("malformed token (not a JWT)") from None
    return header, claims


def _claims_error(exc: jwt_errors.PyJWTError) -> str:
    if isinstance(exc, jwt_errors.ExpiredSignatureError):
        return "token has expired"
    if isinstance(exc, jwt_errors.ImmatureSignatureError):
        return "token is not valid yet (nbf or iat in the future)"
    if isinstance(exc, jwt_errors.InvalidAudienceError):
        return "token audience (aud) is not this service's"
    if isinstance(exc, jwt_errors.InvalidIssuerError):
        return "token issuer (iss) is not trusted"
    if isinstance(exc, jwt_errors.MissingRequiredClaimError):
        return f"token lacks the required claim {exc.claim!r}"
    if isinstance(exc, jwt_errors.InvalidSignatureError):
        return "token signature does not verify"
    if isinstance(exc, jwt_errors.InvalidKeyError):
        return "token signed with a key too weak to trust"
    return f"invalid token ({type(exc).__name__})"


class Verifier:
    """Verifies ID tokens of the issuers a policy trusts; keeps each issuer's keys across
    policy reloads for as long as the issuer's configuration stays the same."""

    def __init__(
        self,
        kube: Kube | None = None,
        *,
        fetch: Fetch = fetch_json,
        refresh_interval: float = REFRESH_INTERVAL,
        namespace_refusal: Callable[[str, str], str | None] = lambda namespace, iss: None,
    ) -> None:
        """``namespace_refusal(namespace, iss)``: why a token that ``iss`` minted in
        ``namespace`` may not provision (nsprov made that namespace; it is gone), or None."""
        self._kube = kube
        self._namespace_refusal = namespace_refusal
        self._fetch = fetch
        self._interval = refresh_interval
        self._lock = threading.Lock()
        self._keys: dict[Issuer, IssuerKeys] = {}

    def keys_of(self, issuer: Issuer) -> IssuerKeys:
        with self._lock:
            keys = self._keys.get(issuer)
            if keys is None:
                keys = self._keys[issuer] = IssuerKeys(
                    issuer, fetch=self._fetch, refresh_interval=self._interval
                )
            return keys

    def verify(self, token: str, policy: Policy) -> tuple[Issuer, dict[str, Any]]:
        """The trusted issuer and the verified claims of ``token``; Unauthorized otherwise."""
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized(f"token is longer than {MAX_TOKEN_BYTES} bytes")
        header, unverified = _unverified(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise Unauthorized(
                f"token algorithm {str(alg)[:20]!r} is not accepted "
                f"(accepted: {', '.join(ALGORITHMS)})"
            )
        iss = unverified.get("iss")
        issuer = policy.issuer_for(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise Unauthorized(f"token issuer {str(iss)[:100]!r} is not trusted")
        kid = header.get("kid")
        key = self.keys_of(issuer).signing_key(kid if isinstance(kid, str) else None, alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=issuer.audience,
                issuer=issuer.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": list(REQUIRED_CLAIMS), "enforce_minimum_key_length": True},
            )
        except jwt_errors.PyJWTError as exc:
            raise Unauthorized(_claims_error(exc)) from None
        except RecursionError:
            raise Unauthorized("malformed token (not a JWT)") from None
        if not isinstance(claims.get("sub"), str):
            raise Unauthorized("token subject (sub) must be a string")
        if issuer.token_review:
            self._review(token, issuer, claims)
        self._refuse_provisioned(claims)
        return issuer, claims

    def _refuse_provisioned(self, claims: dict[str, Any]) -> None:
        """Namespaces nsprov made never provision: refuse a token that names one.

        A tenant whose grant allows pods can mint a ServiceAccount token for any audience
        in its own namespace. Were such a token admitted (a tenant glob broader than
        meant), every namespace could provision the next under a new owner, escaping the
        caps and the lifetime limit. Checked for every token, whether or not its issuer
        is reviewed: the signature alone proves which namespace minted it.
        """
        for namespace in sorted(kubernetes_namespaces(claims)):
            refusal = self._namespace_refusal(namespace, str(claims.get("iss", "")))
            if refusal is not None:
                raise Forbidden(f"the token belongs to namespace {namespace!r}, {refusal}")

    def _review(self, token: str, issuer: Issuer, claims: dict[str, Any]) -> None:
        """Ask the API server whether the token is still good: a signature outlives the pod
        and ServiceAccount it was minted for, a TokenReview does not."""
        if self._kube is None:
            raise IssuerUnavailable(f"issuer {issuer.name!r} needs a TokenReview, and nsprov "
                                    "has no cluster to ask")  # fmt: skip
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [issuer.audience]},
        }
        try:
            answer = self._kube.post("/apis/authentication.k8s.io/v1/tokenreviews", review)
        except KubeError as exc:
            log.error("TokenReview for issuer %s failed: %s", issuer.name, exc)
            raise ClusterUnavailable("could not review the token with the Kubernetes API") from None
        status = answer.get("status") or {}
        if not status.get("authenticated"):
            raise Unauthorized("token was revoked (its pod or ServiceAccount is gone)")
        if (status.get("user") or {}).get("username") != claims["sub"] or issuer.audience not in (
            status.get("audiences") or []
        ):
            raise Unauthorized("token review does not confirm the token's subject and audience")


_SERVICE_ACCOUNT_SUBJECT = "system:serviceaccount:"


def kubernetes_namespaces(claims: Mapping[str, Any]) -> set[str]:
    """The Kubernetes namespaces a token's claims say it was minted in.

    Bound ServiceAccount tokens carry ``kubernetes.io: {namespace: ...}``, legacy
    (Secret) ones ``kubernetes.io/serviceaccount/namespace``, and both the subject
    ``system:serviceaccount:<namespace>:<name>``. Any of them counts.
    """
    found = {
        lookup_claim(claims, "/kubernetes.io/namespace"),
        claims.get("kubernetes.io/serviceaccount/namespace"),
    }
    subject = claims.get("sub")
    if isinstance(subject, str) and subject.startswith(_SERVICE_ACCOUNT_SUBJECT):
        found.add(subject.removeprefix(_SERVICE_ACCOUNT_SUBJECT).partition(":")[0])
    return {value for value in found if isinstance(value, str) and value}
