"""The TLS files of `[csms]`, checked at start: each readable, PEM of the right kind, and
the client key the one of the client certificate.

Without this a missing or wrong file is only met at the first connection, and then at
every reconnection, as an OpenSSL error that names no file. Parsing is cryptography's;
only the PEM armour lines are looked at here, to say what a wrong file holds instead.
"""
from __future__ import annotations

import errno
import os
import pwd
import re
from pathlib import Path
from typing import Callable, Optional

#: The label of each PEM block (`-----BEGIN <label>-----`).
_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
#: One PEM block of a CRL. cryptography loads one CRL per call, and OpenSSL reads every
#: one in the file, so each block is checked.
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.S)
_PEM_KEY = re.compile(rb"-----BEGIN ((?:RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY)-----.+?"
                      rb"-----END \1-----", re.S)
_CERT_LABELS = {"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"}


def problems(csms) -> list[tuple[str, str]]:
    """(key, reason) for every TLS file of `csms` (CsmsSettings) that the link would fail
    on; [] when all are sound or the profile uses no TLS."""
    if csms.security_profile not in (2, 3):
        return []
    found: list[tuple[str, str]] = []
    if csms.ca_file:
        why = _certificates(csms.ca_file, "the CSMS's CA")[1]
        if why:
            found.append(("csms.ca_file", why))
    if csms.crl_file:
        why = crl_file_problem(csms.crl_file)
        if why:
            found.append(("csms.crl_file", why))
    if csms.security_profile == 3 and csms.client_cert and csms.client_key:
        certs, cert_why = _certificates(csms.client_cert, "the client")
        if cert_why:
            found.append(("csms.client_cert", cert_why))
        key, key_why = _private_key(csms.client_key)
        if key_why:
            found.append(("csms.client_key", key_why))
        if certs and key is not None and not _same_public_key(certs[0], key):
            found.append(("csms.client_key", f"{csms.client_key} is not the key of the "
                          f"certificate in client_cert {csms.client_cert} (their public keys "
                          "differ)"))
    return found


def _read(path: str) -> tuple[Optional[bytes], str]:
    try:
        return Path(path).read_bytes(), ""
    except OSError as exc:
        why = f"cannot read {path}: {exc.strerror or exc}"
        if exc.errno in (errno.EACCES, errno.EPERM):
            why += f" (as user {_user()})"
        return None, why


def _user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def _labels(data: bytes) -> list[str]:
    return [m.decode() for m in _PEM_LABEL.findall(data)]


def _holds(labels: list[str]) -> str:
    """What a file with these PEM blocks holds, for a reason ("holds RSA PRIVATE KEY")."""
    return "holds " + ", ".join(dict.fromkeys(labels)) if labels else "holds no PEM block"


def _certificates(path: str, whose: str) -> tuple[list, str]:
    """The certificates in `path` and "" , or [] and why not."""
    data, why = _read(path)
    if data is None:
        return [], why
    from cryptography import x509  # lazy: only a configured TLS file needs cryptography

    labels = _labels(data)
    if not _CERT_LABELS.intersection(labels):
        if _loads(x509.load_der_x509_certificate, data):
            return [], (f"{path} is a DER certificate; the charger reads PEM: openssl x509 "
                        f"-inform DER -in {path} -out {Path(path).stem}.pem")
        return [], (f"{path} {_holds(labels)}, not {whose} certificate (PEM, -----BEGIN "
                    "CERTIFICATE-----)")
    try:
        return x509.load_pem_x509_certificates(data), ""
    except ValueError as exc:
        return [], f"{path} holds a certificate that does not parse: {exc}"


def _private_key(path: str):
    """The private key in `path` and "", or None and why not."""
    data, why = _read(path)
    if data is None:
        return None, why
    from cryptography.hazmat.primitives import serialization  # lazy: as x509 above

    match = _PEM_KEY.search(data)
    if match is None:
        labels = _labels(data)
        if "OPENSSH PRIVATE KEY" in labels:
            return None, (f"{path} is an OpenSSH key; the charger reads PEM: ssh-keygen -p "
                          f"-m PKCS8 -f {path}")
        if _loads(lambda d: serialization.load_der_private_key(d, password=None), data):
            return None, (f"{path} is a DER key; the charger reads PEM: openssl pkey -inform "
                          f"DER -in {path} -out {Path(path).stem}.pem")
        return None, (f"{path} {_holds(labels)}, not a private key (PEM, -----BEGIN PRIVATE "
                      "KEY-----)")
    if match.group(1) == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in match.group(0):
        return None, (f"{path} is protected by a passphrase, which the charger has no way to "
                      f"be given: openssl pkey -in {path} -out {Path(path).stem}.plain.key "
                      "(then keep that file mode 0600)")
    try:
        return serialization.load_pem_private_key(match.group(0), password=None), ""
    except (ValueError, TypeError) as exc:
        return None, f"{path} holds a private key that does not parse: {exc}"


def _loads(load: Callable[[bytes], object], data: bytes) -> bool:
    try:
        load(data)
    except (ValueError, TypeError):
        return False
    return True


def _same_public_key(certificate, key) -> bool:
    from cryptography.hazmat.primitives.serialization import (  # lazy: as x509 above
        Encoding, PublicFormat)

    def spki(public) -> bytes:
        return public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)

    return spki(certificate.public_key()) == spki(key.public_key())


def crl_file_problem(path: str) -> Optional[str]:
    """Why `path` is not a readable PEM file of certificate revocation lists (None: it is)."""
    data, why = _read(path)
    if data is None:
        return why
    from cryptography import x509  # lazy: only a configured CRL needs cryptography

    blocks = _PEM_CRL.findall(data)
    if not blocks:
        if _loads(x509.load_der_x509_crl, data):
            return (f"{path} is a DER CRL; the charger reads PEM: openssl crl -inform DER "
                    f"-in {path} -out crl.pem")
        return f"{path} holds no certificate revocation list (PEM, -----BEGIN X509 CRL-----)"
    for block in blocks:
        try:
            x509.load_pem_x509_crl(block)
        except ValueError as exc:
            return f"{path} holds a CRL that does not parse: {exc}"
    return None
