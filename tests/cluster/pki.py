"""Certificates and keys for the throwaway control plane.

Everything is generated fresh per control plane and lives only in its temp dir:
a CA, the API server's serving cert, an admin client cert in ``system:masters``
and the key pair that signs ServiceAccount tokens (TokenRequest needs it).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# In-cluster names of the API server; a kubeconfig handed to a pod may use them.
_SERVING_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files one control plane uses."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public_key: Path
    sa_private_key: Path


def subject_name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    is_ca: bool = False,
    usage: ExtendedKeyUsageOID | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=not is_ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def generate(directory: Path, extra_ips: tuple[str, ...] = ()) -> Pki:
    """Write a fresh PKI into ``directory`` and return the file paths.

    ``extra_ips`` join the API server's serving cert: the address a node reaches it at.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = subject_name("nsprov-test-ca")
    ca = issue(ca_name, ca_key, ca_name, ca_key, is_ca=True)

    serving_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in _SERVING_DNS_NAMES]
    sans += [
        x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "10.0.0.1", *extra_ips)
    ]
    serving = issue(
        subject_name("kube-apiserver"),
        serving_key,
        ca_name,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=sans,
    )

    admin_key = ec.generate_private_key(ec.SECP256R1())
    admin = issue(
        subject_name("nsprov-test-admin", "system:masters"),
        admin_key,
        ca_name,
        ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )

    # RSA because RS256 is what every token consumer understands.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sa_public = sa_key.public_key().public_bytes(
        pem, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    return Pki(
        ca_cert=_write(directory / "ca.crt", ca.public_bytes(pem)),
        ca_key=_write(directory / "ca.key", key_pem(ca_key)),
        serving_cert=_write(directory / "apiserver.crt", serving.public_bytes(pem)),
        serving_key=_write(directory / "apiserver.key", key_pem(serving_key)),
        admin_cert=_write(directory / "admin.crt", admin.public_bytes(pem)),
        admin_key=_write(directory / "admin.key", key_pem(admin_key)),
        sa_public_key=_write(directory / "sa.pub", sa_public),
        sa_private_key=_write(directory / "sa.key", key_pem(sa_key)),
    )


@dataclass(frozen=True)
class NodeCerts:
    """A kubelet's client identity (``system:node:<name>``) and its serving cert."""

    client_cert: Path
    client_key: Path
    serving_cert: Path
    serving_key: Path


def issue_node(keys: Pki, directory: Path, node_name: str, node_ip: str) -> NodeCerts:
    """Certificates for one kubelet, signed by the control plane's CA.

    The client cert is what the Node authorizer recognises (user ``system:node:<name>``
    in group ``system:nodes``); the serving cert names the node IP, which is the
    address the API server dials for logs and exec.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca = x509.load_pem_x509_certificate(keys.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(keys.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the test CA key is an EC key")
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = issue(
        subject_name(f"system:node:{node_name}", "system:nodes"),
        client_key,
        ca.subject,
        ca_key,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving = issue(
        subject_name(node_name),
        serving_key,
        ca.subject,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[x509.DNSName(node_name), x509.IPAddress(ipaddress.ip_address(node_ip))],
    )
    return NodeCerts(
        client_cert=_write(directory / "kubelet-client.crt", client.public_bytes(pem)),
        client_key=_write(directory / "kubelet-client.key", key_pem(client_key)),
        serving_cert=_write(directory / "kubelet.crt", serving.public_bytes(pem)),
        serving_key=_write(directory / "kubelet.key", key_pem(serving_key)),
    )


@dataclass(frozen=True)
class ClientCert:
    """A client identity signed by the control plane's CA: a user name and its key."""

    cert: Path
    key: Path


def issue_client(keys: Pki, directory: Path, user: str) -> ClientCert:
    """A client certificate for ``user`` (its common name is what RBAC binds to).

    The node's add-ons (kube-proxy, kube-router) authenticate with these rather than
    with the admin cert, so each one runs with only the rights a real cluster gives it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca = x509.load_pem_x509_certificate(keys.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(keys.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the test CA key is an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(subject_name(user), key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    stem = user.replace(":", "-")
    return ClientCert(
        cert=_write(directory / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM)),
        key=_write(directory / f"{stem}.key", key_pem(key)),
    )
