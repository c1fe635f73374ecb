"""The security services alone (chargepoint/model/certificates.py, charger_certificate.py,
security_profile.py, security_events.py), built by `build_services` on a real SQLite file
with the RPC endpoint as their link: no Station, socket or thread (as tests/test_model.py).
"""
from __future__ import annotations

import json

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from chargepoint import actions as act
from chargepoint.model import security_events
from chargepoint.model.certificates import hash_data, load_chain
from chargepoint.model.clock import StationClock
from chargepoint.model.connector import ConnectorInfo
from chargepoint.model.services import build_services
from chargepoint.ocpp_keys import OcppKeys, authorization_password
from chargepoint.protocol.rpc import RpcEndpoint
from chargepoint.store import Store
from tests import pki
from tests.test_model import BOOT, NOW

import time

KEY = "0123456789abcdef0123"


def build(tmp_path, ocpp=None, profile=0, client_certificate=None, ca_configured=False,
          events="on"):
    store = Store(tmp_path / "cp.db")
    keys = OcppKeys(store, {"SecurityProfile": str(profile), **(ocpp or {})}, {})
    rpc = RpcEndpoint()
    services = build_services(keys, store, StationClock(NOW, time.time()), rpc,
                              [ConnectorInfo(1, max_current_a=32.0)], BOOT, 30.0, "CP-7",
                              profile, client_certificate, ca_configured, events)
    return services, rpc


def queued(services, action="SecurityEventNotification") -> list[dict]:
    return [item.payload for item in services.outbox if item.action == action]


def calls(rpc, action) -> list[dict]:
    return [json.loads(text)[3] for text in rpc.take_outgoing() if f'"{action}"' in text]


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


# ------------------------------------------------------------------ hash data
def test_hash_data_is_the_whitepapers_issuer_name_key_and_serial(ca):
    root = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    spki = root.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)

    def sha256(data: bytes) -> str:
        h = hashes.Hash(hashes.SHA256())
        h.update(data)
        return h.finalize().hex()
    # An EC P-256 key's BIT STRING is the last 65 bytes of its SubjectPublicKeyInfo.
    assert hash_data(root) == {"hashAlgorithm": "SHA256",
                               "issuerNameHash": sha256(root.issuer.public_bytes()),
                               "issuerKeyHash": sha256(spki[-65:]),
                               "serialNumber": format(root.serial_number, "x")}


def test_the_rsa_issuer_key_hash_is_over_its_pkcs1_key():
    rsa_ca = trustme.CA(key_type=trustme.KeyType.RSA)
    root = x509.load_pem_x509_certificate(rsa_ca.cert_pem.bytes())
    spki = root.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    pkcs1 = root.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.PKCS1)
    assert spki.endswith(pkcs1)              # the BIT STRING's contents end the SPKI
    h = hashes.Hash(hashes.SHA256())
    h.update(pkcs1)
    assert hash_data(root)["issuerKeyHash"] == h.finalize().hex()


# ------------------------------------------------------------------ the root store
def test_a_root_installed_is_listed_once_and_survives_a_restart(tmp_path, ca):
    services, _ = build(tmp_path)
    root = ca.cert_pem.bytes().decode()
    assert services.certificates.install("CentralSystemRootCertificate", root) == "Accepted"
    assert services.certificates.install("CentralSystemRootCertificate", root) == "Accepted"
    ids = services.certificates.installed_ids("CentralSystemRootCertificate")
    assert ids == [hash_data(load_chain(root)[0])]
    assert services.certificates.installed_ids("ManufacturerRootCertificate") == []
    assert services.security_profile.link_security().roots_pem.strip() == root.strip()
    services.store.close()
    again, _ = build(tmp_path)
    assert again.certificates.installed_ids("CentralSystemRootCertificate") == ids


@pytest.mark.parametrize("make,why", [
    (lambda ca: pki.pem(pki.certificate(ca=False)[0]), "not a CA"),
    (lambda ca: pki.pem(pki.certificate(ca=True, not_after=-pki.DAY,
                                        not_before=-2 * pki.DAY)[0]), "expired"),
    (lambda ca: pki.pem(pki.certificate(ca=True, not_before=pki.DAY,
                                        not_after=2 * pki.DAY)[0]), "not valid before"),
    (lambda ca: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "PEM"),
])
def test_an_invalid_csms_root_is_rejected_with_its_security_event(tmp_path, ca, make, why):
    services, _ = build(tmp_path)
    assert services.certificates.install("CentralSystemRootCertificate", make(ca)) == "Rejected"
    assert services.certificates.installed() == []
    events = queued(services)
    assert [e["type"] for e in events] == ["InvalidCentralSystemCertificate"]
    assert why in events[0]["techInfo"]


def test_the_store_holds_at_most_certificate_store_max_length(tmp_path):
    services, _ = build(tmp_path, ocpp={"CertificateStoreMaxLength": "2"})
    roots = [pki.pem(pki.certificate(ca=True, common_name=f"r{i}")[0]) for i in range(3)]
    status = [services.certificates.install("ManufacturerRootCertificate", r) for r in roots]
    assert status == ["Accepted", "Accepted", "Rejected"]


def test_the_last_csms_root_is_not_deleted_while_tls_needs_it(tmp_path, ca):
    services, _ = build(tmp_path, profile=2, ocpp={"AuthorizationKey": KEY})
    root = ca.cert_pem.bytes().decode()
    services.certificates.install("CentralSystemRootCertificate", root)
    ids = services.certificates.installed_ids("CentralSystemRootCertificate")[0]
    assert services.certificates.delete(ids, 2) == "Failed"
    other = pki.pem(pki.certificate(ca=True, common_name="second")[0])
    services.certificates.install("CentralSystemRootCertificate", other)
    assert services.certificates.delete(ids, 2) == "Accepted"
    assert services.certificates.delete(ids, 2) == "NotFound"
    assert len(services.certificates.installed()) == 1


def test_without_tls_the_last_csms_root_may_go(tmp_path, ca):
    services, _ = build(tmp_path)
    services.certificates.install("CentralSystemRootCertificate", ca.cert_pem.bytes().decode())
    ids = services.certificates.installed_ids("CentralSystemRootCertificate")[0]
    assert services.certificates.delete({**ids, "serialNumber": "0" + ids["serialNumber"]},
                                        0) == "Accepted"       # leading zeros: same serial


def test_additional_root_certificate_check_takes_only_a_root_signed_by_the_old(tmp_path, ca):
    services, _ = build(tmp_path, ocpp={"AdditionalRootCertificateCheck": "true"})
    certs = services.certificates
    assert certs.install("CentralSystemRootCertificate", ca.cert_pem.bytes().decode()) == \
        "Accepted"
    stranger = pki.pem(pki.certificate(ca=True, common_name="stranger")[0])
    assert certs.install("CentralSystemRootCertificate", stranger) == "Rejected"
    successor = pki.pem(pki.certificate(ca, ca=True, common_name="successor")[0])
    assert certs.install("CentralSystemRootCertificate", successor) == "Accepted"
    assert [c.fallback for c in certs.installed()] == [True, False]
    services.security_profile.connected()       # profile 0: no TLS trusted anything yet
    assert len(certs.installed()) == 2


# ------------------------------------------------------------------ security events
def test_an_event_is_logged_and_queued_once_an_hour_with_the_same_detail(tmp_path):
    services, _ = build(tmp_path)
    events = services.security_events
    assert events.record("InvalidTLSVersion", "TLS 1.1") is True
    assert events.record("InvalidTLSVersion", "TLS 1.1") is False
    assert events.record("InvalidTLSVersion", "TLS 1.0") is True
    assert [e["type"] for e in queued(services)] == ["InvalidTLSVersion", "InvalidTLSVersion"]
    assert [e["notified"] for e in events.entries()] == [True, False, True]
    with pytest.raises(ValueError):
        events.record("SomethingElse")


def test_the_security_log_is_bounded_and_survives_a_restart(tmp_path, monkeypatch):
    monkeypatch.setattr(security_events, "LOG_ROWS", 5)
    services, _ = build(tmp_path)
    for i in range(9):
        services.security_events.record("InvalidMessages", f"frame {i}")
    services.store.close()
    again, _ = build(tmp_path)
    kept = again.security_events.entries()
    assert [e["techInfo"] for e in kept] == [f"frame {i}" for i in range(4, 9)]


def test_a_flood_of_invalid_messages_is_one_row_an_hour_counted_not_written(tmp_path):
    services, _ = build(tmp_path)
    events = services.security_events
    for _ in range(500):
        events.record("InvalidMessages", "frame: FormationViolation")
    events.record("ResetOrReboot", "Soft")
    events.record("ResetOrReboot", "Soft")                # not floodable: each is written
    assert [e["type"] for e in events.entries()] == ["InvalidMessages", "ResetOrReboot",
                                                      "ResetOrReboot"]
    assert len(queued(services)) == 2                    # one InvalidMessages, one reset
    services.clock.observe(NOW + security_events.REPEAT_WINDOW_S + 1)
    assert events.record("InvalidMessages", "frame: FormationViolation") is True
    last = events.entries()[-1]
    assert last["techInfo"] == "frame: FormationViolation (and 499 more in the hour before)"
    assert queued(services)[-1]["techInfo"] == last["techInfo"]


def test_auto_sends_events_once_the_csms_speaks_the_whitepaper(tmp_path):
    services, _ = build(tmp_path, events="auto")
    assert services.security_events.record("InvalidMessages", "a") is False
    services.security_events.csms_speaks_whitepaper()
    assert services.security_events.record("InvalidMessages", "b") is True
    services.store.close()
    again, _ = build(tmp_path, events="auto")             # remembered
    assert again.security_events.sending()
    assert [e["techInfo"] for e in queued(again)] == ["b"]
    assert [e["notified"] for e in again.security_events.entries()] == [False, True]


def test_auto_sends_events_with_tls_profiles_and_off_never(tmp_path):
    assert build(tmp_path / "a", profile=2, events="auto")[0].security_events.sending()
    off, _ = build(tmp_path / "b", profile=3, events="off")
    assert off.security_events.record("InvalidMessages", "x") is False
    assert off.security_events.entries()[-1]["type"] == "InvalidMessages"


def test_clearing_the_log_is_its_first_entry(tmp_path):
    services, _ = build(tmp_path)
    services.security_events.clear("operator")
    assert [e["type"] for e in services.security_events.entries()] == ["SecurityLogWasCleared"]


# ------------------------------------------------------------------ the charger's certificate
def _request(services, rpc, cpo="ACME CPO"):
    services.keys.change("CpoName", cpo)
    services.effects.take()
    rpc.connection_made()
    services.link.registration = "Accepted"
    assert services.charger_certificate.request("test")
    stored = [a for a in services.effects.take() if isinstance(a, act.StorePrivateKey)]
    rpc.next_call(services.clock.now, True, services.delivery)
    csr = calls(rpc, "SignCertificate")[0]["csr"]
    return stored, csr


def test_a_csr_names_the_charger_and_the_cpo_and_its_key_goes_to_the_runtime_only(tmp_path):
    services, rpc = build(tmp_path)
    stored, csr_pem = _request(services, rpc)
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CP-7"
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "ACME CPO"
    assert len(stored) == 1 and b"PRIVATE KEY" in stored[0].pem
    assert "PRIVATE" not in repr(stored[0])
    key = serialization.load_pem_private_key(stored[0].pem, None)
    assert key.public_key() == csr.public_key()
    services.store.close()
    assert b"PRIVATE" not in (tmp_path / "cp.db").read_bytes()


def test_a_signed_certificate_for_the_csr_is_accepted_and_used(tmp_path, ca):
    services, rpc = build(tmp_path, profile=0)
    stored, csr = _request(services, rpc)
    chain = pki.sign_csr(ca, csr)
    assert services.charger_certificate.signed(chain) == "Accepted"
    active = services.charger_certificate.active()
    assert active.chain == chain and active.key_id == stored[0].key_id
    assert services.security_profile.link_security().charger_key_id == stored[0].key_id


@pytest.mark.parametrize("bad,why", [
    (lambda ca, csr: pki.pem(pki.certificate(ca, common_name="CP-7")[0]), "not for the key"),
    (lambda ca, csr: pki.sign_csr(ca, csr, common_name="CP-8"), "not issued to CP-7"),
    (lambda ca, csr: pki.sign_csr(ca, csr, not_before=-3 * pki.DAY, not_after=-pki.DAY),
     "expired"),
    (lambda ca, csr: pki.sign_csr(ca, csr).replace(
        ca.cert_pem.bytes().decode(), trustme.CA().cert_pem.bytes().decode()), "not signed"),
    (lambda ca, csr: pki.sign_csr(ca, csr) + "\n" * 10_000, "CertificateSignedMaxChainSize"),
])
def test_an_invalid_chain_is_rejected_with_its_security_event(tmp_path, ca, bad, why):
    services, rpc = build(tmp_path)
    _, csr = _request(services, rpc)
    assert services.charger_certificate.signed(bad(ca, csr)) == "Rejected"
    assert services.charger_certificate.active() is None
    event = queued(services)[-1]
    assert event["type"] == "InvalidChargePointCertificate" and why in event["techInfo"]


def test_a_chain_without_a_request_is_rejected(tmp_path, ca):
    services, _ = build(tmp_path)
    chain = pki.pem(pki.certificate(ca, common_name="CP-7")[0])
    assert services.charger_certificate.signed(chain) == "Rejected"


# ------------------------------------------------------------------ the security profile
def test_an_upgrade_needs_its_prerequisites_and_a_downgrade_is_refused(tmp_path, ca):
    services, _ = build(tmp_path, profile=0)
    profile = services.security_profile
    assert profile.change("1")[0] == "Rejected"                  # no AuthorizationKey
    services.keys.change("AuthorizationKey", KEY)
    assert profile.change("2") == ("Rejected", "security profile 2 cannot be used: no "
                                   "CentralSystemRootCertificate is installed")
    services.effects.take()
    assert profile.change("1") == ("Accepted", "")
    emitted = services.effects.take()
    assert isinstance(emitted[-1], act.Reconnect)
    assert emitted[-2] == act.LinkSecurity(1, "", None, None, True)
    assert profile.change("0")[0] == "Rejected"
    assert profile.change("3")[0] == "Rejected"                  # no charger certificate
    assert services.keys.int("SecurityProfile") == 1


def test_an_upgrade_that_cannot_connect_falls_back_and_one_that_can_stays(tmp_path, ca):
    services, _ = build(tmp_path, profile=1, ocpp={"AuthorizationKey": KEY})
    services.certificates.install("CentralSystemRootCertificate", ca.cert_pem.bytes().decode())
    profile = services.security_profile
    assert profile.change("2")[0] == "Accepted" and profile.on_trial == 1
    profile.failed(2, "TLS handshake failed")
    assert services.keys.int("SecurityProfile") == 1 and profile.on_trial is None
    assert services.effects.take()[-2:] == [act.LinkSecurity(1, ca.cert_pem.bytes().decode(),
                                                             None, None, False),
                                            act.Reconnect("back to security profile 1")]
    assert profile.change("2")[0] == "Accepted"
    profile.connected()
    profile.failed(2, "too late")                 # a trial that has ended is not undone
    assert services.keys.int("SecurityProfile") == 2 and profile.on_trial is None


def test_an_upgrade_outlives_a_restart_and_the_configured_profile_is_a_floor(tmp_path):
    services, _ = build(tmp_path, profile=0, ocpp={"AuthorizationKey": KEY})
    assert services.security_profile.change("1")[0] == "Accepted"
    services.store.close()
    again, _ = build(tmp_path, profile=0, ocpp={"AuthorizationKey": KEY})
    assert again.keys.int("SecurityProfile") == 1
    again.store.close()
    higher, _ = build(tmp_path, profile=2, ocpp={"AuthorizationKey": KEY})
    assert higher.keys.int("SecurityProfile") == 2


@pytest.mark.parametrize("value,password", [
    ("4F43415F4F4354545F61646D696E5F74657374", b"OCA_OCTT_admin_test"),   # TC_073's
    ("0123456789abcdef0123", b"0123456789abcdef0123"),      # 20 hex digits: 10 bytes, literal
    ("Zq7-secret-key-0123456789", b"Zq7-secret-key-0123456789"),
])
def test_an_authorization_key_in_hex_is_its_bytes(value, password):
    assert authorization_password(value) == password
