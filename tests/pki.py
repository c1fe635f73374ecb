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


def crl(ca, revoked: tuple[int, ...] = (), *, next_update: dt.timedelta = DAY,
        last_update: dt.timedelta = -DAY) -> x509.CertificateRevocationList:
    """A CRL signed by `ca` (a trustme CA, or a (certificate, private key) of
    `certificate(ca=True)`) listing the serial numbers `revoked`; its lastUpdate and
    nextUpdate are that far from now."""
    now = dt.datetime.now(dt.timezone.utc)
    issuer, key = _issuer(ca)
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.subject)
               .last_update(now + last_update)
               .next_update(now + next_update))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(now - DAY).build())
    return builder.sign(key, hashes.SHA256())


def _issuer(ca):
    """(certificate, private key) of a trustme CA or of a (certificate, key) pair."""
    if isinstance(ca, tuple):
        return ca
    return (x509.load_pem_x509_certificate(ca.cert_pem.bytes()),
            serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None))


def crl_distribution_points(*urls: str) -> x509.CRLDistributionPoints:
    """The extension naming the CRL at each of `urls` (one distribution point each)."""
    return x509.CRLDistributionPoints([
        x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(url)],
                               relative_name=None, reasons=None, crl_issuer=None)
        for url in urls])


def write_crl(path: Path, *crls: x509.CertificateRevocationList,
              encoding: serialization.Encoding = serialization.Encoding.PEM) -> Path:
    path.write_bytes(b"".join(c.public_bytes(encoding) for c in crls))
    return path


def certificate(issuer: trustme.CA | None = None, *, ca: bool = False,
                not_before: dt.timedelta = -DAY, not_after: dt.timedelta = 365 * DAY,
                common_name: str = "test", public_key=None, crl_urls: tuple[str, ...] = ()):
    """A certificate made with cryptography: signed by `issuer` (None: by its own new key),
    valid from `not_before` to `not_after` from now, naming the CRLs at `crl_urls`.
    Returns (certificate, its private key; None when `public_key` was given)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    key = None
    if public_key is None:
        key = ec.generate_private_key(ec.SECP256R1())
        public_key = key.public_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    if issuer is None:
        issuer_name, signer = subject, key
    else:
        issuer_name = x509.load_pem_x509_certificate(issuer.cert_pem.bytes()).subject
        signer = serialization.load_pem_private_key(issuer.private_key_pem.bytes(), None)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(now + not_before).not_valid_after(now + not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if crl_urls:
        builder = builder.add_extension(crl_distribution_points(*crl_urls), critical=False)
    cert = builder.sign(signer, hashes.SHA256())
    return cert, key


def sign_csr(ca: trustme.CA, csr_pem: str, **changes) -> str:
    """The PEM chain (leaf, then `ca`) of a certificate `ca` issues for the CSR's key and
    subject's CN (`changes` as for `certificate`)."""
    from cryptography.x509.oid import NameOID

    csr = x509.load_pem_x509_csr(csr_pem.encode())
    cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    changes.setdefault("common_name", cn)
    leaf, _ = certificate(ca, public_key=csr.public_key(), **changes)
    return pem(leaf) + ca.cert_pem.bytes().decode()


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def code_signing(issuer, *, rsa_key: bool = False, usage=None,
                 not_before: dt.timedelta = -DAY, not_after: dt.timedelta = 365 * DAY,
                 common_name: str = "Firmware signing", crl_urls: tuple[str, ...] = ()):
    """A manufacturer's code-signing certificate issued by `issuer` (a trustme CA, or a
    (certificate, private key) of `certificate(ca=True)`: the ManufacturerRootCertificate
    or an intermediate), with an EC P-256 or RSA-2048 key and
    the extended key usage `usage` (default codeSigning), naming the CRLs at `crl_urls`
    in its CRL Distribution Points (none: no such extension). Returns (its PEM, its key's
    PEM, the certificate)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if rsa_key
           else ec.generate_private_key(ec.SECP256R1()))
    now = dt.datetime.now(dt.timezone.utc)
    ca_cert, signer = _issuer(issuer)
    builder = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + not_before).not_valid_after(now + not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CODE_SIGNING] if usage is None else usage),
                critical=False))
    if crl_urls:
        builder = builder.add_extension(crl_distribution_points(*crl_urls), critical=False)
    cert = builder.sign(signer, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return pem(cert), key_pem, cert
