"""Signed firmware without a Station: the signing certificate's chain and the signature
(chargepoint/model/firmware_signing.py, chargepoint/releases.py), and the signed update's
steps in the model (chargepoint/model/firmware.py), built by `build_services` on a real
SQLite file with the RPC endpoint as its link (as tests/test_security_model.py).

The end-to-end runs, with the real process and a real bundle, are in
tests/test_octt_signed_firmware.py.
"""
from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest
import trustme
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from chargepoint import __version__
from chargepoint import actions as act
from chargepoint import releases
from chargepoint.model import firmware_signing as signing
from chargepoint.model.certificates import MANUFACTURER_ROOT
from chargepoint.model.clock import StationClock
from chargepoint.model.connector import ConnectorInfo
from chargepoint.model.firmware import STATE_KEY, RunningRelease
from chargepoint.model.services import build_services
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.protocol.rpc import RpcEndpoint
from chargepoint.store import Store
from tests import pki
from tests.test_model import BOOT, NOW

DIGEST = hashlib.sha256(b"a release bundle").digest()


@pytest.fixture(scope="module")
def root():
    return trustme.CA(organization_name="Charger Maker Root")


@pytest.fixture(scope="module")
def signer(root):
    """(certificate PEM, key PEM, certificate) of a code-signing certificate under `root`."""
    return pki.code_signing(root)


def cert_of(ca: trustme.CA) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.cert_pem.bytes())


# ------------------------------------------------------------------ the certificate
@pytest.mark.parametrize("rsa_key", [False, True], ids=["ecdsa", "rsa"])
def test_a_code_signing_certificate_under_the_root_signs_and_verifies(root, rsa_key):
    pem, key_pem, _ = pki.code_signing(root, rsa_key=rsa_key)
    leaf = signing.signing_certificate(pem, [cert_of(root)], time.time())
    signature = signing.sign(key_pem, DIGEST)
    signing.verify(leaf, base64.b64decode(signature), DIGEST)
    with pytest.raises(signing.SigningProblem, match="does not match"):
        signing.verify(leaf, base64.b64decode(signature),
                       hashlib.sha256(b"another bundle").digest())


def test_an_intermediate_given_with_the_certificate_completes_the_chain(root):
    intermediate = root.create_child_ca()
    pem, _, cert = pki.code_signing(intermediate)
    chain = pem + intermediate.cert_pem.bytes().decode()
    assert signing.signing_certificate(chain, [cert_of(root)], time.time()) == cert
    with pytest.raises(signing.SigningProblem, match="not issued under an installed"):
        signing.signing_certificate(pem, [cert_of(root)], time.time())


@pytest.mark.parametrize("make, why", [
    (lambda root: pki.code_signing(trustme.CA())[0], "not issued under an installed"),
    (lambda root: pki.code_signing(root, not_before=-10 * pki.DAY,
                                   not_after=-pki.DAY)[0], "expired"),
    (lambda root: pki.code_signing(root, not_before=pki.DAY)[0], "not valid before"),
    (lambda root: pki.code_signing(root, usage=[ExtendedKeyUsageOID.SERVER_AUTH])[0],
     "does not allow codeSigning"),
    (lambda root: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
     "not a PEM certificate"),
], ids=["other-root", "expired", "not-yet-valid", "server-auth", "garbage"])
def test_a_signing_certificate_is_refused_with_its_reason(root, make, why):
    with pytest.raises(signing.SigningProblem, match=why):
        signing.signing_certificate(make(root), [cert_of(root)], time.time())


def test_no_manufacturer_root_means_no_signing_certificate_is_trusted(signer):
    with pytest.raises(signing.SigningProblem, match="no ManufacturerRootCertificate"):
        signing.signing_certificate(signer[0], [], time.time())


def test_a_signature_must_be_base64():
    with pytest.raises(signing.SigningProblem, match="not base64"):
        signing.decode_signature("not*base64")
    assert signing.decode_signature("AAEC\nAw==") == b"\x00\x01\x02\x03"


def test_the_bundle_file_is_signed_and_verified_whole(tmp_path, root, signer):
    bundle = tmp_path / "b.tar"
    bundle.write_bytes(b"x" * 3_000_000)
    signature = releases.sign_bundle(bundle, signer[1])
    releases.verify_bundle_signature(bundle, signature, signer[0], root.cert_pem.bytes().decode(),
                                     time.time())
    bundle.write_bytes(b"x" * 2_999_999 + b"y")
    with pytest.raises(releases.ReleaseError, match="does not match"):
        releases.verify_bundle_signature(bundle, signature, signer[0])


# ------------------------------------------------------------------ the signed update's steps
class Update:
    """The model's services and the CSMS's side of their CALLs (each answered `{}`)."""

    def __init__(self, tmp_path, root, release=None):
        self.services, self.rpc = _build(tmp_path, release or RunningRelease(__version__))
        self.tmp_path = tmp_path
        if root is not None:
            assert self.services.certificates.install(
                MANUFACTURER_ROOT, root.cert_pem.bytes().decode()) == "Accepted"
        self.sent: list[tuple[str, dict]] = []
        self.rpc.connection_made()
        self.services.link.registration = "Accepted"
        self.actions: list = []
        #: The statuses answered once CRLs were fetched.
        self.later: list[str] = []
        self.answer()

    def answer(self) -> None:
        services, rpc = self.services, self.rpc
        while True:
            self.actions += services.effects.take()
            out = rpc.next_call(services.clock.now, True, services.delivery)
            if out is None:
                return
            self.sent.append((out.action, out.payload))
            event = rpc.receive(json.dumps([3, out.unique_id, {}]))
            if event.out.on_result:
                event.out.on_result(event.payload)

    def advance(self, seconds: float) -> None:
        services = self.services
        services.clock.observe(services.clock.now + seconds)
        services.timers.fire_due(services.clock.now)
        self.answer()

    def statuses(self) -> list[tuple[str, int]]:
        return [(p["status"], p.get("requestId")) for a, p in self.sent
                if a == "SignedFirmwareStatusNotification"]

    def events(self) -> list[str]:
        """The security events sent, but that of the root's installation."""
        return [p["type"] for a, p in self.sent if a == "SecurityEventNotification"
                and not p.get("techInfo", "").startswith(f"{MANUFACTURER_ROOT} installed")]

    def of(self, kind) -> list:
        return [a for a in self.actions if isinstance(a, kind)]

    def request(self, signer, request_id=7, in_s=0.0, install_in_s=None, signature=None):
        now = self.services.clock.utc()
        status = self.services.firmware.request_signed(
            "http://127.0.0.1/b.tar", now + in_s,
            None if install_in_s is None else now + install_in_s, signer[0],
            signature or base64.b64encode(b"\x01" * 64).decode(), request_id, 0, 5,
            later=self.later.append)
        self.answer()
        return status

    def download(self, ok=True):
        (download,) = self.of(act.DownloadFirmware)[-1:]
        self.services.firmware.downloaded(download.request_id, ok, "" if ok else "HTTP 404",
                                          False)
        self.answer()
        return download.request_id


def _build(tmp_path, release: RunningRelease):
    store = Store(tmp_path / "cp.db")
    rpc = RpcEndpoint()
    services = build_services(OcppKeys(store, {}, {}), store, StationClock(NOW, time.time()),
                              rpc, [ConnectorInfo(1, max_current_a=32.0)], BOOT, 30.0, "CP-7",
                              security_events_mode="on", release=release)
    return services, rpc


def test_a_verified_signature_leads_to_the_installation_and_the_reboot(tmp_path, root, signer):
    update = Update(tmp_path, root)
    assert update.request(signer) == "Accepted"
    update.advance(0)
    request_id = update.download()
    (verify,) = update.of(act.VerifyFirmware)
    assert (verify.request_id, verify.certificate) == (request_id, signer[0])
    assert update.services.store.get_state(STATE_KEY)["phase"] == "verifying"
    assert not update.of(act.InstallFirmware)          # nothing before the signature holds
    assert update.services.firmware.signed_status == ("Downloaded", 7)
    assert update.services.firmware.status == "Downloaded"        # in OCPP 1.6's words
    update.services.firmware.verified(request_id, "verified", "")
    update.answer()
    (install,) = update.of(act.InstallFirmware)
    update.services.firmware.installed(install.request_id, True, "9.9.9", "")
    update.answer()
    assert not update.of(act.Restart)               # not before InstallRebooting is heard
    update.advance(1)
    assert update.of(act.Restart) == [act.Restart("release")]
    assert update.statuses() == [(s, 7) for s in (
        "Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting")]
    assert not [a for a, _ in update.sent if a == "FirmwareStatusNotification"]


def test_the_new_release_reports_installed_and_firmware_updated(tmp_path, root, signer):
    update = Update(tmp_path, root)
    update.request(signer)
    update.advance(0)
    update.download()
    update.services.firmware.verified(update.of(act.VerifyFirmware)[0].request_id,
                                      "verified", "")
    update.answer()
    update.services.firmware.installed(update.of(act.InstallFirmware)[0].request_id, True,
                                       "9.9.9", "")
    update.services.store.close()
    after = Update(tmp_path, None, RunningRelease("9.9.9", on_trial=True))
    assert after.services.firmware.signed_status == ("Installing", 7)
    after.services.firmware.online()
    after.services.firmware.tested(True, "")
    after.answer()
    assert after.statuses()[-1] == ("Installed", 7)
    assert "FirmwareUpdated" in after.events()
    assert after.services.store.get_state(STATE_KEY) is None
    assert after.services.firmware.signed_status == ("Idle", None)


def test_an_invalid_signature_ends_the_update_before_anything_is_installed(tmp_path, root,
                                                                           signer):
    update = Update(tmp_path, root)
    update.request(signer)
    update.advance(0)
    request_id = update.download()
    update.services.firmware.verified(request_id, "invalid-signature", "does not match")
    update.answer()
    assert update.statuses() == [("Downloading", 7), ("Downloaded", 7),
                                 ("InvalidSignature", 7)]
    assert update.events() == ["InvalidFirmwareSignature"]
    assert not update.of(act.InstallFirmware)
    assert update.services.store.get_state(STATE_KEY) is None
    assert not update.services.availability.updating


def test_a_damaged_bundle_with_a_good_signature_fails_verification(tmp_path, root, signer):
    update = Update(tmp_path, root)
    update.request(signer)
    update.advance(0)
    update.services.firmware.verified(update.download(), "invalid-bundle", "damaged")
    update.answer()
    assert update.statuses()[-1] == ("InstallVerificationFailed", 7)
    assert not update.of(act.InstallFirmware)


def test_a_certificate_not_under_the_manufacturer_root_is_refused_with_an_event(tmp_path,
                                                                                root):
    update = Update(tmp_path, root)
    assert update.request(pki.code_signing(trustme.CA())) == "InvalidCertificate"
    assert update.events() == ["InvalidFirmwareSigningCertificate"]
    assert update.services.store.get_state(STATE_KEY) is None
    assert not update.of(act.DownloadFirmware)


def test_a_signature_that_is_not_base64_is_rejected(tmp_path, root, signer):
    update = Update(tmp_path, root)
    assert update.request(signer, signature="%%%") == "Rejected"
    assert update.services.store.get_state(STATE_KEY) is None


def test_a_new_request_cancels_one_not_yet_installing_and_not_one_installing(tmp_path, root,
                                                                           signer):
    update = Update(tmp_path, root)
    assert update.request(signer, request_id=1, in_s=3600) == "Accepted"
    assert update.services.firmware.signed_status == ("DownloadScheduled", 1)
    assert update.request(signer, request_id=2) == "AcceptedCanceled"
    assert update.services.store.get_state(STATE_KEY)["request_id"] == 2
    update.advance(0)
    update.services.firmware.verified(update.download(), "verified", "")
    update.answer()
    assert update.services.store.get_state(STATE_KEY)["phase"] == "installing"
    assert update.request(signer, request_id=3) == "Rejected"
    assert update.services.store.get_state(STATE_KEY)["request_id"] == 2
    assert update.statuses()[0] == ("DownloadScheduled", 1)
    assert {rid for _, rid in update.statuses()[1:]} == {2}


def test_an_install_date_ahead_waits_in_install_scheduled(tmp_path, root, signer):
    update = Update(tmp_path, root)
    update.request(signer, install_in_s=600)
    update.advance(0)
    update.services.firmware.verified(update.download(), "verified", "")
    update.answer()
    assert update.statuses()[-2:] == [("SignatureVerified", 7), ("InstallScheduled", 7)]
    assert not update.services.availability.updating          # no hold before its time
    update.advance(590)
    assert not update.of(act.InstallFirmware)
    update.advance(11)
    assert len(update.of(act.InstallFirmware)) == 1
    assert update.statuses()[-1] == ("Installing", 7)


def test_a_failed_attempt_pauses_the_download_until_the_retry(tmp_path, root, signer):
    update = Update(tmp_path, root)
    update.services.firmware.request_signed(
        "http://127.0.0.1/b.tar", update.services.clock.utc(), None, signer[0],
        base64.b64encode(b"sig").decode(), 7, 1, 30, later=update.later.append)
    update.advance(0)
    update.download(ok=False)
    assert update.services.firmware.signed_status == ("DownloadPaused", 7)
    update.advance(31)
    update.download()
    assert [s for s, _ in update.statuses()] == ["Downloading", "DownloadPaused",
                                                 "Downloading", "Downloaded"]


def test_a_restart_while_verifying_verifies_again(tmp_path, root, signer):
    update = Update(tmp_path, root)
    update.request(signer)
    update.advance(0)
    request_id = update.download()
    update.services.store.close()
    again = Update(tmp_path, None, RunningRelease(update.services.firmware.release.version))
    (verify,) = again.of(act.VerifyFirmware)
    assert verify.request_id == request_id
    assert again.statuses() == []
    again.services.firmware.online()
    again.answer()
    assert again.statuses() == [("Downloaded", 7)]          # told again once online
    again.services.firmware.verified(request_id, "verified", "")
    again.answer()
    assert len(again.of(act.InstallFirmware)) == 1


def test_a_restart_while_the_installation_is_scheduled_keeps_its_date(tmp_path, root,
                                                                     signer):
    update = Update(tmp_path, root)
    update.request(signer, install_in_s=600)
    update.advance(0)
    update.services.firmware.verified(update.download(), "verified", "")
    update.answer()
    update.services.store.close()
    again = Update(tmp_path, None, RunningRelease(__version__))
    assert again.services.firmware.signed_status == ("InstallScheduled", 7)
    again.advance(590)
    assert not again.of(act.InstallFirmware)
    again.advance(11)
    assert len(again.of(act.InstallFirmware)) == 1


def test_an_unsigned_update_keeps_its_own_notification(tmp_path, root):
    update = Update(tmp_path, root)
    update.services.firmware.request("http://127.0.0.1/b.tar", update.services.clock.utc(),
                                     0, 5)
    update.advance(0)
    assert update.services.firmware.signed_status == ("Downloading", None)
    assert [p["status"] for a, p in update.sent if a == "FirmwareStatusNotification"] == \
        ["Downloading"]
    assert update.statuses() == []


def test_the_manufacturer_root_must_be_valid_now():
    """A root that expired (in the PKI's own terms, before its code-signing certificate):
    nothing it issued is trusted."""
    root, key = pki.certificate(ca=True, not_before=-30 * pki.DAY, not_after=-pki.DAY,
                                common_name="Old Maker Root")
    pem, _, _ = pki.code_signing((root, key))
    with pytest.raises(signing.SigningProblem, match="Old Maker Root: expired"):
        signing.signing_certificate(pem, [root], time.time())
    fresh, fresh_key = pki.certificate(ca=True, common_name="Maker Root")
    pem, _, _ = pki.code_signing((fresh, fresh_key))
    assert signing.signing_certificate(pem, [fresh], time.time())
