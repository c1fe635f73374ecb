"""A revoked firmware signing certificate is refused: SignedUpdateFirmware's
RevokedCertificate (chargepoint/model/firmware_revocation.py).

First the pure check of a CRL against a certificate and its issuer, and the fetch of one
(chargepoint/transfers.py `fetch`) from a real HTTP server on loopback; then the whole
request through the real Runtime (tests/harness.py) against the loopback CSMS, the signing
certificate's CRL Distribution Point on that HTTP server.
"""
from __future__ import annotations

import base64
import json
import logging
import socket
import time
from datetime import datetime, timezone

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from chargepoint import actions as act
from chargepoint import events as ev
from chargepoint import transfers
from chargepoint.events import FetchedCrl
from chargepoint.model import firmware_revocation as revocation
from chargepoint.model import firmware_signing as signing
from chargepoint.model.firmware import RunningRelease
from tests import pki
from tests.harness import booted
from tests.test_firmware_trial import Core

DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM
CP = "CP-1"
CRL_URL = "http://crl.example/maker.crl"


@pytest.fixture(scope="module")
def root():
    return trustme.CA(organization_name="Charger Maker Root")


def cert_of(ca: trustme.CA) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.cert_pem.bytes())


def entry_for(root, cert) -> revocation.Listed:
    (entry,) = revocation.listed([cert, cert_of(root)])
    return entry


def crl_bytes(ca, revoked=(), encoding=PEM, **changes) -> bytes:
    return pki.crl(ca, revoked, **changes).public_bytes(encoding)


# ------------------------------------------------------------------ the check, pure
@pytest.mark.parametrize("encoding", [PEM, DER], ids=["pem", "der"])
def test_a_crl_listing_the_serial_revokes_the_certificate_pem_or_der(root, encoding):
    _, _, cert = pki.code_signing(root, crl_urls=(CRL_URL,))
    crl = revocation.checked_crl(crl_bytes(root, (cert.serial_number,), encoding),
                                 cert_of(root), time.time())
    assert revocation.is_revoked(crl, cert)


@pytest.mark.parametrize("encoding", [PEM, DER], ids=["pem", "der"])
def test_a_crl_without_the_serial_leaves_the_certificate_good(root, encoding):
    _, _, cert = pki.code_signing(root, crl_urls=(CRL_URL,))
    crl = revocation.checked_crl(crl_bytes(root, (cert.serial_number + 1,), encoding),
                                 cert_of(root), time.time())
    assert not revocation.is_revoked(crl, cert)


def test_a_crl_signed_by_another_key_under_the_same_name_is_refused(root):
    impostor_key = trustme.CA(organization_name="Charger Maker Root")
    data = crl_bytes((cert_of(root), serialization.load_pem_private_key(
        impostor_key.private_key_pem.bytes(), None)))
    with pytest.raises(revocation.CrlProblem, match="not signed by"):
        revocation.checked_crl(data, cert_of(root), time.time())


def test_a_crl_of_another_issuer_is_refused(root):
    with pytest.raises(revocation.CrlProblem, match="is issued by"):
        revocation.checked_crl(crl_bytes(trustme.CA()), cert_of(root), time.time())


def test_a_crl_past_its_next_update_is_refused_unless_the_time_is_unknown(root):
    data = crl_bytes(root, next_update=-pki.DAY / 24, last_update=-pki.DAY)
    with pytest.raises(revocation.CrlProblem, match="expired"):
        revocation.checked_crl(data, cert_of(root), time.time())
    assert revocation.checked_crl(data, cert_of(root), None).issuer == cert_of(root).subject


@pytest.mark.parametrize("data, why", [
    (b"", "empty"),
    (b"\x30\x03garbage", "not a DER CRL"),
    (b"-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n", "not a PEM CRL"),
    (b"x" * (revocation.MAX_CRL_BYTES + 1), "larger than"),
], ids=["empty", "der-garbage", "pem-garbage", "too-large"])
def test_garbage_is_no_crl(root, data, why):
    with pytest.raises(revocation.CrlProblem, match=why):
        revocation.checked_crl(data, cert_of(root), time.time())


def test_the_distribution_points_of_the_path_are_its_http_uris(root):
    intermediate = pki.certificate(root, ca=True, common_name="Maker Signing CA",
                                   crl_urls=("http://root.example/root.crl",))
    _, _, cert = pki.code_signing(intermediate, crl_urls=(
        "ldap://directory.example/cn=crl", "https://crl.example/a.crl", "HTTP://b/b.crl"))
    found = revocation.listed([cert, intermediate[0], cert_of(root)])
    assert [(e.certificate, e.issuer, e.urls) for e in found] == [
        (cert, intermediate[0], ("https://crl.example/a.crl", "HTTP://b/b.crl")),
        (intermediate[0], cert_of(root), ("http://root.example/root.crl",))]
    _, _, without = pki.code_signing(root)
    assert revocation.listed([without, cert_of(root)]) == []


def test_the_signing_path_ends_at_the_installed_root(root):
    intermediate = root.create_child_ca()
    pem, _, cert = pki.code_signing(intermediate)
    path = signing.signing_path(pem + intermediate.cert_pem.bytes().decode(),
                                [cert_of(root)], time.time())
    assert path == [cert, cert_of(intermediate), cert_of(root)]


def test_a_verified_crl_is_kept_until_its_next_update_and_answers_for_its_issuer(root):
    _, _, cert = pki.code_signing(root, crl_urls=(CRL_URL,))
    entry = entry_for(root, cert)
    cache = revocation.CrlCache()
    now = time.time()
    assert cache.missing([entry], now) == (CRL_URL,)
    fetched = {CRL_URL: FetchedCrl(CRL_URL, crl_bytes(root, next_update=pki.DAY))}
    assert cache.verdict(entry, fetched, now).status == "good"
    assert cache.missing([entry], now) == ()
    assert cache.verdict(entry, {}, now).status == "good"          # from what is kept
    assert cache.missing([entry], now + 2 * 86400) == (CRL_URL,)   # past its nextUpdate
    other = trustme.CA()
    _, _, stranger = pki.code_signing(other, crl_urls=(CRL_URL,))
    assert cache.missing([entry_for(other, stranger)], now) == (CRL_URL,)


def test_an_unusable_crl_is_unknown_with_each_uri_and_its_reason(root):
    second = "http://crl2.example/maker.crl"
    _, _, cert = pki.code_signing(root, crl_urls=(CRL_URL, second))
    cache = revocation.CrlCache()
    verdict = cache.verdict(entry_for(root, cert), {
        CRL_URL: FetchedCrl(CRL_URL, reason=f"{CRL_URL}: connection refused"),
        second: FetchedCrl(second, crl_bytes(trustme.CA()))}, time.time())
    assert verdict.status == "unknown"
    assert f"{CRL_URL}: connection refused" in verdict.detail
    assert f"{second}: the CRL is issued by" in verdict.detail
    assert cache.missing([entry_for(root, cert)], time.time()) == (CRL_URL, second)


def test_the_second_uri_answers_when_the_first_cannot(root):
    second = "http://crl2.example/maker.crl"
    _, _, cert = pki.code_signing(root, crl_urls=(CRL_URL, second))
    verdict = revocation.CrlCache().verdict(entry_for(root, cert), {
        CRL_URL: FetchedCrl(CRL_URL, reason=f"{CRL_URL}: HTTP 404 Not Found"),
        second: FetchedCrl(second, crl_bytes(root, (cert.serial_number,), DER))},
        time.time())
    assert verdict.status == "revoked"
    assert second in verdict.detail


# ------------------------------------------------------------------ the fetch, real HTTP
def test_a_crl_is_fetched_whole_within_its_byte_and_time_limits(http, served):
    (served / "maker.crl").write_bytes(b"c" * 5000)
    assert transfers.fetch(http.url("maker.crl"), 5000, 5.0) == b"c" * 5000
    with pytest.raises(transfers.TransferError, match="more than the 4999"):
        transfers.fetch(http.url("maker.crl"), 4999, 5.0)
    with pytest.raises(transfers.TransferError, match="HTTP 404"):
        transfers.fetch(http.url("missing.crl"), 5000, 5.0)
    http.stall_after, http.stall_s = 100, 30.0
    with pytest.raises(transfers.TransferError, match="no whole answer within 0.5 s"):
        transfers.fetch(http.url("maker.crl"), 5000, 0.5)


# ------------------------------------------------------------------ SignedUpdateFirmware
#: A retrieveDateTime long past: an accepted update starts downloading at once.
PAST = "2020-01-01T00:00:00Z"
#: One far ahead: an accepted update waits (DownloadScheduled), and can be cancelled.
LATER = "2099-01-01T00:00:00Z"


def update_payload(signer_pem: str, location: str, request_id: int = 1,
                   retrieve: str = LATER) -> dict:
    return {"requestId": request_id, "retries": 0,
            "firmware": {"location": location,
                         "retrieveDateTime": retrieve,
                         "signingCertificate": signer_pem,
                         "signature": base64.b64encode(b"\x01" * 64).decode()}}


def signed_update(csms, signer_pem: str, location: str, request_id: int = 1,
                  retrieve: str = LATER) -> dict:
    return csms.call(CP, "SignedUpdateFirmware",
                     update_payload(signer_pem, location, request_id, retrieve), timeout=20)


def charger(csms, firmware, root, revocation_check="soft"):
    fw = booted(csms, firmware, {"releases": {"revocation_check": revocation_check}})
    assert csms.call(CP, "InstallCertificate", {
        "certificateType": "ManufacturerRootCertificate",
        "certificate": root.cert_pem.bytes().decode()}) == {"status": "Accepted"}
    return fw


def gets(http, name: str) -> int:
    return sum(1 for method, path, _ in http.requests if method == "GET" and path == f"/{name}")


def security_events(csms, after=0) -> list[tuple[str, str]]:
    return [(r["type"], r.get("techInfo", "")) for r in
            csms.records("SecurityEventNotification", after=after)]


def test_a_revoked_signing_certificate_is_answered_revoked_and_nothing_is_downloaded(
        csms, firmware, http, served, root):
    fw = charger(csms, firmware, root)
    pem, _, cert = pki.code_signing(root, crl_urls=(http.url("maker.crl"),))
    pki.write_crl(served / "maker.crl", pki.crl(root, (cert.serial_number,)))
    mark = len(csms.received)
    assert signed_update(csms, pem, http.url("bundle.tar"), retrieve=PAST) == \
        {"status": "RevokedCertificate"}
    event = csms.wait_for("SecurityEventNotification",
                          lambda r: r["type"] == "InvalidFirmwareSigningCertificate", after=mark)
    assert "is revoked" in event["techInfo"]
    fw.advance(120)
    assert gets(http, "maker.crl") == 1
    assert gets(http, "bundle.tar") == 0
    assert csms.records("SignedFirmwareStatusNotification", after=mark) == []
    assert fw.station.services.firmware.update is None


def test_a_revoked_intermediate_given_with_the_signing_certificate_is_answered_revoked(
        csms, firmware, http, served, root):
    fw = charger(csms, firmware, root)
    intermediate = pki.certificate(root, ca=True, common_name="Maker Signing CA",
                                   crl_urls=(http.url("root.crl"),))
    pem, _, _ = pki.code_signing(intermediate)
    pki.write_crl(served / "root.crl", pki.crl(root, (intermediate[0].serial_number,)),
                  encoding=DER)
    mark = len(csms.received)
    assert signed_update(csms, pem + pki.pem(intermediate[0]), http.url("bundle.tar")) == \
        {"status": "RevokedCertificate"}
    event = csms.wait_for("SecurityEventNotification",
                          lambda r: r["type"] == "InvalidFirmwareSigningCertificate", after=mark)
    assert event["techInfo"].startswith("CN=Maker Signing CA is revoked")
    fw.settle()
    assert gets(http, "root.crl") == 1


def test_a_crl_without_the_serial_accepts_and_a_second_request_fetches_it_no_more(
        csms, firmware, http, served, root):
    fw = charger(csms, firmware, root)
    pem, _, cert = pki.code_signing(root, crl_urls=(http.url("maker.crl"),))
    pki.write_crl(served / "maker.crl", pki.crl(root, (cert.serial_number + 1,)), encoding=DER)
    mark = len(csms.received)
    assert signed_update(csms, pem, http.url("bundle.tar")) == {"status": "Accepted"}
    csms.wait_for("SignedFirmwareStatusNotification",
                  lambda r: r["status"] == "DownloadScheduled", after=mark)
    assert gets(http, "maker.crl") == 1
    assert signed_update(csms, pem, http.url("bundle.tar"), request_id=2) == \
        {"status": "AcceptedCanceled"}
    fw.settle()
    assert gets(http, "maker.crl") == 1                  # the CRL kept answered
    assert [t for t, _ in security_events(csms, mark)
            if t == "InvalidFirmwareSigningCertificate"] == []


def test_no_crl_soft_carries_on_with_one_warning_naming_the_uri(csms, firmware, root, caplog,
                                                               unused_url):
    fw = charger(csms, firmware, root)
    pem, _, _ = pki.code_signing(root, crl_urls=(unused_url,))
    mark = len(csms.received)
    with caplog.at_level(logging.WARNING, logger="chargepoint.firmware"):
        assert signed_update(csms, pem, "http://127.0.0.1:9/bundle.tar") == \
            {"status": "Accepted"}
        csms.wait_for("SignedFirmwareStatusNotification",
                      lambda r: r["status"] == "DownloadScheduled", after=mark)
        fw.settle()
    warnings = [r.getMessage() for r in caplog.records if r.name == "chargepoint.firmware"
                and r.levelno == logging.WARNING and "unchecked" in r.getMessage()]
    assert len(warnings) == 1
    assert f"{unused_url}: connection refused" in warnings[0]
    assert warnings[0].count(unused_url) == 1
    assert [t for t, _ in security_events(csms, mark)
            if t == "InvalidFirmwareSigningCertificate"] == []


def test_no_crl_hard_answers_invalid_certificate_with_a_security_event(csms, firmware, root,
                                                                      unused_url):
    fw = charger(csms, firmware, root, "hard")
    pem, _, _ = pki.code_signing(root, crl_urls=(unused_url,))
    mark = len(csms.received)
    assert signed_update(csms, pem, "http://127.0.0.1:9/bundle.tar") == \
        {"status": "InvalidCertificate"}
    event = csms.wait_for("SecurityEventNotification",
                          lambda r: r["type"] == "InvalidFirmwareSigningCertificate", after=mark)
    assert "could not be checked" in event["techInfo"] and unused_url in event["techInfo"]
    fw.settle()
    assert csms.records("SignedFirmwareStatusNotification", after=mark) == []


def test_a_stalled_crl_server_cannot_hold_the_answer_past_the_time_limit(
        csms, firmware, http, served, root, monkeypatch):
    monkeypatch.setattr(revocation, "FETCH_WITHIN_S", 1.0)     # 10 s in service
    fw = charger(csms, firmware, root, "hard")
    pem, _, _ = pki.code_signing(root, crl_urls=(http.url("maker.crl"),))
    pki.write_crl(served / "maker.crl", pki.crl(root, tuple(range(1, 200))))
    http.stall_after, http.stall_s = 100, 30.0
    mark = len(csms.received)
    assert signed_update(csms, pem, http.url("bundle.tar")) == {"status": "InvalidCertificate"}
    event = csms.wait_for("SecurityEventNotification",
                          lambda r: r["type"] == "InvalidFirmwareSigningCertificate", after=mark)
    assert "no whole answer within 1 s" in event["techInfo"]
    fw.settle()


def test_a_crl_that_does_not_verify_is_like_no_crl(csms, firmware, http, served, root):
    fw = charger(csms, firmware, root, "hard")
    pem, _, cert = pki.code_signing(root, crl_urls=(http.url("maker.crl"),))
    pki.write_crl(served / "maker.crl", pki.crl(trustme.CA(), (cert.serial_number,)))
    assert signed_update(csms, pem, http.url("bundle.tar")) == {"status": "InvalidCertificate"}
    fw.settle()


def test_off_fetches_nothing(csms, firmware, http, served, root):
    fw = charger(csms, firmware, root, "off")
    pem, _, cert = pki.code_signing(root, crl_urls=(http.url("maker.crl"),))
    pki.write_crl(served / "maker.crl", pki.crl(root, (cert.serial_number,)))
    assert signed_update(csms, pem, http.url("bundle.tar")) == {"status": "Accepted"}
    fw.settle()
    assert gets(http, "maker.crl") == 0


@pytest.fixture
def unused_url():
    """An http URI on loopback where nothing listens (a CRL server that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/maker.crl"


class TodaysCore(Core):
    """tests/test_firmware_trial.py's core, told today's date (the test PKI's certificates
    are valid from yesterday)."""

    @staticmethod
    def _answer(action: str) -> dict:
        answer = Core._answer(action)
        if "currentTime" in answer:
            answer["currentTime"] = datetime.now(timezone.utc).isoformat(
                timespec="milliseconds").replace("+00:00", "Z")
        return answer


def test_the_answer_after_the_crls_goes_ahead_of_what_the_accepted_update_sets_going(
        tmp_path, root):
    """In the core alone (a Station on a real database): once the CRLs are in, the
    SignedUpdateFirmware's CALLRESULT is the first action of the turn, before the download
    the accepted update starts, as an answer given at once would be."""
    core = TodaysCore(tmp_path / "cp.db", RunningRelease("1.4.0"))
    try:
        core.boot()
        core.feed(ev.FrameReceived(json.dumps([2, "root", "InstallCertificate", {
            "certificateType": "ManufacturerRootCertificate",
            "certificate": root.cert_pem.bytes().decode()}])))
        pem, _, cert = pki.code_signing(root, crl_urls=(CRL_URL,))
        asked = core.feed(ev.FrameReceived(json.dumps(
            [2, "up", "SignedUpdateFirmware",
             update_payload(pem, "http://127.0.0.1/r.cpr", retrieve=PAST)])))
        [fetch] = [a for a in asked if isinstance(a, act.FetchCrls)]
        assert not [a for a in asked if isinstance(a, act.SendFrame)
                    and json.loads(a.text)[1] == "up"], "answered before its CRLs"
        out = core.feed(ev.CrlsFetched(fetch.fetch_id, (FetchedCrl(
            CRL_URL, crl_bytes(root, (cert.serial_number + 1,))),)))
        answer = next(i for i, a in enumerate(out) if isinstance(a, act.SendFrame)
                      and json.loads(a.text)[:2] == [3, "up"])
        download = next(i for i, a in enumerate(out) if isinstance(a, act.DownloadFirmware))
        assert json.loads(out[answer].text)[2] == {"status": "Accepted"}
        assert answer == 0 < download
    finally:
        core.close()
