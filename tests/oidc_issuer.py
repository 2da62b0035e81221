"""An OIDC issuer on loopback, standing in for GitHub's and GitLab's in tests and benchmarks.

It is a real HTTPS server (its own CA, generated here) that serves what a real
issuer serves: a discovery document, a JWKS with RSA and EC keys that can be
rotated, and a token endpoint shaped like GitHub Actions' ID-token request URL
(``GET <url>?audience=X`` with ``Authorization: bearer <request token>``,
answering ``{"value": "<jwt>"}``) so the Action can be driven end to end.

    with LoopbackIssuer() as issuer:
        token = issuer.mint({"sub": "repo:acme/web:ref:refs/heads/main", ...})
        kid = issuer.rotate()                  # new key, old one withdrawn
        issuer.ca_file                         # the caFile for nsprov's policy
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

AUDIENCE = "nsprov"
_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: PrivateKey

    def public_jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.alg)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def new_key(alg: str = "RS256") -> SigningKey:
    private: PrivateKey
    if alg in _CURVES:
        private = ec.generate_private_key(_CURVES[alg]())
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey(kid=secrets.token_hex(8), alg=alg, private=private)


def _tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a serving certificate for 127.0.0.1 signed by it; returns (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nsprov-test-oidc-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = (directory / "ca.crt", directory / "server.crt", directory / "server.key")
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@dataclass
class LoopbackIssuer:
    """Start with ``with LoopbackIssuer() as issuer`` (or start()/stop())."""

    keys: list[SigningKey] = field(default_factory=lambda: [new_key("RS256"), new_key("ES256")])
    request_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    id_token_claims: dict[str, Any] = field(default_factory=dict)
    """Claims the GitHub-shaped token endpoint puts into the tokens it hands out."""
    jwks_requests: int = 0
    jwks_delay: float = 0.0
    """Seconds the JWKS answer takes: its body is dripped out in pieces over this time, so
    no single read waits long (a per-read timeout never fires, only a total deadline)."""
    discovery_requests: int = 0
    token_requests: list[str] = field(default_factory=list)
    """The ``audience`` of each request to the token endpoint, in order."""

    def __post_init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="nsprov-oidc-"))
        self.ca_file, cert, key = _tls(self._dir)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}"
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> LoopbackIssuer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for path in self._dir.iterdir():
            path.unlink()
        self._dir.rmdir()

    def __enter__(self) -> LoopbackIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- keys and tokens ------------------------------------------------------------------

    @property
    def token_url(self) -> str:
        """Like ACTIONS_ID_TOKEN_REQUEST_URL: already has a query, the client adds &audience=."""
        return f"{self.url}/token?api-version=2.0"

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [k.public_jwk() for k in self.keys]}

    def rotate(self, alg: str = "RS256", *, keep_old: bool = False) -> str:
        """Publish a new signing key (withdrawing the others unless ``keep_old``); its kid."""
        key = new_key(alg)
        with self._lock:
            self.keys = [*self.keys, key] if keep_old else [key]
        return key.kid

    def key(self, kid: str | None = None, alg: str | None = None) -> SigningKey:
        with self._lock:
            for key in self.keys:
                if (kid is None or key.kid == kid) and (alg is None or key.alg == alg):
                    return key
        raise KeyError(kid or alg)

    def claims(self, claims: dict[str, Any], lifetime: float = 300) -> dict[str, Any]:
        """``claims`` over the registered ones (iss, aud, iat, nbf, exp, jti); None removes one."""
        now = int(time.time())
        merged = {
            "iss": self.url,
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime),
            "jti": secrets.token_hex(8),
            **claims,
        }
        return {k: v for k, v in merged.items() if v is not None}

    def mint(
        self,
        claims: dict[str, Any],
        *,
        kid: str | None = None,
        alg: str | None = None,
        lifetime: float = 300,
        key: SigningKey | None = None,
    ) -> str:
        """A token signed by one of the published keys (``key`` may be an unpublished one)."""
        signer = key or self.key(kid, alg)
        return jwt.encode(
            self.claims(claims, lifetime),
            signer.private,
            algorithm=signer.alg,
            headers={"kid": signer.kid, "typ": "JWT"},
        )

    def _id_token(self, audience: str | None) -> str:
        claims = dict(self.id_token_claims)
        owner = claims.get("repository_owner", "")
        claims["aud"] = audience or f"https://github.com/{owner}"  # GitHub's default audience
        return self.mint(claims)


def _handler(issuer: LoopbackIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, body: dict[str, Any], drip: float = 0.0) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            pieces = 20 if drip > 0 else 1
            size = -(-len(data) // pieces)
            try:
                for start in range(0, len(data), size):
                    if drip > 0:
                        self.wfile.flush()
                        time.sleep(drip / pieces)
                    self.wfile.write(data[start : start + size])
            except OSError:
                pass  # the client gave up (its deadline): nothing to tell anyone

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/.well-known/openid-configuration":
                issuer.discovery_requests += 1
                self._json(
                    200,
                    {
                        "issuer": issuer.url,
                        "jwks_uri": f"{issuer.url}/jwks",
                        "response_types_supported": ["id_token"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                    },
                )
            elif url.path == "/jwks":
                issuer.jwks_requests += 1
                self._json(200, issuer.jwks(), drip=issuer.jwks_delay)
            elif url.path == "/token":
                scheme, _, presented = (self.headers.get("Authorization") or "").partition(" ")
                if scheme.lower() != "bearer" or not secrets.compare_digest(
                    presented.encode(), issuer.request_token.encode()
                ):
                    self._json(401, {"message": "bad request token"})
                    return
                audience = parse_qs(url.query).get("audience", [None])[0]
                issuer.token_requests.append(audience or "")
                self._json(200, {"value": issuer._id_token(audience)})
            else:
                self._json(404, {"message": "not found"})

    return Handler
