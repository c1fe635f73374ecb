"""A power cut (SIGKILL of the real process) at every durable step of InstallCertificate and
of the charger certificate's renewal (CSR, CertificateSigned, the reconnection with it), as
tests/test_update_kills.py does for updates: started again, the store is consistent.

tests/kill_step_driver.py runs the firmware and kills it at the Nth commit edge or key file
rename after the CSMS's frame arrived. Consistent means: the database is whole; a root the
CSMS was told Accepted is installed, any other root is installed whole or not at all; the
charger connects with security profile 3 using a certificate it holds the key of, the new
one once CertificateSigned was answered Accepted; no key file is left half-renamed.
"""
from __future__ import annotations

import re
import sqlite3
import ssl
import stat
import time

import pytest
import trustme
from cryptography import x509

from bench._common import FirmwareProcess
from chargepoint.csms.server import LocalCsms
from chargepoint.model.certificates import hash_data
from tests import pki
from tests.harness import wait_until
from tests.test_tls import server_context

CP = "CP-BENCH"
DRIVER = "tests.kill_step_driver"


def steps_in(fw: FirmwareProcess) -> list[str]:
    return re.findall(r"^step \d+: (.*)$", fw.log.read_text(errors="replace"), re.M)


def integrity(db) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def start(workdir, server, kill_at=None, armed_by="", **kw) -> FirmwareProcess:
    """The firmware in `workdir`; with `kill_at`, under the driver that kills it there."""
    extra = {} if kill_at is None else {
        "module": DRIVER, "env": {"KILL_ARMED_BY": armed_by, "KILL_AT": str(kill_at)}}
    fw = FirmwareProcess(workdir, server.url, ocpp={"MeterValueSampleInterval": 0}, **kw,
                         **extra)
    return fw.start()


def wait_dead_or(fw: FirmwareProcess, condition, timeout: float = 15.0) -> bool:
    """Until the process died (True) or `condition()` holds (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fw.proc.poll() is not None:
            return True
        if condition():
            return False
        time.sleep(0.02)
    raise AssertionError(f"neither killed nor done:\n{fw.tail()}")


# --------------------------------------------------------------------------- InstallCertificate

@pytest.fixture(scope="module")
def root_pem():
    return trustme.CA().cert_pem.bytes().decode()


def _install(csms, fw, root_pem) -> dict | None:
    """InstallCertificate; its answer, or None when the process died before answering."""
    try:
        return csms.call(CP, "InstallCertificate", {
            "certificateType": "CentralSystemRootCertificate", "certificate": root_pem},
            timeout=10)
    except (ConnectionError, TimeoutError):
        assert fw.proc.wait(timeout=10) == -9, fw.tail()
        return None


def test_a_kill_at_every_step_of_install_certificate_leaves_a_consistent_store(
        csms, tmp_path, root_pem):
    ids = hash_data(x509.load_pem_x509_certificate(root_pem.encode()))
    counting = start(tmp_path / "count", csms, kill_at=0, armed_by="InstallCertificate")
    csms.wait_connected(CP, timeout=20)
    assert _install(csms, counting, root_pem) == {"status": "Accepted"}
    total = len(steps_in(counting))
    counting.stop()
    assert total >= 2, steps_in(counting)                  # at least one commit's edges
    for kill_at in range(1, total + 1):
        workdir = tmp_path / f"kill-{kill_at}"
        fw = start(workdir, csms, kill_at=kill_at, armed_by="InstallCertificate")
        csms.wait_connected(CP, timeout=20, count=csms.connection_count(CP) + 1)
        answer = _install(csms, fw, root_pem)
        assert fw.proc.wait(timeout=10) == -9, fw.tail()
        killed_at = steps_in(fw)[-1]
        again = start(workdir, csms)
        try:
            csms.wait_connected(CP, timeout=20, count=csms.connection_count(CP) + 1)
            got = csms.call(CP, "GetInstalledCertificateIds",
                            {"certificateType": "CentralSystemRootCertificate"})
            assert got in ({"status": "NotFound"},
                           {"status": "Accepted", "certificateHashData": [ids]}), killed_at
            if answer == {"status": "Accepted"}:
                assert got["status"] == "Accepted", killed_at
        finally:
            again.stop()
        assert integrity(fw.db) == "ok", killed_at


# --------------------------------------------------------------------------- the charger's certificate

@pytest.fixture(scope="module")
def pki_pair():
    return trustme.CA(), trustme.CA()          # the CSMS's CA, the chargers' CA


def _mutual_tls(ca, client_ca):
    ctx = server_context(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    client_ca.configure_trust(ctx)
    return ctx


def _serial(csms) -> int:
    return int(csms.peer_certificate(CP)["serialNumber"], 16)


def _renew(csms, fw, client_ca, csrs: list, connections: int) -> tuple[dict | None, int]:
    """Ask for a new certificate, sign its CSR, send it: CertificateSigned's answer (None
    when the process died first) and the serial sent (0 when none was)."""
    serial = 0
    try:
        assert csms.call(CP, "ExtendedTriggerMessage",
                         {"requestedMessage": "SignChargePointCertificate"},
                         timeout=10) == {"status": "Accepted"}
        if wait_dead_or(fw, lambda: len(csrs) == 1):
            return None, 0
        chain = pki.sign_csr(client_ca, csrs[0])
        serial = x509.load_pem_x509_certificate(chain.encode()).serial_number
        answer = csms.call(CP, "CertificateSigned", {"certificateChain": chain}, timeout=10)
    except (ConnectionError, TimeoutError):
        return None, serial
    assert answer == {"status": "Accepted"}, answer
    wait_dead_or(fw, lambda: csms.connection_count(CP) > connections
                 and csms.peer_certificate(CP) is not None and _serial(csms) == serial)
    return answer, serial


def test_a_kill_at_every_step_of_a_certificate_renewal_leaves_one_that_connects(
        tmp_path, pki_pair):
    ca, client_ca = pki_pair
    csms = LocalCsms(host="localhost", port=0, ssl_context=_mutual_tls(ca, client_ca)).start()
    csrs: list[str] = []
    csms.handlers["SignCertificate"] = lambda cp, p: csrs.append(p["csr"]) or \
        {"status": "Accepted"}
    first = client_ca.issue_cert(CP, common_name=CP)
    files = tmp_path / "pki"
    files.mkdir()
    for name, blob in (("ca.pem", ca.cert_pem), ("cp.pem", first.cert_chain_pems[0]),
                       ("cp.key", first.private_key_pem)):
        blob.write_to_path(str(files / name))
    first_serial = x509.load_pem_x509_certificate(first.cert_chain_pems[0].bytes()).serial_number
    tls = {"security_profile": 3, "ca_file": str(files / "ca.pem"),
           "client_cert": str(files / "cp.pem"), "client_key": str(files / "cp.key")}
    try:
        counting = start(tmp_path / "count", csms, kill_at=0,
                         armed_by="ExtendedTriggerMessage", csms=tls)
        csms.wait_connected(CP, timeout=20)
        connections = csms.connection_count(CP)
        answer, serial = _renew(csms, counting, client_ca, csrs, connections)
        assert answer == {"status": "Accepted"} and _serial(csms) == serial
        # Up to the new certificate's file, written for the reconnection (what follows is
        # the new link's own traffic).
        seen = steps_in(counting)
        total = max(i for i, what in enumerate(seen, 1) if re.match(r"wrote .*\.crt", what))
        counting.stop()
        print("\n".join(seen[:total]))
        assert total >= 6, seen             # the key, the CSR's row, the certificate, its file
        for kill_at in range(1, total + 1):
            csrs.clear()
            workdir = tmp_path / f"kill-{kill_at}"
            fw = start(workdir, csms, kill_at=kill_at, armed_by="ExtendedTriggerMessage",
                       csms=tls)
            csms.wait_connected(CP, timeout=20, count=csms.connection_count(CP) + 1)
            connections = csms.connection_count(CP)
            answer, serial = _renew(csms, fw, client_ca, csrs, connections)
            assert fw.proc.wait(timeout=15) == -9, fw.tail()
            killed_at = steps_in(fw)[-1]
            again = start(workdir, csms, csms=tls)
            try:
                csms.wait_connected(CP, timeout=20, count=csms.connection_count(CP) + 1)
                used = _serial(csms)
                if answer == {"status": "Accepted"}:
                    assert used == serial, killed_at
                else:
                    assert used in (first_serial, serial), killed_at
            finally:
                again.stop()
            assert integrity(fw.db) == "ok", killed_at
            keys = workdir / "charger-keys"
            left = sorted(p.name for p in keys.iterdir()) if keys.is_dir() else []
            assert not [name for name in left if name.endswith(".tmp")], (killed_at, left)
            assert all(stat.S_IMODE((keys / name).stat().st_mode) == 0o600 for name in left)
    finally:
        csms.stop()
