"""A test PKI: trustme CAs and certificates, and CRLs built with cryptography."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

DAY = dt.timedelta(days=1)


def serial_of(leaf: trustme.LeafCert) -> int:
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number


def crl(ca: trustme.CA, revoked: tuple[int, ...] = (), *, next_update: dt.timedelta = DAY,
        last_update: dt.timedelta = -DAY) -> x509.CertificateRevocationList:
    """A CRL signed by `ca` listing the serial numbers `revoked`; its lastUpdate and
    nextUpdate are that far from now."""
    now = dt.datetime.now(dt.timezone.utc)
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.subject)
               .last_update(now + last_update)
               .next_update(now + next_update))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(now - DAY).build())
    return builder.sign(key, hashes.SHA256())


def write_crl(path: Path, *crls: x509.CertificateRevocationList,
              encoding: serialization.Encoding = serialization.Encoding.PEM) -> Path:
    path.write_bytes(b"".join(c.public_bytes(encoding) for c in crls))
    return path
