"""File servers on loopback for the transfer tests: HTTP(S) is the local CSMS's own
(chargepoint/csms/files.py); FTP and FTPS are pyftpdlib's, with the same knobs to
stall or drop a download part way."""
from __future__ import annotations

import ssl
import threading
from pathlib import Path
from typing import Optional

import trustme
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.servers import ThreadedFTPServer

from chargepoint.csms.files import FileServer

FTP_USER, FTP_PASSWORD = "cp", "s3cret-pass"


class _Cut:
    """A file that ends after `limit` bytes (drop), or stops giving bytes after `limit`
    until released (stall)."""

    def __init__(self, fd, limit: int, stall: Optional[threading.Event]):
        self._fd, self._left, self._stall = fd, limit, stall
        self.name = fd.name
        self.closed = False

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            if self._stall is not None:
                self._stall.wait(3600)
            return b""
        data = self._fd.read(min(n if n >= 0 else self._left, self._left))
        self._left -= len(data)
        return data

    def seek(self, *args):
        return self._fd.seek(*args)

    def close(self) -> None:
        self.closed = True
        self._fd.close()


class FtpServer:
    """pyftpdlib serving `root` to FTP_USER (read and write) and anonymous (read), FTPS
    (explicit TLS) when `tls_cert` (a trustme LeafCert) is given. Knobs: `drop_after`,
    `stall_after` (bytes of a RETR), `once`; `retrieved` counts RETR commands with their
    REST offsets."""

    def __init__(self, root: Path, tls_cert: Optional[trustme.LeafCert] = None,
                 cert_dir: Optional[Path] = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.drop_after: Optional[int] = None
        self.stall_after: Optional[int] = None
        self.once = False
        self.retrieved: list[tuple[str, int]] = []
        self.released = threading.Event()
        authorizer = DummyAuthorizer()
        authorizer.add_user(FTP_USER, FTP_PASSWORD, str(self.root), perm="elradfmw")
        authorizer.add_anonymous(str(self.root))
        base = FTPHandler
        attrs: dict = {"authorizer": authorizer, "passive_ports": None}
        if tls_cert is not None:
            pem = Path(cert_dir or self.root.parent) / "ftps-server.pem"
            tls_cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
            base = TLS_FTPHandler
            attrs.update(certfile=str(pem), tls_control_required=True,
                         tls_data_required=True, ssl_context=None)
        server = self

        def ftp_RETR(handler, file):
            rest = handler._restart_position
            server.retrieved.append((file, rest))
            limit = server.stall_after if server.stall_after is not None else server.drop_after
            if limit is None:
                return base.ftp_RETR(handler, file)
            stall = server.released if server.stall_after is not None else None
            if server.once:
                server.stall_after = server.drop_after = None
            original = handler.fs.open

            def cut_open(path, mode):
                handler.fs.open = original
                return _Cut(original(path, mode), limit - rest, stall)

            handler.fs.open = cut_open
            try:
                return base.ftp_RETR(handler, file)
            finally:
                handler.fs.open = original

        attrs["ftp_RETR"] = ftp_RETR
        self.handler = type("TestFtpHandler", (base,), attrs)
        self.handler.banner = "test ftp ready"
        self.handler.auth_failed_timeout = 0       # a wrong password is answered at once
        self._server = ThreadedFTPServer(("127.0.0.1", 0), self.handler)
        self.secure = tls_cert is not None
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self._server.address[1]

    def url(self, path: str, user: bool = True) -> str:
        scheme = "ftps" if self.secure else "ftp"
        auth = f"{FTP_USER}:{FTP_PASSWORD}@" if user else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/{path.lstrip('/')}"

    def start(self) -> "FtpServer":
        self._thread = threading.Thread(
            target=lambda: self._server.serve_forever(timeout=0.1, handle_exit=False),
            name="test-ftp", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self._server.close_all()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "FtpServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def https_server(root: Path, ca: trustme.CA, **kwargs) -> FileServer:
    """The local CSMS's file server over HTTPS with a certificate for 127.0.0.1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return FileServer(root, ssl_context=context, **kwargs)
