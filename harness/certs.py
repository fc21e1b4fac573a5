"""Certificates made fresh for a test: a CA, a server certificate it signed, and clients'.

The TLS tests make their own (never a file checked into the repository): a private CA, a
server certificate for the loopback names and addresses, a client certificate the CA signed,
and one signed by a stranger CA, for mutual TLS's refusal.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Certificates:
    """What one TLS test serves and connects with."""

    ca: Path  # the CA's certificate (TLS_CA_FILE, and what clients trust)
    server: Pair
    client: Pair  # signed by `ca`
    stranger: Pair  # a client signed by another CA


def make_certificates(directory: Path, names: tuple[str, ...] = LOOPBACK_NAMES) -> Certificates:
    """Write a CA, a server certificate for `names` and two client certificates."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _authority("redis-cache-proxy test CA")
    other_key, other_cert = _authority("a stranger CA")
    server = _issue(directory / "server", common="server", names=names, issuer=(ca_key, ca_cert))
    client = _issue(directory / "client", common="client", issuer=(ca_key, ca_cert))
    stranger = _issue(directory / "stranger", common="stranger", issuer=(other_key, other_cert))
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return Certificates(ca_path, server, client, stranger)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _authority(common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common, _name(common), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue(
    stem: Path,
    *,
    common: str,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    names: tuple[str, ...] = (),
) -> Pair:
    """A certificate for `common` signed by `issuer`: a server's for `names`, else a client's."""
    ca_key, ca_cert = issuer
    server = bool(names)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(common, ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    pair = Pair(stem.with_suffix(".crt"), stem.with_suffix(".key"))
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pair


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)
