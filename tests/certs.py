"""Test certificates: a CA, and certificates it signs (or self-signed), as PEM bytes."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Issued:
    cert: bytes  # PEM
    key: bytes  # PEM, PKCS #8, unencrypted
    signer: tuple[Any, Any]  # (its private key, its subject name): what ``issue`` signs others with


def issue(label: str, signer: tuple[Any, Any] | None = None, san: str | None = None, days: int = 1) -> Issued:
    """A certificate named ``label``: a CA signing itself without ``signer``, else one ``signer`` signs
    (for the DNS name ``san``); it expires in ``days`` (a negative number: already expired)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)])
    ca_key, issuer = signer or (key, subject)
    build = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=3))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=signer is None, path_length=None), critical=True)
    )
    if san:
        build = build.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    cert = build.sign(ca_key, hashes.SHA256())
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Issued(cert=cert.public_bytes(serialization.Encoding.PEM), key=pem_key, signer=(key, subject))
