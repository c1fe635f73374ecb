"""Is a firmware signing certificate revoked? SignedUpdateFirmware's RevokedCertificate.

A certificate on the signing path (the signing certificate and any intermediate given with
it) that names `http://` or `https://` URIs in its CRL Distribution Points is looked up in
the certificate revocation list published there. A CRL counts only if its issuer is the
certificate's issuer (the installed ManufacturerRootCertificate or the intermediate that
issued it), by name and by signature, and, when the time is known, its nextUpdate has not
passed. A verified CRL is kept in memory until its nextUpdate, so the next request whose
certificates name the same CRL fetches nothing. The bytes are fetched by the runtime (the
FetchCrls action, chargepoint/maintenance.py); everything here is pure and `cryptography`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from cryptography import x509

from chargepoint.events import FetchedCrl
from chargepoint.model.certificates import describe

#: The URI schemes a CRL is fetched from (LDAP and the like are not).
SCHEMES = ("http://", "https://")
#: A larger CRL is refused: a signing CA's list is a few kB, and the card is small.
MAX_CRL_BYTES = 1024 * 1024
#: All the CRLs of one request within this, well under a CSMS's call timeout.
FETCH_WITHIN_S = 10.0
#: CRLs kept; the oldest goes first (a CSMS cannot fill the memory with URIs).
CACHE_SIZE = 16


class CrlProblem(ValueError):
    """A CRL that cannot be used; the message says why."""


@dataclass(frozen=True)
class Listed:
    """A certificate of the signing path whose issuer publishes a CRL at `urls`."""

    certificate: x509.Certificate
    issuer: x509.Certificate
    urls: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    """One certificate's status: "good", "revoked" or "unknown", and in words where from
    (the URI) or why it is unknown (each URI and its reason)."""

    status: str
    certificate: x509.Certificate
    detail: str


def distribution_points(cert: x509.Certificate) -> tuple[str, ...]:
    """The http(s) URIs of `cert`'s CRL Distribution Points, in order (none: no extension)."""
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return ()
    urls = []
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier) \
                    and name.value.lower().startswith(SCHEMES) and name.value not in urls:
                urls.append(name.value)
    return tuple(urls)


def listed(path: list[x509.Certificate]) -> list[Listed]:
    """The certificates of `path` (signing certificate first, the root last) whose CRL is to
    be looked at, each with the certificate that issued it."""
    found = []
    for cert, issuer in zip(path, path[1:]):
        urls = distribution_points(cert)
        if urls:
            found.append(Listed(cert, issuer, urls))
    return found


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from its PEM or DER bytes; CrlProblem if it is neither."""
    if not data:
        raise CrlProblem("the CRL is empty")
    if len(data) > MAX_CRL_BYTES:
        raise CrlProblem(f"the CRL is larger than {MAX_CRL_BYTES} bytes")
    pem = data.lstrip().startswith(b"-----BEGIN")
    try:
        return (x509.load_pem_x509_crl(data) if pem else x509.load_der_x509_crl(data))
    except ValueError as exc:
        raise CrlProblem(f"not a {'PEM' if pem else 'DER'} CRL ({exc})") from None


def checked_crl(data: bytes, issuer: x509.Certificate,
                now_utc: Optional[float]) -> x509.CertificateRevocationList:
    """The CRL of `data` once found to be `issuer`'s (name and signature) and, when the time
    is known (`now_utc`), not past its nextUpdate; CrlProblem saying why not."""
    crl = load_crl(data)
    if crl.issuer != issuer.subject:
        raise CrlProblem(f"the CRL is issued by {crl.issuer.rfc4514_string()}, not by "
                         f"{describe(issuer)}")
    try:
        valid = crl.is_signature_valid(issuer.public_key())
    except (TypeError, ValueError) as exc:
        raise CrlProblem(f"the CRL's signature cannot be checked ({exc})") from None
    if not valid:
        raise CrlProblem(f"the CRL is not signed by {describe(issuer)}")
    next_update = crl.next_update_utc
    if now_utc is not None and next_update is not None \
            and next_update.timestamp() <= now_utc:
        raise CrlProblem(f"the CRL expired at {next_update.isoformat()} (its nextUpdate)")
    return crl


def is_revoked(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> bool:
    return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


class CrlCache:
    """Verified CRLs by URI, each kept until its nextUpdate (one without is not kept)."""

    def __init__(self, size: int = CACHE_SIZE):
        self._size = size
        self._held: dict[str, tuple[x509.Certificate, x509.CertificateRevocationList]] = {}

    def get(self, url: str, issuer: x509.Certificate,
            now_utc: Optional[float]) -> Optional[x509.CertificateRevocationList]:
        """The CRL of `url` from `issuer` while it is current (time unknown: as kept)."""
        held = self._held.get(url)
        if held is None or held[0] != issuer:
            return None
        crl = held[1]
        if now_utc is not None and crl.next_update_utc.timestamp() <= now_utc:
            del self._held[url]
            return None
        return crl

    def put(self, url: str, issuer: x509.Certificate,
            crl: x509.CertificateRevocationList) -> None:
        if crl.next_update_utc is None:
            return
        self._held.pop(url, None)
        self._held[url] = (issuer, crl)
        while len(self._held) > self._size:
            del self._held[next(iter(self._held))]

    def missing(self, found: list[Listed], now_utc: Optional[float]) -> tuple[str, ...]:
        """The URIs to fetch: those of each certificate no CRL kept here answers for."""
        urls: list[str] = []
        for entry in found:
            if not any(self.get(url, entry.issuer, now_utc) is not None for url in entry.urls):
                urls += [url for url in entry.urls if url not in urls]
        return tuple(urls)

    def verdict(self, entry: Listed, fetched: Mapping[str, FetchedCrl],
                now_utc: Optional[float]) -> Verdict:
        """`entry`'s status from the first of its URIs with a usable CRL, kept or just
        `fetched` (a verified one is kept); "unknown" with every URI's reason if none."""
        reasons = []
        for url in entry.urls:
            crl = self.get(url, entry.issuer, now_utc)
            if crl is None:
                got = fetched.get(url)
                if got is None:
                    reasons.append(f"{url}: not fetched")
                    continue
                if got.data is None:
                    reasons.append(got.reason)          # it names the URI
                    continue
                try:
                    crl = checked_crl(got.data, entry.issuer, now_utc)
                except CrlProblem as exc:
                    reasons.append(f"{url}: {exc}")
                    continue
                self.put(url, entry.issuer, crl)
            if is_revoked(crl, entry.certificate):
                return Verdict("revoked", entry.certificate,
                               f"{describe(entry.certificate)} is revoked (the CRL of "
                               f"{describe(entry.issuer)} at {url} lists it)")
            return Verdict("good", entry.certificate, url)
        return Verdict("unknown", entry.certificate,
                       f"the revocation status of {describe(entry.certificate)} could not be "
                       f"checked: {'; '.join(reasons)}")

