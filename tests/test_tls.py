"""TLS that never downgrades: redirects are not followed, only the documented cipher suites
are offered (TLS 1.2 at least), and a configured CRL refuses a revoked CSMS certificate.

Real sockets on loopback: the firmware (tests/harness.py) against the loopback CSMS with a
restricted TLS context, or against a bare server written here when the CSMS must misbehave
(answer the upgrade with a redirect, or only complete the TLS handshake).
"""
import logging
import re
import socketserver
import ssl
import threading
import warnings
from pathlib import Path

import pytest
import trustme

from chargepoint.csms.server import LocalCsms
from tests import pki
from tests.harness import Firmware, wait_until

KEY = "0123456789abcdef0123"
DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def rsa_ca():
    return trustme.CA(key_type=trustme.KeyType.RSA)


def server_context(ca, *, key_type=trustme.KeyType.ECDSA, ciphers=None, versions=None,
                   leaf=None) -> ssl.SSLContext:
    """A server's TLS context: a certificate from `ca` for 127.0.0.1 and localhost, only
    `ciphers` (an OpenSSL cipher string) and only the TLS `versions` (min, max) if given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():          # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        if versions:
            ctx.minimum_version, ctx.maximum_version = versions
        if ciphers:
            ctx.set_ciphers(ciphers)
    (leaf or ca.issue_cert("127.0.0.1", "localhost", key_type=key_type)).configure_cert(ctx)
    return ctx


def profile_2(tmp_path, url, ca, **csms) -> Firmware:
    """A firmware on security profile 2 (TLS + Basic auth) trusting `ca`."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Firmware(tmp_path, url, {"csms": {"security_profile": 2, "authorization_key": KEY,
                                             "ca_file": str(ca_file), **csms}})


def run(fw: Firmware):
    fw.start()
    return fw


# --------------------------------------------------------------------------- bare servers

class BareServer(socketserver.ThreadingTCPServer):
    """A loopback server that does only what a test needs: it records every connection and
    the head of the HTTP request on it (after TLS when `ssl_context` is given), and answers
    `answer`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, answer: bytes = b"", ssl_context=None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.ssl_context = ssl_context
        self.connections = 0
        self.requests: list[bytes] = []
        self.tls_sessions: list[ssl.SSLSocket] = []
        self.shared_ciphers: list[list[str]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        server: BareServer = self.server
        server.connections += 1
        sock = self.request
        sock.settimeout(5)
        try:
            if server.ssl_context is not None:
                sock = server.ssl_context.wrap_socket(sock, server_side=True)
                server.shared_ciphers.append([c[0] for c in sock.shared_ciphers() or []])
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
            server.requests.append(head)
            if server.answer:
                sock.sendall(server.answer)
        except (OSError, ssl.SSLError):
            pass
        finally:
            sock.close()


# --------------------------------------------------------------------------- redirects

def _redirect(status: int, location: str) -> bytes:
    reason = {301: "Moved Permanently", 302: "Found", 303: "See Other",
              307: "Temporary Redirect", 308: "Permanent Redirect"}[status]
    return (f"HTTP/1.1 {status} {reason}\r\nLocation: {location}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n").encode()


@pytest.mark.parametrize("profile,status,target", [
    (2, 301, "ws"),       # from TLS to plain text
    (2, 302, "wss"),      # to another host, over TLS
    (2, 307, "ws"),
    (3, 308, "wss"),
    (1, 301, "ws"),       # Basic credentials to another host
    (0, 303, "ws"),
])
def test_a_redirect_is_never_followed(tmp_path, ca, caplog, profile, status, target):
    """The CSMS answers the upgrade with a redirect to ws:// or to another wss:// host: the
    target never sees a connection (so neither OCPP nor the Authorization header reaches it),
    the log says why and where it pointed, and the charger keeps trying its own URL."""
    tls = server_context(ca) if profile >= 2 else None
    target_tls = server_context(ca) if target == "wss" else None
    with BareServer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                    target_tls) as elsewhere:
        host = "localhost" if target == "wss" else "127.0.0.1"
        location = f"{target}://{host}:{elsewhere.port}/ocpp/CP-1"
        with BareServer(_redirect(status, location), tls) as redirector:
            scheme = "wss" if profile >= 2 else "ws"
            overrides = {"security_profile": profile}
            if profile in (1, 2):
                overrides["authorization_key"] = KEY
            ca_file = tmp_path / "ca.pem"
            ca.cert_pem.write_to_path(str(ca_file))
            if profile >= 2:
                overrides["ca_file"] = str(ca_file)
            if profile == 3:
                client = ca.issue_cert("CP-1")
                client.cert_chain_pems[0].write_to_path(str(tmp_path / "cp.pem"))
                client.private_key_pem.write_to_path(str(tmp_path / "cp.key"))
                overrides.update(client_cert=str(tmp_path / "cp.pem"),
                                 client_key=str(tmp_path / "cp.key"))
            url = f"{scheme}://127.0.0.1:{redirector.port}/ocpp"
            with caplog.at_level(logging.ERROR, "chargepoint.transport"):
                fw = run(Firmware(tmp_path, url, {"csms": overrides}))
                try:
                    assert wait_until(lambda: len(redirector.requests) >= 2, timeout=10)
                finally:
                    fw.stop()
        assert elsewhere.connections == 0 and elsewhere.requests == []
    first = redirector.requests[0].decode("latin-1")
    assert first.startswith("GET /ocpp/CP-1 HTTP/1.1")
    assert ("Authorization: Basic" in first) == (profile in (1, 2))   # to the configured URL
    assert f"the CSMS answered HTTP {status}, redirecting to {location!r}" in caplog.text
    assert "redirects are not followed" in caplog.text


# --------------------------------------------------------------------------- cipher suites

def _documented_suites() -> set[str]:
    block = DOC.read_text().split("<!-- tls-ciphers -->", 1)[1].split("<!-- end -->", 1)[0]
    return set(re.findall(r"`([A-Z0-9_-]+)`", block))


def test_the_suites_offered_are_exactly_the_documented_ones(tmp_path, ca):
    """A server that accepts every suite OpenSSL knows sees, as the suites it shares with
    the charger, exactly the charger's offer."""
    everything = server_context(ca, ciphers="ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    with BareServer(b"", everything) as server:
        fw = run(profile_2(tmp_path, f"wss://127.0.0.1:{server.port}/ocpp", ca))
        try:
            assert wait_until(lambda: server.shared_ciphers, timeout=10)
        finally:
            fw.stop()
    offered = server.shared_ciphers[0]
    assert len(offered) == len(set(offered))
    assert set(offered) == _documented_suites()
    assert len(_documented_suites()) == 7


@pytest.mark.parametrize("suite,key_type", [
    ("AES128-GCM-SHA256", trustme.KeyType.RSA),           # TLS_RSA_WITH_AES_128_GCM_SHA256
    ("AES256-GCM-SHA384", trustme.KeyType.RSA),
    ("ECDHE-ECDSA-AES128-GCM-SHA256", trustme.KeyType.ECDSA),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", trustme.KeyType.ECDSA),
])
def test_a_tls_1_2_csms_with_one_whitepaper_suite_is_reachable(tmp_path, ca, rsa_ca, suite,
                                                             key_type):
    issuer = rsa_ca if key_type == trustme.KeyType.RSA else ca
    ctx = server_context(issuer, key_type=key_type, ciphers=suite,
                         versions=(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2))
    server = LocalCsms(port=0, ssl_context=ctx, basic_auth={"CP-1": KEY})
    server.start()
    try:
        fw = run(profile_2(tmp_path, server.url, issuer))
        try:
            server.wait_for("BootNotification", timeout=10)
        finally:
            fw.stop()
    finally:
        server.stop()


@pytest.mark.parametrize("ciphers,versions,key_type", [
    # CBC with SHA-256: Python's own default would take it
    ("ECDHE-ECDSA-AES128-SHA256", (ssl.TLSVersion.TLSv1_2,) * 2, trustme.KeyType.ECDSA),
    ("ECDHE-ECDSA-AES128-SHA:AES128-SHA", (ssl.TLSVersion.TLSv1_2,) * 2,
     trustme.KeyType.ECDSA),                                              # CBC with SHA-1
    # sound, but not the whitepaper's: an RSA certificate over TLS 1.2 needs TLS_RSA_*
    ("ECDHE-RSA-AES128-GCM-SHA256", (ssl.TLSVersion.TLSv1_2,) * 2, trustme.KeyType.RSA),
    ("ALL:@SECLEVEL=0", (ssl.TLSVersion.TLSv1_1,) * 2, trustme.KeyType.ECDSA),  # TLS 1.1
])
def test_a_csms_without_any_offered_suite_is_refused(tmp_path, ca, rsa_ca, caplog, ciphers,
                                                     versions, key_type):
    issuer = rsa_ca if key_type == trustme.KeyType.RSA else ca
    ctx = server_context(issuer, key_type=key_type, ciphers=ciphers, versions=versions)
    server = LocalCsms(port=0, ssl_context=ctx, basic_auth={"CP-1": KEY})
    server.start()
    try:
        with caplog.at_level(logging.ERROR, "chargepoint.transport"):
            fw = run(profile_2(tmp_path, server.url, issuer))
            try:
                assert wait_until(lambda: "TLS handshake failed" in caplog.text, timeout=10)
            finally:
                fw.stop()
        assert not server.received and not server.handshakes
    finally:
        server.stop()


# --------------------------------------------------------------------------- revocation

@pytest.fixture
def revoked(ca):
    """A CSMS certificate from `ca`, and a CRL of `ca` that lists it."""
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    return leaf, pki.crl(ca, (pki.serial_of(leaf),))


def _csms_with(ca, leaf) -> LocalCsms:
    server = LocalCsms(port=0, ssl_context=server_context(ca, leaf=leaf),
                       basic_auth={"CP-1": KEY})
    server.start()
    return server


def _refused_with(tmp_path, ca, server, caplog, reason, **csms):
    with caplog.at_level(logging.ERROR, "chargepoint.transport"):
        fw = run(profile_2(tmp_path, server.url, ca, **csms))
        try:
            assert wait_until(lambda: reason in caplog.text, timeout=10), caplog.text
        finally:
            fw.stop()
    assert not server.received


def test_a_revoked_csms_certificate_is_refused_with_the_crl(tmp_path, ca, revoked, caplog):
    leaf, crl = revoked
    crl_file = pki.write_crl(tmp_path / "ca.crl", crl)
    server = _csms_with(ca, leaf)
    try:
        _refused_with(tmp_path, ca, server, caplog,
                      f"the CSMS's TLS certificate is not trusted: it is revoked: crl_file "
                      f"{crl_file} lists it", crl_file=str(crl_file))
    finally:
        server.stop()


def test_the_same_certificate_is_accepted_without_the_crl(tmp_path, ca, revoked):
    leaf, _ = revoked
    server = _csms_with(ca, leaf)
    try:
        fw = run(profile_2(tmp_path, server.url, ca))
        try:
            server.wait_for("BootNotification", timeout=10)
        finally:
            fw.stop()
    finally:
        server.stop()


def test_a_certificate_the_crl_does_not_list_is_accepted(tmp_path, ca, revoked):
    leaf, _ = revoked
    crl_file = pki.write_crl(tmp_path / "ca.crl", pki.crl(ca, (pki.serial_of(leaf) + 1,)))
    server = _csms_with(ca, leaf)
    try:
        fw = run(profile_2(tmp_path, server.url, ca, crl_file=str(crl_file)))
        try:
            server.wait_for("BootNotification", timeout=10)
        finally:
            fw.stop()
    finally:
        server.stop()


@pytest.mark.parametrize("which,reason", [
    ("another CA's", "has no CRL from the CA that issued it"),
    ("expired", "has expired (its nextUpdate has passed)"),
])
def test_a_crl_that_cannot_vouch_for_the_certificate_refuses_it(tmp_path, ca, caplog, which,
                                                                reason):
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    crl = pki.crl(trustme.CA()) if which == "another CA's" else \
        pki.crl(ca, next_update=-pki.DAY, last_update=-2 * pki.DAY)
    crl_file = pki.write_crl(tmp_path / "ca.crl", crl)
    server = _csms_with(ca, leaf)
    try:
        _refused_with(tmp_path, ca, server, caplog, f"crl_file {crl_file} {reason}",
                      crl_file=str(crl_file))
    finally:
        server.stop()


def test_a_crl_file_replaced_while_running_applies_from_the_next_connection(
        tmp_path, ca, revoked, caplog):
    """The CRL is read at every connection attempt: once the certificate is listed, the
    reconnect is refused."""
    leaf, crl = revoked
    crl_file = pki.write_crl(tmp_path / "ca.crl", pki.crl(ca))
    server = _csms_with(ca, leaf)
    try:
        with caplog.at_level(logging.ERROR, "chargepoint.transport"):
            fw = run(profile_2(tmp_path, server.url, ca, crl_file=str(crl_file)))
            try:
                server.wait_for("BootNotification", timeout=10)
                pki.write_crl(crl_file, crl)
                server.restart()
                assert wait_until(lambda: "it is revoked" in caplog.text, timeout=10)
            finally:
                fw.stop()
        assert server.connection_count("CP-1") == 1
    finally:
        server.stop()



def test_a_crl_file_gone_after_the_start_is_a_clear_reason(tmp_path, ca, revoked, caplog):
    leaf, crl = revoked
    crl_file = pki.write_crl(tmp_path / "ca.crl", crl)
    server = _csms_with(ca, leaf)
    try:
        fw = profile_2(tmp_path, server.url, ca, crl_file=str(crl_file))   # checked here
        crl_file.unlink()
        with caplog.at_level(logging.ERROR, "chargepoint.transport"):
            run(fw)
            try:
                assert wait_until(lambda: "cannot load the TLS files of [csms] (ca_file, "
                                          "crl_file, client_cert, client_key)" in caplog.text,
                                  timeout=10)
            finally:
                fw.stop()
        assert not server.handshakes
    finally:
        server.stop()
