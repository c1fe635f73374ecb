"""OCTT TC_080 and TC_081 (Security Whitepaper) with the real process and a real bundle of
this checkout: a SignedUpdateFirmware whose bundle is signed by the manufacturer's
code-signing key (`chargepoint release sign`, a real process) under the
ManufacturerRootCertificate the CSMS installed, which switches the running firmware to the
new release; one whose signature is not the bundle's, which installs nothing; a signing
certificate from another CA (InvalidCertificate); an update scheduled for later cancelled
by a new one (AcceptedCanceled); a power cut while the installation waits for its
installDateTime. The test PKI is made here (tests/pki.py).

The steps without a process (the chain, the signature, each transition) are in
tests/test_firmware_signing.py.
"""
from __future__ import annotations

import base64
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
import trustme

from chargepoint import __version__
from chargepoint import release_guard as guard
from chargepoint.csms.operator import Operator
from tests import pki
from tests import release_harness as harness

#: The release tests/test_octt_firmware_update.py builds too: the same bundle of the shelf.
NEXT = f"{__version__}.7"
CP = "CP-S1"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def bundle(bundle_shelf):
    return bundle_shelf.get(NEXT)


@pytest.fixture(scope="module")
def maker():
    """The manufacturer: its root (the chargers' ManufacturerRootCertificate) and a
    code-signing certificate under it, with its key."""
    root = trustme.CA(organization_name="Charger Maker")
    certificate, key, _ = pki.code_signing(root)
    return root, certificate, key


@pytest.fixture
def csms(csms):
    """conftest.py's loopback CSMS, with Heartbeats out of the way of a release's steps."""
    csms.boot_response = {"status": "Accepted", "interval": 300}
    return csms


@pytest.fixture
def running(tmp_path, csms, maker):
    """The firmware run by hand against `csms`, registered, with the manufacturer's root
    installed by the CSMS; (process, state directory, operator)."""
    state = tmp_path / "state"
    state.mkdir()
    firmware = harness.HandRun(tmp_path, harness.write_config(tmp_path, csms.url, CP),
                               state).start()
    operator = Operator(csms, tmp_path / "operator", printer=lambda line: None)
    try:
        csms.wait_for("BootNotification", lambda r: r["firmwareVersion"] == __version__,
                      timeout=60)
        csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, timeout=30)
        assert csms.call(CP, "InstallCertificate", {
            "certificateType": "ManufacturerRootCertificate",
            "certificate": maker[0].cert_pem.bytes().decode()}) == {"status": "Accepted"}
        yield firmware, state, operator
    finally:
        operator.stop()
        firmware.stop()
        firmware.kill()
    assert "Traceback" not in firmware.text()


def sign(tmp_path, bundle, key_pem: bytes) -> str:
    """`chargepoint release sign`, as the manufacturer runs it."""
    key = tmp_path / "signing-key.pem"
    key.write_bytes(key_pem)
    out = tmp_path / "bundle.sig"
    subprocess.run([sys.executable, "-m", "chargepoint", "release", "sign", str(bundle),
                    "--key", str(key), "--out", str(out)], check=True, capture_output=True,
                   env=harness.clean_env(), cwd=harness.ROOT, timeout=60)
    return out.read_text()


def sfsn(csms, after=0) -> list[tuple[str, int]]:
    return [(r["status"], r.get("requestId"))
            for r in csms.records("SignedFirmwareStatusNotification", after=after)]


def events(csms, after=0) -> list[str]:
    return [r["type"] for r in csms.records("SecurityEventNotification", after=after)]


def nothing_installed(state) -> bool:
    return guard.current_version(state) is None and \
        not (guard.releases_dir(state) / NEXT).exists()


def test_tc_080_a_signed_update_switches_the_running_firmware_to_the_new_release(
        bundle, maker, csms, running, tmp_path):
    firmware, state, operator = running
    signature = sign(tmp_path, bundle, maker[2])
    mark = len(csms.received)
    assert operator.signed_update_firmware(CP, bundle, maker[1], signature,
                                           request_id=80) == "Accepted"
    installed = csms.wait_for("SignedFirmwareStatusNotification",
                              lambda r: r["status"] == "Installed", after=mark, timeout=240)
    assert sfsn(csms, mark) == [(status, 80) for status in (
        "Downloading", "Downloaded", "SignatureVerified", "Installing", "InstallRebooting",
        "Installed")]
    assert not csms.records("FirmwareStatusNotification", after=mark)
    rebooting = csms.wait_for("SignedFirmwareStatusNotification",
                              lambda r: r["status"] == "InstallRebooting", after=mark)
    boot = csms.wait_for("BootNotification", lambda r: r["firmwareVersion"] == NEXT,
                         after=mark)
    assert rebooting.index < boot.index < installed.index
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1
                  and r["status"] == "Available", after=boot.index, timeout=30)
    csms.wait_for("SecurityEventNotification", lambda r: r["type"] == "FirmwareUpdated",
                  after=boot.index, timeout=30)
    # Committed by the new release itself: no trial left, the new one current.
    assert guard.read_trial(state) is None
    assert guard.current_version(state) == NEXT
    # Nothing under way any more: the whitepaper's trigger says Idle.
    after = len(csms.received)
    assert csms.call(CP, "ExtendedTriggerMessage", {
        "requestedMessage": "FirmwareStatusNotification"}) == {"status": "Accepted"}
    assert csms.wait_for("SignedFirmwareStatusNotification", after=after,
                         timeout=30)["status"] == "Idle"
    assert not csms.violations


def test_tc_081_an_invalid_signature_installs_nothing(bundle, maker, csms, running,
                                                      tmp_path):
    firmware, state, operator = running
    # The manufacturer's key, but over other bytes: not the bundle's signature.
    other = tmp_path / "other.tar"
    data = bytearray(bundle.read_bytes())
    data[-1] ^= 1
    other.write_bytes(bytes(data))
    signature = sign(tmp_path, other, maker[2])
    mark = len(csms.received)
    assert operator.signed_update_firmware(CP, bundle, maker[1], signature,
                                           request_id=81) == "Accepted"
    csms.wait_for("SignedFirmwareStatusNotification",
                  lambda r: r["status"] == "InvalidSignature", after=mark, timeout=120)
    assert sfsn(csms, mark) == [("Downloading", 81), ("Downloaded", 81),
                                ("InvalidSignature", 81)]
    event = csms.wait_for("SecurityEventNotification",
                          lambda r: r["type"] == "InvalidFirmwareSignature", after=mark,
                          timeout=30)
    assert "does not match" in event["techInfo"]
    # The running release goes on, untouched: no other boot, nothing installed, no bytes
    # of the refused bundle kept.
    assert nothing_installed(state)
    assert not list((tmp_path / "state").rglob("*.bundle"))
    assert [r["firmwareVersion"] for r in csms.records("BootNotification", after=mark)] == []
    after = len(csms.received)
    assert csms.call(CP, "TriggerMessage", {"requestedMessage": "Heartbeat"}) == \
        {"status": "Accepted"}
    csms.wait_for("Heartbeat", after=after, timeout=30)
    assert firmware.proc.poll() is None
    assert "SignedUpdateFirmware 81: invalid signature, nothing installed" in firmware.text()


def test_a_signing_certificate_not_under_the_manufacturer_root_is_refused(
        bundle, maker, csms, running, tmp_path):
    firmware, state, operator = running
    stranger = trustme.CA(organization_name="Someone Else")
    certificate, key, _ = pki.code_signing(stranger)
    sign(tmp_path, bundle, key)                          # into tmp_path/bundle.sig
    (tmp_path / "stranger.pem").write_text(certificate)
    mark = len(csms.received)
    # As the demo's operator types it.
    said: list[str] = []
    operator.printer = said.append
    operator.command(f"signed-update-firmware {bundle} --certificate {tmp_path}/stranger.pem "
                     f"--signature {tmp_path}/bundle.sig", CP)
    assert said == [f"SignedUpdateFirmware sent to {CP}: InvalidCertificate"]
    event = csms.wait_for("SecurityEventNotification",
                          lambda r: r["type"] == "InvalidFirmwareSigningCertificate",
                          after=mark, timeout=30)
    assert "not issued under an installed ManufacturerRootCertificate" in event["techInfo"]
    assert sfsn(csms, mark) == []
    assert [m for m, _, _ in operator.files.requests if m == "GET"] == []
    assert nothing_installed(state)


def test_a_new_signed_update_cancels_one_not_yet_begun(bundle, maker, csms, running,
                                                       tmp_path):
    firmware, state, operator = running
    signature = sign(tmp_path, bundle, maker[2])
    mark = len(csms.received)
    assert operator.signed_update_firmware(CP, bundle, maker[1], signature, request_id=1,
                                           in_s=3600) == "Accepted"
    csms.wait_for("SignedFirmwareStatusNotification",
                  lambda r: r["status"] == "DownloadScheduled", after=mark, timeout=30)
    # The step under way, as the whitepaper's trigger asks for it.
    asked = len(csms.received)
    assert csms.call(CP, "ExtendedTriggerMessage", {
        "requestedMessage": "FirmwareStatusNotification"}) == {"status": "Accepted"}
    triggered = csms.wait_for("SignedFirmwareStatusNotification", after=asked, timeout=30)
    assert (triggered["status"], triggered["requestId"]) == ("DownloadScheduled", 1)
    # A second, with a signature that is not the bundle's: it replaces the first, which
    # is never fetched, and ends before anything is installed.
    bad = base64.b64encode(base64.b64decode(signature)[::-1]).decode()
    assert operator.signed_update_firmware(CP, bundle, maker[1], bad,
                                           request_id=2) == "AcceptedCanceled"
    csms.wait_for("SignedFirmwareStatusNotification",
                  lambda r: r["status"] == "InvalidSignature", after=mark, timeout=120)
    assert sfsn(csms, mark) == [("DownloadScheduled", 1), ("DownloadScheduled", 1),
                                ("Downloading", 2), ("Downloaded", 2),
                                ("InvalidSignature", 2)]
    assert len([m for m, _, _ in operator.files.requests if m == "GET"]) == 1
    assert nothing_installed(state)
    assert "SignedUpdateFirmware 2 of" in firmware.text() and "replaces the update" in \
        firmware.text()


def test_a_power_cut_while_the_installation_waits_for_its_date_keeps_the_update(
        bundle, maker, csms, running, tmp_path):
    """Killed (SIGKILL, the whole process group) with the signed bundle verified and its
    installDateTime ahead: started again, the old release tells InstallScheduled again and
    installs at the date; the new release reports Installed."""
    firmware, state, operator = running
    signature = sign(tmp_path, bundle, maker[2])
    mark = len(csms.received)
    sent = datetime.now(timezone.utc)
    assert operator.signed_update_firmware(CP, bundle, maker[1], signature, request_id=9,
                                           install_in_s=45) == "Accepted"
    csms.wait_for("SignedFirmwareStatusNotification",
                  lambda r: r["status"] == "InstallScheduled", after=mark, timeout=30)
    firmware.kill()
    assert guard.current_version(state) is None
    again = harness.HandRun(tmp_path, firmware.config, state).start()
    try:
        restart = len(csms.received)
        boot = csms.wait_for("BootNotification", after=restart, timeout=60)
        assert boot["firmwareVersion"] == __version__
        assert boot.wall < sent + timedelta(seconds=40), "restarted after installDateTime"
        csms.wait_for("SignedFirmwareStatusNotification",
                      lambda r: r["status"] == "Installed", after=restart, timeout=240)
        installing = csms.wait_for("SignedFirmwareStatusNotification",
                                   lambda r: r["status"] == "Installing", after=restart)
        # Not before its date (the request's installDateTime has whole seconds).
        assert installing.wall >= sent + timedelta(seconds=44)
        assert sfsn(csms, mark) == [(status, 9) for status in (
            "Downloading", "Downloaded", "SignatureVerified", "InstallScheduled",
            "InstallScheduled", "Installing", "InstallRebooting", "Installed")]
        assert guard.current_version(state) == NEXT
    finally:
        again.stop()
        again.kill()


def test_release_sign_and_verify_round_trip_as_processes(bundle, maker, tmp_path):
    """The manufacturer signs; `release verify` checks as the charger will, and a bundle
    changed by one byte, or a certificate not under the root, fails."""
    root, certificate, key = maker
    files = {name: tmp_path / name for name in ("root.pem", "signing.pem", "key.pem")}
    files["root.pem"].write_bytes(root.cert_pem.bytes())
    files["signing.pem"].write_text(certificate)
    files["key.pem"].write_bytes(key)
    sig = tmp_path / "bundle.sig"

    def release(*args):
        return subprocess.run([sys.executable, "-m", "chargepoint", "release", *map(str, args)],
                              capture_output=True, text=True, env=harness.clean_env(),
                              cwd=harness.ROOT, timeout=120)

    signed = release("sign", bundle, "--key", files["key.pem"], "--out", sig)
    assert signed.returncode == 0, signed.stderr
    checked = release("verify", bundle, "--signature", sig, "--certificate",
                      files["signing.pem"], "--root", files["root.pem"])
    assert checked.returncode == 0, checked.stderr
    assert "signature verified" in checked.stdout
    assert "it installs on this machine" in checked.stdout

    tampered = tmp_path / bundle.name
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 1
    tampered.write_bytes(bytes(data))
    refused = release("verify", tampered, "--signature", sig, "--certificate",
                      files["signing.pem"], "--root", files["root.pem"])
    assert refused.returncode == 1
    assert "the signature does not match the bundle" in refused.stderr

    stranger = trustme.CA()
    files["stranger.pem"] = tmp_path / "stranger.pem"
    files["stranger.pem"].write_bytes(stranger.cert_pem.bytes())
    refused = release("verify", bundle, "--signature", sig, "--certificate",
                      files["signing.pem"], "--root", files["stranger.pem"])
    assert refused.returncode == 1
    assert "not issued under an installed ManufacturerRootCertificate" in refused.stderr

    printed = release("sign", bundle, "--key", files["key.pem"])
    assert printed.returncode == 0
    assert base64.b64decode(printed.stdout.strip(), validate=True)
