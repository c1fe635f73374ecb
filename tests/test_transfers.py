"""File transfers against real servers on loopback: HTTP(S) with ranges (the local CSMS's
file server), FTP and FTPS (pyftpdlib). Downloads resume, stalls end an attempt, a full
disk is refused up front, errors name their cause and never a password."""
from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
import trustme

from chargepoint import transfers
from chargepoint.csms.files import FileServer
from chargepoint.transfers import TransferError, TransferOptions
from tests.file_servers import FTP_PASSWORD, FtpServer, https_server

BLOB = os.urandom(700_000)


@pytest.fixture
def served(served) -> Path:
    (served / "bundle.cpr").write_bytes(BLOB)
    return served


@pytest.fixture
def ca():
    return trustme.CA()


@pytest.fixture
def ca_file(ca, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def ftps(served, ca, tmp_path):
    with FtpServer(served, ca.issue_cert("127.0.0.1"), cert_dir=tmp_path) as server:
        yield server


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FAST = TransferOptions(stall_timeout_s=0.5, min_free_bytes=0)


# ------------------------------------------------------------------------------ HTTP(S)
def test_http_download_lands_whole_and_leaves_no_part_file(http, tmp_path):
    dest = tmp_path / "in" / "bundle.cpr"
    assert transfers.download(http.url("bundle.cpr"), dest, FAST) == len(BLOB)
    assert dest.read_bytes() == BLOB
    assert sorted(p.name for p in dest.parent.iterdir()) == ["bundle.cpr"]


def test_https_download_trusts_the_configured_ca_and_nothing_else(served, ca, ca_file,
                                                                  tmp_path):
    with https_server(served, ca) as server:
        with pytest.raises(TransferError, match="certificate is not trusted"):
            transfers.download(server.url("bundle.cpr"), tmp_path / "a", FAST)
        options = TransferOptions(stall_timeout_s=5, ca_file=ca_file, min_free_bytes=0)
        transfers.download(server.url("bundle.cpr"), tmp_path / "b", options)
    assert (tmp_path / "b").read_bytes() == BLOB


def test_an_interrupted_http_download_resumes_with_a_range(http, tmp_path):
    dest = tmp_path / "bundle.cpr"
    http.drop_after, http.once = 250_000, True
    with pytest.raises(TransferError, match="ended after 250000 of 700000 bytes"):
        transfers.download(http.url("bundle.cpr"), dest, FAST)
    assert not dest.exists()
    assert (tmp_path / "bundle.cpr.part").stat().st_size == 250_000
    transfers.download(http.url("bundle.cpr"), dest, FAST)
    assert dest.read_bytes() == BLOB
    method, _, headers = http.requests[-1]
    assert headers["Range"] == "bytes=250000-" and headers["If-Range"].startswith('"')


def test_a_stalled_server_ends_the_attempt_and_the_next_one_resumes(http, tmp_path):
    dest = tmp_path / "bundle.cpr"
    http.stall_after, http.once = 100_000, True
    with pytest.raises(TransferError, match="no data for 0.5 s"):
        transfers.download(http.url("bundle.cpr"), dest, FAST)
    have = (tmp_path / "bundle.cpr.part").stat().st_size
    assert 0 < have <= 100_000
    transfers.download(http.url("bundle.cpr"), dest, FAST)
    assert dest.read_bytes() == BLOB
    assert http.requests[-1][2]["Range"] == f"bytes={have}-"


def test_a_file_changed_on_the_server_comes_again_whole(http, served, tmp_path):
    dest = tmp_path / "bundle.cpr"
    http.drop_after, http.once = 300_000, True
    with pytest.raises(TransferError):
        transfers.download(http.url("bundle.cpr"), dest, FAST)
    new = os.urandom(500_000)
    (served / "bundle.cpr").write_bytes(new)
    transfers.download(http.url("bundle.cpr"), dest, FAST)
    assert dest.read_bytes() == new


def test_a_server_without_ranges_sends_it_all_again(http, tmp_path):
    dest = tmp_path / "bundle.cpr"
    http.drop_after, http.once, http.ranges = 300_000, True, False
    with pytest.raises(TransferError):
        transfers.download(http.url("bundle.cpr"), dest, FAST)
    transfers.download(http.url("bundle.cpr"), dest, FAST)
    assert dest.read_bytes() == BLOB


def test_the_part_of_another_location_is_not_resumed(http, tmp_path, served):
    dest = tmp_path / "bundle.cpr"
    (tmp_path / "bundle.cpr.part").write_bytes(b"x" * 1000)
    transfers.download(http.url("bundle.cpr"), dest, FAST)
    assert dest.read_bytes() == BLOB
    assert "Range" not in http.requests[-1][2]


@pytest.mark.parametrize("status, text", [(404, "HTTP 404 Not Found"),
                                          (500, "HTTP 500 Internal Server Error")])
def test_http_errors_are_named(http, tmp_path, status, text):
    http.fail_status = status
    with pytest.raises(TransferError, match=text):
        transfers.download(http.url("bundle.cpr"), tmp_path / "b", FAST)
    assert not list(tmp_path.glob("b*"))


def test_a_missing_file_is_a_404(http, tmp_path):
    with pytest.raises(TransferError, match=r"/nothing.cpr: HTTP 404"):
        transfers.download(http.url("nothing.cpr"), tmp_path / "b", FAST)


def test_nothing_listening_is_named(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/bundle.cpr"
    with pytest.raises(TransferError, match="connection refused"):
        transfers.download(url, tmp_path / "b", FAST)


def test_an_unknown_host_is_named(tmp_path):
    with pytest.raises(TransferError, match="host not found"):
        transfers.download("http://no-such-host.invalid/bundle.cpr", tmp_path / "b", FAST)


@pytest.mark.parametrize("url, text", [
    ("sftp://127.0.0.1/bundle.cpr", "the scheme 'sftp' is not supported"),
    ("file:///etc/passwd", "the scheme 'file' is not supported"),
    ("bundle.cpr", "the scheme '(none)' is not supported"),
    ("http:///bundle.cpr", "names no host"),
    ("http://127.0.0.1:port/x", "is not a URL"),
])
def test_a_location_this_charger_cannot_use_is_refused_before_any_transfer(tmp_path, url,
                                                                            text):
    with pytest.raises(TransferError, match=re.escape(text)):
        transfers.download(url, tmp_path / "b", FAST)
    assert list(tmp_path.iterdir()) == []


def test_no_room_is_refused_before_the_first_byte(http, tmp_path):
    free = transfers.free_bytes(tmp_path)
    options = TransferOptions(stall_timeout_s=5, min_free_bytes=free - len(BLOB) // 2)
    with pytest.raises(TransferError, match="not enough room .* must stay free"):
        transfers.download(http.url("bundle.cpr"), tmp_path / "b", options)
    assert not list(tmp_path.glob("b*"))


def test_room_counts_what_the_caller_needs_besides_the_file(http, tmp_path):
    free = transfers.free_bytes(tmp_path)
    with pytest.raises(TransferError, match="not enough room"):
        transfers.download(http.url("bundle.cpr"), tmp_path / "b", FAST,
                           room_for=lambda size: size + free)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@needs_root
def test_a_disk_that_fills_up_drops_the_part_and_says_so(tmp_path, served):
    mount = tmp_path / "mnt"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                   check=True)
    try:
        with FileServer(served) as server:
            # The size is known up front: refused (min_free_bytes 0 would let it start).
            with pytest.raises(TransferError, match="not enough room"):
                transfers.download(server.url("bundle.cpr"), mount / "b", FAST)
            # A file grown past what was free when the check was made: ENOSPC mid-way.
            with pytest.raises(TransferError, match="the disk is full"):
                transfers.download(server.url("bundle.cpr"), mount / "c", FAST,
                                   room_for=lambda size: 0)
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# ------------------------------------------------------------------------------ FTP(S)
def test_ftp_download_with_credentials_and_anonymously(ftp, tmp_path):
    transfers.download(ftp.url("bundle.cpr"), tmp_path / "a", FAST)
    transfers.download(ftp.url("bundle.cpr", user=False), tmp_path / "b", FAST)
    assert (tmp_path / "a").read_bytes() == BLOB == (tmp_path / "b").read_bytes()


def test_an_interrupted_ftp_download_resumes_with_rest(ftp, tmp_path):
    dest = tmp_path / "bundle.cpr"
    ftp.drop_after, ftp.once = 200_000, True
    with pytest.raises(TransferError, match="ended after 200000 of 700000 bytes"):
        transfers.download(ftp.url("bundle.cpr"), dest, FAST)
    transfers.download(ftp.url("bundle.cpr"), dest, FAST)
    assert dest.read_bytes() == BLOB
    assert ftp.retrieved[-1][1] == 200_000


def test_a_stalled_ftp_transfer_ends_the_attempt(ftp, tmp_path):
    ftp.stall_after, ftp.once = 100_000, True
    with pytest.raises(TransferError, match="no data for 0.5 s"):
        transfers.download(ftp.url("bundle.cpr"), tmp_path / "b", FAST)
    ftp.released.set()
    transfers.download(ftp.url("bundle.cpr"), tmp_path / "b", FAST)
    assert (tmp_path / "b").read_bytes() == BLOB
    assert ftp.retrieved[-1][1] > 0


def test_ftps_download_over_a_protected_data_channel(ftps, ca_file, tmp_path):
    options = TransferOptions(stall_timeout_s=5, ca_file=ca_file, min_free_bytes=0)
    transfers.download(ftps.url("bundle.cpr"), tmp_path / "b", options)
    assert (tmp_path / "b").read_bytes() == BLOB
    with pytest.raises(TransferError, match="not trusted"):
        transfers.download(ftps.url("bundle.cpr"), tmp_path / "c", FAST)


def test_ftp_missing_file_and_bad_password_are_named_without_the_password(ftp, tmp_path):
    with pytest.raises(TransferError, match="no such file on the server"):
        transfers.download(ftp.url("download_fail.fwi"), tmp_path / "b", FAST)
    url = ftp.url("bundle.cpr").replace(FTP_PASSWORD, "wrong-pass")
    with pytest.raises(TransferError) as caught:
        transfers.download(url, tmp_path / "b", FAST)
    assert "530" in str(caught.value)
    assert "wrong-pass" not in str(caught.value) and "cp:***@" in str(caught.value)


def test_a_refused_ftp_connection_never_shows_the_password(tmp_path):
    url = f"ftp://cp:{FTP_PASSWORD}@127.0.0.1:{closed_port()}/bundle.cpr"
    with pytest.raises(TransferError, match="connection refused") as caught:
        transfers.download(url, tmp_path / "b", FAST)
    assert FTP_PASSWORD not in str(caught.value)


# ------------------------------------------------------------------------------ uploads
@pytest.fixture
def archive(tmp_path) -> Path:
    path = tmp_path / "diagnostics-CP-1-20260101T000000Z.zip"
    path.write_bytes(os.urandom(50_000))
    return path


def test_ftp_upload_stores_the_file_in_the_directory(ftp, served, archive):
    where = transfers.upload(ftp.url("files"), archive, FAST)
    assert (served / "files" / archive.name).read_bytes() == archive.read_bytes()
    assert where.endswith(f"/files/{archive.name}") and FTP_PASSWORD not in where


def test_ftps_upload(ftps, served, archive, ca_file):
    options = TransferOptions(stall_timeout_s=5, ca_file=ca_file)
    transfers.upload(ftps.url("/"), archive, options)
    assert (served / archive.name).read_bytes() == archive.read_bytes()


def test_ftp_upload_to_a_missing_directory_fails_with_the_servers_answer(ftp, archive):
    with pytest.raises(TransferError, match="the FTP server answered 55"):
        transfers.upload(ftp.url("files/failedLocation"), archive, FAST)


def test_http_upload_puts_the_file(http, archive):
    transfers.upload(http.base_url + "/incoming/", archive, FAST)
    assert (http.uploads / archive.name).read_bytes() == archive.read_bytes()
    assert http.requests[-1][:2] == ("PUT", f"/incoming/{archive.name}")


def test_http_upload_posts_a_form_where_put_is_not_allowed(http, archive):
    http.put_allowed = False
    transfers.upload(http.base_url + "/incoming", archive, FAST)
    assert (http.uploads / archive.name).read_bytes() == archive.read_bytes()
    assert [r[0] for r in http.requests] == ["PUT", "POST"]
    assert http.requests[-1][2]["Content-Type"].startswith("multipart/form-data")


def test_https_upload(served, ca, ca_file, archive):
    with https_server(served, ca) as server:
        transfers.upload(server.base_url + "/up", archive,
                         TransferOptions(stall_timeout_s=5, ca_file=ca_file))
        assert (server.uploads / archive.name).exists()


def test_http_upload_refused_is_named(http, archive):
    http.fail_status = 403
    with pytest.raises(TransferError, match="HTTP 403 Forbidden"):
        transfers.upload(http.base_url + "/up", archive, FAST)


def test_shown_hides_only_the_password():
    assert transfers.shown("ftp://cp:pw@host:2121/a/b") == "ftp://cp:***@host:2121/a/b"
    assert transfers.shown("https://host/x?y=1") == "https://host/x?y=1"
