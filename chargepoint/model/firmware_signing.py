"""Signed firmware (OCPP 1.6 Security Whitepaper, edition 3, SignedUpdateFirmware): is a
signing certificate one of the manufacturer's, and is a bundle's signature its key's?

The manufacturer signs the SHA-256 of the whole bundle file with the private key of a
code-signing certificate issued under its ManufacturerRootCertificate (RSA PKCS#1 v1.5 or
ECDSA, the signature base64 in SignedUpdateFirmware's `signature`). The charger accepts
the certificate only if it chains up to a ManufacturerRootCertificate it holds, every
certificate on the way valid now, and checks the signature before anything is installed.
Everything here is `cryptography`'s; the caller hashes the file (no I/O in the model).
"""
from __future__ import annotations

import base64
import binascii
from typing import Iterable, Optional

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import ExtendedKeyUsageOID

from chargepoint.model.certificates import (CertificateProblem, check_validity, describe,
                                            load_chain, signed_by)

#: Longest chain from the signing certificate to a root (intermediates between them).
MAX_CHAIN = 5


class SigningProblem(ValueError):
    """A signing certificate or a signature that is refused; the message says why."""


def digest_of(blocks: Iterable[bytes]) -> bytes:
    """The SHA-256 of what `blocks` hold, in order (a file read block by block)."""
    digest = hashes.Hash(hashes.SHA256())
    for block in blocks:
        digest.update(block)
    return digest.finalize()


def decode_signature(text: str) -> bytes:
    """The signature's bytes from its base64 text; SigningProblem if it is not base64."""
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SigningProblem("the signature is not base64") from None
    if not raw:
        raise SigningProblem("the signature is empty")
    return raw


def signing_certificate(pem: str, roots: Iterable[x509.Certificate],
                        now_utc: Optional[float]) -> x509.Certificate:
    """The signing certificate of `pem` (itself first, then any intermediates) once it is
    found to chain up to one of `roots`, each certificate valid at `now_utc` (None: the
    time is unknown and not checked), the intermediates CAs, the signing certificate
    allowed to sign code; SigningProblem saying why not."""
    return signing_path(pem, roots, now_utc)[0]


def signing_path(pem: str, roots: Iterable[x509.Certificate],
                 now_utc: Optional[float]) -> list[x509.Certificate]:
    """As `signing_certificate`, the whole path it was found on: the signing certificate,
    the intermediates that issued it in order, the root last (each one's issuer follows it:
    what a revocation check needs).

    Hand-written path checks: cryptography's verifier only builds TLS server and client
    policies, and a code-signing certificate is neither."""
    roots = list(roots)
    if not roots:
        raise SigningProblem("no ManufacturerRootCertificate is installed")
    try:
        chain = load_chain(pem)
    except CertificateProblem as exc:
        raise SigningProblem(f"signing certificate: {exc}") from None
    leaf, others = chain[0], chain[1:]
    _check_code_signing(leaf)
    current = leaf
    path = [leaf]
    for _ in range(MAX_CHAIN + 1):
        _valid(current, now_utc)
        root = next((r for r in roots if r.subject == current.issuer
                     and signed_by(current, r)), None)
        if root is not None:
            _valid(root, now_utc)
            return path + [root]
        issuer = next((c for c in others if c.subject == current.issuer
                       and signed_by(current, c)), None)
        if issuer is None:
            raise SigningProblem(f"{describe(current)} is not issued under an installed "
                                 "ManufacturerRootCertificate")
        _check_ca(issuer)
        others.remove(issuer)
        path.append(issuer)
        current = issuer
    raise SigningProblem(f"more than {MAX_CHAIN} certificates between the signing "
                         "certificate and a root")


def _valid(cert: x509.Certificate, now_utc: Optional[float]) -> None:
    try:
        check_validity(cert, now_utc)
    except CertificateProblem as exc:
        raise SigningProblem(f"{describe(cert)}: {exc}") from None


def _check_code_signing(cert: x509.Certificate) -> None:
    """Key usage, where the certificate states it, must allow signing code."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature:
            raise SigningProblem(f"{describe(cert)}: its key usage does not allow "
                                 "digitalSignature")
    except x509.ExtensionNotFound:
        pass
    try:
        extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if not ({ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
                & set(extended)):
            raise SigningProblem(f"{describe(cert)}: its extended key usage does not allow "
                                 "codeSigning")
    except x509.ExtensionNotFound:
        pass
    if not isinstance(cert.public_key(), (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise SigningProblem(f"{describe(cert)}: its key is neither RSA nor EC")


def _check_ca(cert: x509.Certificate) -> None:
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise SigningProblem(f"{describe(cert)} issues the signing certificate but is not "
                             "a CA")


def verify(certificate: x509.Certificate, signature: bytes, digest: bytes) -> None:
    """Does `signature` sign the SHA-256 `digest` with `certificate`'s key (RSA PKCS#1
    v1.5, or ECDSA)? SigningProblem if not."""
    key = certificate.public_key()
    algorithm = Prehashed(hashes.SHA256())
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, digest, ec.ECDSA(algorithm))
        else:
            raise SigningProblem("the signing certificate's key is neither RSA nor EC")
    except InvalidSignature:
        raise SigningProblem("the signature does not match the bundle and the signing "
                             "certificate") from None


def sign(private_key_pem: bytes, digest: bytes, password: Optional[bytes] = None) -> str:
    """The base64 signature of the SHA-256 `digest` with an RSA (PKCS#1 v1.5) or EC
    (ECDSA) private key in PEM: what SignedUpdateFirmware carries as `signature`."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningProblem(f"not a usable PEM private key ({exc})") from None
    algorithm = Prehashed(hashes.SHA256())
    if isinstance(key, rsa.RSAPrivateKey):
        raw = key.sign(digest, padding.PKCS1v15(), algorithm)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        raw = key.sign(digest, ec.ECDSA(algorithm))
    else:
        raise SigningProblem("the key is neither RSA nor EC")
    return base64.b64encode(raw).decode("ascii")
