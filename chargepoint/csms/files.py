"""The file server beside the local Central System: it serves release bundles for
UpdateFirmware and takes the diagnostics archives of GetDiagnostics.

HTTP (or HTTPS with an `ssl_context`) on loopback, from the standard library's
`http.server`, which serves files but knows neither byte ranges nor uploads: GET and
HEAD with `Range` (206, `Content-Range`, `ETag` and `If-Range`), PUT of a file and POST
of a multipart/form-data form are added here. A few knobs make it misbehave the way
servers in the field do (stall or drop the connection part way, ignore `Range`), so the
tests of the charger's transfers (chargepoint/transfers.py) run against it.
"""
from __future__ import annotations

import email.parser
import email.policy
import hashlib
import re
import shutil
import ssl
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import quote, unquote, urlsplit

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class FileServer:
    """Serves `root` (GET, HEAD with ranges) and stores uploads (PUT, POST) in `uploads`.

    Knobs, settable at any time from any thread: `stall_after` (bytes of a GET body after
    which the server stops sending and holds the connection for `stall_s`), `drop_after`
    (bytes after which it closes the connection), `ranges` (False: Range is ignored and
    the whole file sent with 200), `fail_status` (every request answered with this status),
    `once` (the stall or drop applies to the next GET only), `put_allowed` (False: PUT is
    answered 405, as by a server that takes only form uploads)."""

    def __init__(self, root: Path, uploads: Optional[Path] = None, host: str = "127.0.0.1",
                 port: int = 0, ssl_context=None):
        self.root = Path(root)
        self.uploads = Path(uploads) if uploads is not None else self.root / "uploads"
        self.ssl_context = ssl_context
        self.stall_after: Optional[int] = None
        self.stall_s = 3600.0
        self.drop_after: Optional[int] = None
        self.once = False
        self.ranges = True
        self.fail_status: Optional[int] = None
        self.put_allowed = True
        #: (method, path, headers as a dict) of every request, in order.
        self.requests: list[tuple[str, str, dict]] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._httpd = _Server((host, port), self._handler())
        self._httpd.daemon_threads = True
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread: Optional[threading.Thread] = None

    # -- life cycle
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{quote(name)}"

    def start(self) -> "FileServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="csms-files", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()                # a stalled answer lets go
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "FileServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def uploaded(self) -> list[Path]:
        return sorted(self.uploads.glob("*")) if self.uploads.exists() else []

    # -- the handler
    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):          # noqa: A002 (the base's name)
                pass

            def _record(self) -> bool:
                with server._lock:
                    server.requests.append((self.command, self.path, dict(self.headers)))
                if server.fail_status is not None:
                    length = int(self.headers.get("Content-Length", "0") or 0)
                    _copy_exactly(self.rfile, _Discard(), length)   # read, as servers do
                    self._empty(server.fail_status)
                    return False
                return True

            def _empty(self, status: int, headers: Optional[dict] = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _file(self) -> Optional[Path]:
                name = unquote(urlsplit(self.path).path).lstrip("/")
                path = (server.root / name).resolve()
                if server.root.resolve() not in path.parents or not path.is_file():
                    return None
                return path

            def do_HEAD(self) -> None:
                self._get(body=False)

            def do_GET(self) -> None:
                self._get(body=True)

            def _get(self, body: bool) -> None:
                if not self._record():
                    return
                path = self._file()
                if path is None:
                    self._empty(HTTPStatus.NOT_FOUND)
                    return
                size = path.stat().st_size
                etag = '"' + hashlib.sha256(path.read_bytes()).hexdigest()[:32] + '"'
                start, status = 0, HTTPStatus.OK
                wanted = _RANGE.match(self.headers.get("Range", "").strip())
                if_range = self.headers.get("If-Range")
                if wanted and server.ranges and (if_range is None or if_range == etag):
                    start = int(wanted.group(1))
                    if start >= size:
                        self._empty(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                                    {"Content-Range": f"bytes */{size}"})
                        return
                    status = HTTPStatus.PARTIAL_CONTENT
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size - start))
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes" if server.ranges else "none")
                if status == HTTPStatus.PARTIAL_CONTENT:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.end_headers()
                if body:
                    self._send_body(path, start)

            def _send_body(self, path: Path, start: int) -> None:
                with server._lock:
                    stall, drop = server.stall_after, server.drop_after
                    if server.once:
                        server.stall_after = server.drop_after = None
                sent = 0
                with open(path, "rb") as source:
                    source.seek(start)
                    while True:
                        chunk = source.read(16 * 1024)
                        if not chunk:
                            break
                        for limit in (stall, drop):
                            if limit is not None and sent + len(chunk) > limit:
                                chunk = chunk[:max(0, limit - sent)]
                        if chunk:
                            self.wfile.write(chunk)
                            sent += len(chunk)
                        if stall is not None and sent >= stall:
                            self.wfile.flush()
                            server._released.wait(server.stall_s)
                            self.close_connection = True
                            return
                        if drop is not None and sent >= drop:
                            self.wfile.flush()
                            self.close_connection = True
                            return

            def do_PUT(self) -> None:
                if not self._record():
                    return
                if not server.put_allowed:
                    self.rfile.read(int(self.headers.get("Content-Length", "0")))
                    self._empty(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "GET, HEAD, POST"})
                    return
                name = Path(unquote(urlsplit(self.path).path)).name
                if not name:
                    self._empty(HTTPStatus.BAD_REQUEST)
                    return
                length = int(self.headers.get("Content-Length", "0"))
                server.uploads.mkdir(parents=True, exist_ok=True)
                with open(server.uploads / name, "wb") as out:
                    _copy_exactly(self.rfile, out, length)
                self._empty(HTTPStatus.CREATED)

            def do_POST(self) -> None:
                if not self._record():
                    return
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                head = f"Content-Type: {self.headers.get('Content-Type', '')}\r\n\r\n"
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    head.encode() + body)
                stored = 0
                server.uploads.mkdir(parents=True, exist_ok=True)
                for part in message.iter_parts() if message.is_multipart() else []:
                    name = Path(part.get_filename() or "").name
                    if name:
                        (server.uploads / name).write_bytes(part.get_payload(decode=True))
                        stored += 1
                self._empty(HTTPStatus.CREATED if stored else HTTPStatus.BAD_REQUEST)

        return Handler


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that went away mid-answer (the charger gave up on a stall) is no
        error of the server's: nothing printed."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            super().handle_error(request, client_address)


class _Discard:
    def write(self, data: bytes) -> None:
        pass


def _copy_exactly(source, out, length: int) -> None:
    left = length
    while left > 0:
        chunk = source.read(min(left, 64 * 1024))
        if not chunk:
            break
        out.write(chunk)
        left -= len(chunk)


def wait_for_upload(server: FileServer, timeout: float = 10.0) -> list[Path]:
    """The files uploaded so far, once there is at least one (or [] after `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = server.uploaded()
        if found:
            return found
        time.sleep(0.02)
    return server.uploaded()


def publish(server: FileServer, bundle: Path) -> str:
    """Copy `bundle` into the served directory (unless it is there); its URL."""
    target = server.root / bundle.name
    if Path(bundle).resolve() != target.resolve():
        server.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle, target)
    return server.url(bundle.name)

