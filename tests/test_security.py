"""The OCPP 1.6 Security Whitepaper end to end: the real firmware loop (tests/harness.py)
against the loopback CSMS on real sockets, TLS with a PKI made here (trustme, cryptography).

TC_073 to TC_078 and TC_083 to TC_087 of the OCTT, the link's TLS refusals each with its
security event, a profile upgrade that falls back, and a power cut after InstallCertificate
and after CertificateSigned.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
import stat

import pytest
import trustme
from cryptography import x509

from chargepoint.csms.server import LocalCsms
from chargepoint.model.certificates import hash_data
from chargepoint.model.charger_certificate import _public_pem, key_id_of
from tests import pki
from tests.harness import Firmware, wait_until
from tests.test_diagnostics import members
from tests.test_tls import BareServer, server_context

CP = "CP-1"
KEY = "0123456789abcdef0123"
NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def client_ca():
    return trustme.CA()


def booted(server: LocalCsms, fw: Firmware, count: int = 1) -> Firmware:
    server.wait_connected(CP, timeout=10, count=count)
    server.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, timeout=10)
    fw.settle()
    return fw


def events(server: LocalCsms, kind: str) -> list:
    return [r for r in server.records("SecurityEventNotification") if r["type"] == kind]


def root_ids(cert_pem: bytes) -> dict:
    return hash_data(x509.load_pem_x509_certificate(cert_pem))


@pytest.fixture
def plain(tmp_path):
    """A profile-0 firmware booted against a ws:// CSMS."""
    server = LocalCsms(port=0).start()
    fw = Firmware(tmp_path, server.url).start()
    booted(server, fw)
    yield server, fw
    fw.stop()
    server.stop()


# --------------------------------------------------------------------------- the root store

def test_tc075_tc076_roots_installed_listed_and_deleted(plain, ca):
    server, fw = plain
    manufacturer = pki.pem(pki.certificate(ca=True, common_name="Maker Root")[0])
    for kind, pem in (("ManufacturerRootCertificate", manufacturer),
                      ("CentralSystemRootCertificate", ca.cert_pem.bytes().decode())):
        assert server.call(CP, "InstallCertificate", {"certificateType": kind,
                                                      "certificate": pem}) == \
            {"status": "Accepted"}
        got = server.call(CP, "GetInstalledCertificateIds", {"certificateType": kind})
        assert got == {"status": "Accepted", "certificateHashData": [root_ids(pem.encode())]}
    ids = root_ids(ca.cert_pem.bytes())
    assert server.call(CP, "DeleteCertificate", {"certificateHashData": ids}) == \
        {"status": "Accepted"}
    assert server.call(CP, "DeleteCertificate", {"certificateHashData": ids}) == \
        {"status": "NotFound"}
    assert server.call(CP, "GetInstalledCertificateIds",
                       {"certificateType": "CentralSystemRootCertificate"}) == \
        {"status": "NotFound"}
    server.wait_for("SecurityEventNotification",
                    lambda r: "deleted" in r.get("techInfo", ""), timeout=10)
    assert len(events(server, "ReconfigurationOfSecurityParameters")) == 3
    server.assert_no_violations()


def test_tc078_an_expired_csms_root_is_rejected_with_its_security_event(plain):
    server, fw = plain
    expired = pki.pem(pki.certificate(ca=True, not_before=-3 * pki.DAY,
                                      not_after=-pki.DAY)[0])
    assert server.call(CP, "InstallCertificate", {
        "certificateType": "CentralSystemRootCertificate", "certificate": expired}) == \
        {"status": "Rejected"}
    event = server.wait_for("SecurityEventNotification",
                            lambda r: r["type"] == "InvalidCentralSystemCertificate",
                            timeout=10)
    assert "expired" in event["techInfo"]


def test_startup_and_reset_are_security_events_sent_before_the_reset(tmp_path):
    server = LocalCsms(port=0).start()
    fw = booted(server, Firmware(tmp_path, server.url, {"csms": {"security_events": "on"}})
                .start())
    server.wait_for("SecurityEventNotification", lambda r: r["type"] == "StartupOfTheDevice",
                    timeout=10)
    assert server.call(CP, "Reset", {"type": "Soft"}) == {"status": "Accepted"}
    server.wait_for("SecurityEventNotification", lambda r: r["type"] == "ResetOrReboot",
                    timeout=10)
    fw.advance(11)
    assert wait_until(lambda: fw.outcome is not None, timeout=10)
    fw.stop()
    server.stop()


def test_frames_that_are_not_ocpp_are_invalid_messages_once_an_hour(tmp_path):
    """Answered inside the RPC endpoint (not JSON, a wrong MessageTypeId) or against the
    schema: each kind is an InvalidMessages event, and a flood of one is one event."""
    server = LocalCsms(port=0).start()
    fw = booted(server, Firmware(tmp_path, server.url, {"csms": {"security_events": "on"}})
                .start())
    try:
        for _ in range(20):
            assert server.send_raw(CP, '[2, "m1", "Heartbeat", {')[2] == "FormationViolation"
        assert server.send_raw(CP, '[7, "m2", "Heartbeat", {}]')[2] == "FormationViolation"
        assert server.send_raw(CP, '[2, "m3", "ClearCache", {"x": 1}]')[2] == \
            "FormationViolation"
        server.wait_for("SecurityEventNotification",
                        lambda r: r.get("techInfo") == "ClearCache: FormationViolation",
                        timeout=10)
        fw.settle()
        infos = [r.get("techInfo") for r in events(server, "InvalidMessages")]
        assert sorted(infos) == ["ClearCache: FormationViolation",
                                 "frame: FormationViolation"], infos
        logged = [e for e in fw.station.services.security_events.entries()
                  if e["type"] == "InvalidMessages"]
        assert len(logged) == 2                           # 21 alike: one row
    finally:
        fw.stop()
        server.stop()


def test_extended_trigger_message_answers_every_message_it_names(plain):
    server, fw = plain
    for name, action in (("BootNotification", "BootNotification"),
                         ("Heartbeat", "Heartbeat"),
                         ("StatusNotification", "StatusNotification"),
                         ("MeterValues", "MeterValues"),
                         ("LogStatusNotification", "LogStatusNotification"),
                         ("FirmwareStatusNotification", "SignedFirmwareStatusNotification")):
        before = len(server.records(action))
        assert server.call(CP, "ExtendedTriggerMessage", {"requestedMessage": name}) == \
            {"status": "Accepted"}, name
        assert wait_until(lambda: len(server.records(action)) > before, timeout=10), name
    assert server.records("LogStatusNotification")[-1]["status"] == "Idle"
    assert server.call(CP, "ExtendedTriggerMessage", {"requestedMessage": "StatusNotification",
                                                      "connectorId": 9}) == \
        {"status": "Rejected"}
    server.assert_no_violations()


def test_a_root_installed_survives_a_power_cut_right_after_the_answer(tmp_path, ca):
    server = LocalCsms(port=0).start()
    try:
        fw = booted(server, Firmware(tmp_path, server.url).start())
        assert server.call(CP, "InstallCertificate", {
            "certificateType": "CentralSystemRootCertificate",
            "certificate": ca.cert_pem.bytes().decode()}) == {"status": "Accepted"}
        fw.cut_power()
        fw.start()
        booted(server, fw, count=2)
        assert server.call(CP, "GetInstalledCertificateIds", {
            "certificateType": "CentralSystemRootCertificate"})["certificateHashData"] == \
            [root_ids(ca.cert_pem.bytes())]
        fw.stop()
    finally:
        server.stop()


# --------------------------------------------------------------------------- profile 1

def test_tc073_tc085_a_new_authorization_key_in_hex_is_used_from_the_next_connection(tmp_path):
    accepted = {CP: KEY}
    server = LocalCsms(port=0, basic_auth=lambda user, pw: accepted.get(user) == pw).start()
    try:
        fw = booted(server, Firmware(tmp_path, server.url, {"csms": {
            "security_profile": 1, "authorization_key": KEY}}).start())
        accepted[CP] = "OCA_OCTT_admin_test"
        assert server.call(CP, "ChangeConfiguration", {
            "key": "AuthorizationKey",
            "value": "4F43415F4F4354545F61646D696E5F74657374"}) == {"status": "Accepted"}
        booted(server, fw, count=2)
        assert server.handshakes[-1].user == CP
        fw.stop()
    finally:
        server.stop()


# --------------------------------------------------------------------------- upgrades

def _tls_csms(ca, **kw) -> LocalCsms:
    return LocalCsms(port=0, ssl_context=server_context(ca), basic_auth={CP: KEY}, **kw).start()


def test_tc083_tc084_an_upgrade_to_profile_2_and_no_downgrade(tmp_path, ca):
    plain = LocalCsms(port=0, basic_auth={CP: KEY}).start()
    tls = _tls_csms(ca)
    try:
        fw = booted(plain, Firmware(tmp_path, plain.url, {"csms": {
            "security_profile": 1, "authorization_key": KEY, "tls_url": tls.url}}).start())
        assert plain.call(CP, "ChangeConfiguration", {"key": "SecurityProfile",
                                                      "value": "2"}) == {"status": "Rejected"}
        assert plain.call(CP, "InstallCertificate", {
            "certificateType": "CentralSystemRootCertificate",
            "certificate": ca.cert_pem.bytes().decode()}) == {"status": "Accepted"}
        assert plain.call(CP, "ChangeConfiguration", {"key": "SecurityProfile",
                                                      "value": "2"}) == {"status": "Accepted"}
        booted(tls, fw)
        assert tls.call(CP, "GetConfiguration", {"key": ["SecurityProfile"]})[
            "configurationKey"][0]["value"] == "2"
        assert tls.call(CP, "ChangeConfiguration", {"key": "SecurityProfile",
                                                    "value": "1"}) == {"status": "Rejected"}
        fw.restart()
        booted(tls, fw, count=2)                  # the upgrade outlives a restart
        fw.stop()
    finally:
        plain.stop()
        tls.stop()


def test_an_upgrade_that_cannot_connect_falls_back_to_the_previous_profile(tmp_path, ca):
    plain = LocalCsms(port=0, basic_auth={CP: KEY}).start()
    stranger = trustme.CA()                      # the TLS CSMS's certificate is not trusted
    tls = _tls_csms(stranger)
    try:
        fw = booted(plain, Firmware(tmp_path, plain.url, {"csms": {
            "security_profile": 1, "authorization_key": KEY, "tls_url": tls.url}}).start())
        plain.call(CP, "InstallCertificate", {"certificateType": "CentralSystemRootCertificate",
                                              "certificate": ca.cert_pem.bytes().decode()})
        assert plain.call(CP, "ChangeConfiguration", {"key": "SecurityProfile",
                                                      "value": "2"}) == {"status": "Accepted"}
        booted(plain, fw, count=2)
        assert fw.runtime.keys.int("SecurityProfile") == 1
        assert not tls.received
        plain.wait_for("SecurityEventNotification",
                       lambda r: r["type"] == "InvalidCentralSystemCertificate", timeout=10)
        plain.wait_for("SecurityEventNotification",
                       lambda r: "back to 1" in r.get("techInfo", ""), timeout=10)
        fw.stop()
    finally:
        plain.stop()
        tls.stop()


# --------------------------------------------------------------------------- TLS refusals

def _leaf(ca, **kw):
    return ca.issue_cert("127.0.0.1", "localhost", **kw)


@pytest.mark.parametrize("case", ["unknown CA", "expired", "not yet valid", "wrong host"])
def test_tc086_a_csms_certificate_not_to_be_trusted_is_refused_with_its_event(tmp_path, ca,
                                                                               case):
    contexts = {
        "unknown CA": lambda: server_context(trustme.CA()),
        "expired": lambda: server_context(ca, leaf=_leaf(
            ca, not_before=NOW - 3 * pki.DAY, not_after=NOW - pki.DAY)),
        "not yet valid": lambda: server_context(ca, leaf=_leaf(
            ca, not_before=NOW + pki.DAY, not_after=NOW + 3 * pki.DAY)),
        "wrong host": lambda: server_context(ca, leaf=ca.issue_cert("csms.example.org")),
    }
    server = LocalCsms(port=0, ssl_context=contexts[case](), basic_auth={CP: KEY}).start()
    try:
        fw = _profile_2(tmp_path, server.url, ca)
        try:
            assert wait_until(lambda: _logged(fw, "InvalidCentralSystemCertificate"),
                              timeout=10), case
            assert not server.received
            # The event waits in the outbox; a CSMS the charger trusts receives it.
            server.stop()
            server.ssl_context = server_context(ca)
            server.start()
            event = server.wait_for("SecurityEventNotification", lambda r: r["type"] ==
                                    "InvalidCentralSystemCertificate", timeout=15)
            assert "not trusted" in event["techInfo"]
        finally:
            fw.stop()
    finally:
        server.stop()


@pytest.mark.parametrize("case,ciphers,version,kind", [
    ("TLS 1.1 only", "ALL:@SECLEVEL=0", ssl.TLSVersion.TLSv1_1, "InvalidTLSVersion"),
    ("CBC suites only", "ECDHE-ECDSA-AES128-SHA:AES128-SHA", ssl.TLSVersion.TLSv1_2,
     "InvalidTLSCipherSuite"),
])
def test_a_csms_with_old_tls_or_weak_suites_is_refused_with_its_event(tmp_path, ca, caplog,
                                                                       case, ciphers, version,
                                                                       kind):
    # A bare TLS server: it answers a failed handshake with its alert, as OpenSSL does.
    ctx = server_context(ca, ciphers=ciphers, versions=(version, version))
    with BareServer(ssl_context=ctx) as server:
        fw = _profile_2(tmp_path, f"wss://127.0.0.1:{server.port}/ocpp", ca)
        try:
            assert wait_until(lambda: _logged(fw, kind), timeout=10), case
        finally:
            fw.stop()
    assert kind in caplog.text or "TLS handshake failed" in caplog.text


def _profile_2(tmp_path, url, ca) -> Firmware:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Firmware(tmp_path, url, {"csms": {
        "security_profile": 2, "authorization_key": KEY, "ca_file": str(ca_file)}}).start()


def _logged(fw: Firmware, kind: str) -> bool:
    return any(e["type"] == kind for e in fw.station.services.security_events.entries())


# --------------------------------------------------------------------------- profile 3

def _mutual_tls(ca, client_ca) -> ssl.SSLContext:
    ctx = server_context(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    client_ca.configure_trust(ctx)
    return ctx


def test_tc074_tc077_tc087_the_charger_certificate_renewed_by_request(tmp_path, ca, client_ca,
                                                                        caplog, ftp, served):
    caplog.set_level(logging.DEBUG)
    server = LocalCsms(port=0, ssl_context=_mutual_tls(ca, client_ca)).start()
    first = client_ca.issue_cert(CP, common_name=CP)
    for name, blob in (("ca.pem", ca.cert_pem), ("cp.pem", first.cert_chain_pems[0]),
                       ("cp.key", first.private_key_pem)):
        blob.write_to_path(str(tmp_path / name))
    csrs: list[str] = []
    server.handlers["SignCertificate"] = lambda cp, p: csrs.append(p["csr"]) or \
        {"status": "Accepted"}
    try:
        fw = booted(server, Firmware(tmp_path, server.url, {
            "log": {"frames": True}, "ocpp": {"CpoName": "ACME"},
            "csms": {"security_profile": 3, "ca_file": str(tmp_path / "ca.pem"),
                     "client_cert": str(tmp_path / "cp.pem"),
                     "client_key": str(tmp_path / "cp.key")}}).start())
        assert server.peer_subject(CP)["commonName"] == CP                      # TC_087
        # TC_077: a chain that is not for the CSR's key
        assert server.call(CP, "ExtendedTriggerMessage",
                           {"requestedMessage": "SignChargePointCertificate"}) == \
            {"status": "Accepted"}
        assert wait_until(lambda: len(csrs) == 1, timeout=10)
        wrong = client_ca.issue_cert(CP, common_name=CP).cert_chain_pems[0].bytes().decode()
        assert server.call(CP, "CertificateSigned", {"certificateChain": wrong}) == \
            {"status": "Rejected"}
        server.wait_for("SecurityEventNotification",
                        lambda r: r["type"] == "InvalidChargePointCertificate", timeout=10)
        # TC_074: a new key pair, its CSR signed, the new certificate used on reconnecting
        assert server.call(CP, "ExtendedTriggerMessage",
                           {"requestedMessage": "SignChargePointCertificate"}) == \
            {"status": "Accepted"}
        assert wait_until(lambda: len(csrs) == 2, timeout=10)
        # The first CSR's key went when the second replaced it, not at the next restart.
        [key] = (tmp_path / "charger-keys").glob("*.key")
        csr = x509.load_pem_x509_csr(csrs[1].encode())
        assert key.name == f"charger-{key_id_of(_public_pem(csr.public_key()))}.key"
        assert csr.subject.rfc4514_string() == f"O=ACME,CN={CP}"
        chain = pki.sign_csr(client_ca, csrs[1])
        assert server.call(CP, "CertificateSigned", {"certificateChain": chain}) == \
            {"status": "Accepted"}
        booted(server, fw, count=2)
        serial = x509.load_pem_x509_certificate(chain.encode()).serial_number
        assert int(server.peer_certificate(CP)["serialNumber"], 16) == serial
        # The private keys: 0600 files in a 0700 directory, never in a log or a frame.
        keys = sorted((tmp_path / "charger-keys").glob("*.key"))
        assert len(keys) == 1                  # the abandoned first CSR's key is deleted
        assert all(stat.S_IMODE(os.stat(k).st_mode) == 0o600 for k in keys)
        assert stat.S_IMODE(os.stat(tmp_path / "charger-keys").st_mode) == 0o700
        secrets = [k.read_text().splitlines()[1] for k in keys]
        text = caplog.text + "".join(str(r) for r in server.log)
        assert not any(s in text for s in secrets)
        assert not any(s.encode() in (tmp_path / "chargepoint.db").read_bytes()
                       for s in secrets)
        # Nor in a diagnostics archive the CSMS asks for.
        mark = len(server.received)
        name = server.call(CP, "GetDiagnostics", {"location": ftp.url("files/")})["fileName"]
        server.wait_for("DiagnosticsStatusNotification", lambda r: r["status"] == "Uploaded",
                        after=mark, timeout=30)
        files = members(served / "files" / name)
        assert "SignCertificate" in files["frames.jsonl"]      # the renewal's frames are in it
        assert not any(s in text for s in secrets for text in files.values())
        # A power cut right after: the new certificate stays in use.
        fw.cut_power()
        fw.start()
        booted(server, fw, count=3)
        assert int(server.peer_certificate(CP)["serialNumber"], 16) == serial
        fw.stop()
    finally:
        server.stop()
