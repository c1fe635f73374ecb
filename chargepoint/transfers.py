"""Files between the charger and the servers the CSMS names: the release bundle of an
UpdateFirmware (downloaded) and the files of a GetDiagnostics or a GetLog (uploaded).

HTTP and HTTPS go through urllib.request, FTP and FTPS through ftplib (FTPS as explicit
TLS: `AUTH TLS` on the FTP port, then a protected data channel): the standard library's
clients, so nothing is added to the dependencies. What is done here beyond them:

- resuming: a download cut short (a dropped connection, a stalled server, a restart)
  continues from what `<file>.part` holds, through HTTP `Range` (with `If-Range`, so that
  a file changed on the server meanwhile comes again whole) or FTP `REST`;
- room: a download whose size is known is refused before its first byte when the disk
  would keep less than `min_free_bytes` (the database lives on the same card); one whose
  size is not announced stops when it gets there, and a full disk drops the part file;
- stalls: every connect, read and write waits `stall_timeout_s` at most, so a server that
  stops sending ends the attempt whatever it promised;
- errors: `TransferError` says what went wrong in an operator's words (host not found,
  HTTP 404, no data for 60 s, ...) and never holds the password of a location such as
  `ftp://user:password@host/file`.

Retrying (`retries`, `retryInterval`) is the caller's: chargepoint/model/firmware.py
schedules the attempts on the station's clock and survives restarts.
"""
from __future__ import annotations

import base64
import errno
import ftplib
import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from chargepoint import __version__, durable

#: The URL schemes a location may have.
SCHEMES = ("ftp", "ftps", "http", "https")
#: The value of the OCPP key SupportedFileTransferProtocols.
PROTOCOLS = "FTP,FTPS,HTTP,HTTPS"

_CHUNK = 64 * 1024
#: While the size of a download is unknown, free space is looked at every this many bytes.
_ROOM_CHECK_EVERY = 1024 * 1024
_USER_AGENT = f"chargepoint/{__version__}"


class TransferError(Exception):
    """A transfer that did not complete; the message names the cause, never a password.
    `cause` sorts it for a status that has words for it (GetLog's LogStatusNotification):
    "unsupported" (a scheme this charger cannot use), "location" (not a URL, no host),
    "permission" (HTTP 401 or 403, FTP 530: refused by the server), "" anything else."""

    def __init__(self, message: str, cause: str = ""):
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True)
class TransferOptions:
    #: Longest wait for a connection, an answer or the next bytes of a transfer.
    stall_timeout_s: float = 60.0
    #: A PEM bundle of CAs trusted for HTTPS and FTPS besides the system's ("" = none).
    ca_file: str = ""
    #: Free space a download must leave on the disk it is written to.
    min_free_bytes: int = 64 * 1024 * 1024


# ------------------------------------------------------------------------------ locations
def check_location(url: str) -> str:
    """The scheme of `url` if this charger can transfer files there; else TransferError."""
    try:
        parts = urlsplit(url)
        parts.port                      # raises ValueError for a port that is no number
    except ValueError as exc:
        raise TransferError(f"{shown(url)} is not a URL: {exc}", "location") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise TransferError(f"{shown(url)}: the scheme {scheme or '(none)'!r} is not supported "
                            f"(SupportedFileTransferProtocols: {PROTOCOLS})", "unsupported")
    if not parts.hostname:
        raise TransferError(f"{shown(url)} names no host", "location")
    return scheme


def shown(url: str) -> str:
    """`url` as it may be logged: a password in it is replaced by ***."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        head, at, tail = url.rpartition("@")
        return f"***@{tail}" if at else url


def _credentials(parts) -> tuple[Optional[str], Optional[str]]:
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return user, password


def _without_userinfo(parts) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _tls_context(options: TransferOptions) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if options.ca_file:
        context.load_verify_locations(options.ca_file)
    return context


# ------------------------------------------------------------------------------ room
def free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def _check_room(directory: Path, more: int, options: TransferOptions, what: str) -> None:
    free = free_bytes(directory)
    if free - more < options.min_free_bytes:
        raise TransferError(
            f"not enough room in {directory} for {what}: {_mib(more)} needed, {_mib(free)} "
            f"free, and {_mib(options.min_free_bytes)} must stay free")


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


# ------------------------------------------------------------------------------ download
def download(url: str, dest: Path, options: TransferOptions = TransferOptions(),
             room_for: Callable[[int], int] = lambda size: size) -> int:
    """Fetch `url` into `dest` (renamed into place when complete); returns its size.

    A `dest.part` left by an earlier attempt of the same URL is resumed. `room_for(size)`
    is the space a file of `size` bytes needs in all (e.g. room to install it too).
    Raises TransferError saying why it failed; what was received stays for the next
    attempt, except after a full disk."""
    scheme = check_location(url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _Part(dest, url)
    try:
        if scheme in ("http", "https"):
            _http_download(url, part, options, room_for)
        else:
            _ftp_download(url, part, options, room_for)
    except TransferError:
        raise
    except (OSError, EOFError) as exc:
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            part.discard()
            raise TransferError(f"the disk is full ({dest.parent}): the partial download "
                                "was removed") from None
        raise TransferError(f"{shown(url)}: {_why(exc, options)}") from None
    except ftplib.Error as exc:
        raise TransferError(f"{shown(url)}: the FTP server answered {_ftp_reply(exc)}") \
            from None
    size = part.path.stat().st_size
    os.replace(part.path, dest)
    part.forget()
    return size


class _Part:
    """`<dest>.part`, the bytes received so far, and `<dest>.part.json`: which URL they
    are of and the server's validator (ETag or Last-Modified) for `If-Range`."""

    def __init__(self, dest: Path, url: str):
        self.path = dest.with_name(dest.name + ".part")
        self.meta = dest.with_name(dest.name + ".part.json")
        self.url_id = hashlib.sha256(url.encode()).hexdigest()
        self.validator = ""
        try:
            saved = json.loads(self.meta.read_text())
        except (OSError, ValueError):
            saved = {}
        if saved.get("url") != self.url_id:
            self.discard()              # another location's bytes, or none
        else:
            self.validator = saved.get("validator", "")

    @property
    def have(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def start(self, validator: str = "") -> None:
        """Record what the bytes about to be written are of (before the first of them)."""
        self.validator = validator
        durable.write_whole(self.meta, json.dumps({"url": self.url_id,
                                                   "validator": validator}).encode())

    def open(self, resume: bool) -> BinaryIO:
        # Unbuffered: what arrived is in the file, for the attempt after a cut to resume.
        return open(self.path, "ab" if resume else "wb", buffering=0)

    def discard(self) -> None:
        for path in (self.path, self.meta):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def forget(self) -> None:
        try:
            self.meta.unlink()
        except FileNotFoundError:
            pass


def _copy(source, out: BinaryIO, directory: Path, options: TransferOptions,
          known: bool) -> None:
    """Copy `source` (a response, read in chunks) to `out`; without a known size, stop
    when the disk would keep less than min_free_bytes."""
    since_check = 0
    read = getattr(source, "read1", source.read)      # what has arrived, not a full chunk
    while True:
        chunk = read(_CHUNK)
        if not chunk:
            break
        out.write(chunk)
        since_check += len(chunk)
        if not known and since_check >= _ROOM_CHECK_EVERY:
            since_check = 0
            out.flush()
            if free_bytes(directory) < options.min_free_bytes:
                raise OSError(errno.ENOSPC, "kept free space reached")
    out.flush()
    os.fsync(out.fileno())


def _http_request(url: str, method: str = "GET", data=None,
                  headers: Optional[dict] = None) -> urllib.request.Request:
    parts = urlsplit(url)
    user, password = _credentials(parts)
    all_headers = {"User-Agent": _USER_AGENT, **(headers or {})}
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
        all_headers["Authorization"] = f"Basic {token}"
    return urllib.request.Request(_without_userinfo(parts), data=data, headers=all_headers,
                                  method=method)


def _opener(url: str, options: TransferOptions) -> urllib.request.OpenerDirector:
    handlers = []
    if urlsplit(url).scheme.lower() == "https" or options.ca_file:
        handlers.append(urllib.request.HTTPSHandler(context=_tls_context(options)))
    # No proxy from the environment: the service has none, and a test or a shell's
    # http_proxy must not send the charger's files elsewhere.
    handlers.append(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener(*handlers)


def _content_range(value: str) -> tuple[Optional[int], Optional[int]]:
    """(first byte, total size) of a Content-Range header `bytes a-b/n` or `bytes */n`."""
    try:
        unit, _, spec = value.strip().partition(" ")
        span, _, total = spec.partition("/")
        first = None if span == "*" else int(span.split("-")[0])
        return first, (None if total == "*" else int(total))
    except ValueError:
        return None, None


def _http_download(url: str, part: _Part, options: TransferOptions,
                   room_for: Callable[[int], int]) -> None:
    opener = _opener(url, options)
    for _ in range(2):                  # a second time from zero if resuming is refused
        have = part.have
        headers = {}
        if have:
            headers["Range"] = f"bytes={have}-"
            if part.validator:
                headers["If-Range"] = part.validator
        try:
            with opener.open(_http_request(url, headers=headers),
                             timeout=options.stall_timeout_s) as response:
                resume = response.status == 206
                first, total = _content_range(response.headers.get("Content-Range", ""))
                if resume and first != have:
                    part.discard()
                    continue
                length = response.headers.get("Content-Length")
                if not resume and length is not None and length.isdigit():
                    total = int(length)
                elif resume and total is None and length is not None and length.isdigit():
                    total = have + int(length)
                already = have if resume else 0
                if total is not None:
                    _check_room(part.path.parent, room_for(total) - already, options,
                                f"{shown(url)} ({total} bytes)")
                if not resume:
                    part.start(response.headers.get("ETag", "")
                               or response.headers.get("Last-Modified", ""))
                with part.open(resume) as out:
                    _copy(response, out, part.path.parent, options, total is not None)
                if total is not None and part.have != total:
                    raise TransferError(f"{shown(url)}: the connection ended after "
                                        f"{part.have} of {total} bytes")
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                _, total = _content_range(exc.headers.get("Content-Range", ""))
                if total == have:
                    return              # all of it was already here
                part.discard()
                continue
            raise TransferError(f"{shown(url)}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise TransferError(f"{shown(url)}: {_why(exc.reason, options)}") from None
    raise TransferError(f"{shown(url)}: the server would not send the file from its start")


def fetch(url: str, max_bytes: int, within_s: float,
          options: TransferOptions = TransferOptions()) -> bytes:
    """The body of a small HTTP(S) resource (a certificate revocation list) in memory: at
    most `max_bytes`, all of it within `within_s` (looked at between reads; each wait at
    most `stall_timeout_s`, or what was left when the connection opened, whichever is
    less); TransferError saying why not."""
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise TransferError(f"{shown(url)}: only http and https are fetched", "unsupported")
    deadline = time.monotonic() + within_s
    late = TransferError(f"{shown(url)}: no whole answer within {within_s:g} s")

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise late
        return min(remaining, options.stall_timeout_s)

    try:
        with _opener(url, options).open(_http_request(url), timeout=left()) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise TransferError(f"{shown(url)}: {length} bytes, more than the "
                                    f"{max_bytes} allowed")
            body = bytearray()
            while True:
                left()
                block = response.read1(_CHUNK)
                if not block:
                    return bytes(body)
                body += block
                if len(body) > max_bytes:
                    raise TransferError(f"{shown(url)}: more than the {max_bytes} bytes "
                                        "allowed")
    except urllib.error.HTTPError as exc:
        raise TransferError(f"{shown(url)}: HTTP {exc.code} {exc.reason}",
                            _http_cause(exc.code)) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (socket.timeout, TimeoutError)) \
                and time.monotonic() >= deadline:
            raise late from None
        raise TransferError(f"{shown(url)}: {_why(exc.reason, options)}") from None
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, (socket.timeout, TimeoutError)) and time.monotonic() >= deadline:
            raise late from None
        raise TransferError(f"{shown(url)}: {_why(exc, options)}") from None


def _ftp_connect(url: str, options: TransferOptions) -> tuple[ftplib.FTP, str]:
    """A logged-in FTP (or FTPS, data channel protected) session, binary mode, and the
    path of `url` relative to the login directory (RFC 1738)."""
    parts = urlsplit(url)
    secure = parts.scheme.lower() == "ftps"
    if secure:
        ftp: ftplib.FTP = ftplib.FTP_TLS(context=_tls_context(options),
                                          timeout=options.stall_timeout_s)
    else:
        ftp = ftplib.FTP(timeout=options.stall_timeout_s)
    try:
        ftp.connect(parts.hostname, parts.port or 21)
        if secure:
            ftp.auth()
        user, password = _credentials(parts)
        ftp.login(user or "anonymous", password or ("" if user else "anonymous@"))
        if secure:
            ftp.prot_p()
        ftp.voidcmd("TYPE I")
    except BaseException:
        ftp.close()
        raise
    return ftp, unquote(parts.path).lstrip("/")


def _ftp_download(url: str, part: _Part, options: TransferOptions,
                  room_for: Callable[[int], int]) -> None:
    ftp, path = _ftp_connect(url, options)
    try:
        if not path:
            raise TransferError(f"{shown(url)} names no file")
        try:
            total: Optional[int] = ftp.size(path)
        except ftplib.error_perm as exc:
            if str(exc).startswith("550"):
                raise TransferError(f"{shown(url)}: no such file on the server "
                                    f"({_ftp_reply(exc)})") from None
            total = None                # SIZE not implemented: the size stays unknown
        have = part.have
        if total is not None and have > total:
            part.discard()
            have = 0
        if total is not None and have == total and have:
            return
        if total is not None:
            _check_room(part.path.parent, room_for(total) - have, options,
                        f"{shown(url)} ({total} bytes)")
        if not have:
            part.start()
        with part.open(bool(have)) as out:
            counted = [0]

            def write(block: bytes) -> None:
                out.write(block)
                counted[0] += len(block)
                if total is None and counted[0] >= _ROOM_CHECK_EVERY:
                    counted[0] = 0
                    out.flush()
                    if free_bytes(part.path.parent) < options.min_free_bytes:
                        raise OSError(errno.ENOSPC, "kept free space reached")

            try:
                ftp.retrbinary(f"RETR {path}", write, blocksize=_CHUNK, rest=have or None)
            except (ftplib.error_perm, ftplib.error_reply) as exc:
                if str(exc).startswith("550"):
                    raise TransferError(f"{shown(url)}: no such file on the server "
                                        f"({_ftp_reply(exc)})") from None
                if not have:
                    raise
                # REST refused: the whole file again, from its first byte.
                out.seek(0)
                out.truncate()
                part.start()
                ftp.retrbinary(f"RETR {path}", write, blocksize=_CHUNK)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and part.have != total:
            raise TransferError(f"{shown(url)}: the transfer ended after {part.have} of "
                                f"{total} bytes")
    finally:
        _ftp_close(ftp)


def _ftp_close(ftp: ftplib.FTP) -> None:
    try:
        ftp.quit()
    except (OSError, EOFError, ftplib.Error):
        ftp.close()


# ------------------------------------------------------------------------------ upload
def upload(directory_url: str, file: Path, options: TransferOptions = TransferOptions()) -> str:
    """Put `file` into the directory `directory_url` under its own name; returns where it
    went (as it may be logged). FTP and FTPS: STOR; HTTP and HTTPS: PUT to
    `<directory>/<name>`, or, if the server does not take PUT (405, 501), POST of a
    multipart/form-data form to the directory. Raises TransferError."""
    scheme = check_location(directory_url)
    file = Path(file)
    base = directory_url if directory_url.endswith("/") else directory_url + "/"
    target = base + quote(file.name)
    try:
        if scheme in ("ftp", "ftps"):
            _ftp_upload(target, file, options)
        else:
            target = _http_upload(base, target, file, options)
    except TransferError:
        raise
    except (OSError, EOFError) as exc:
        raise TransferError(f"{shown(target)}: {_why(exc, options)}") from None
    except ftplib.Error as exc:
        raise TransferError(f"{shown(target)}: the FTP server answered {_ftp_reply(exc)}",
                            _ftp_cause(exc)) from None
    return shown(target)


def _ftp_upload(target: str, file: Path, options: TransferOptions) -> None:
    ftp, path = _ftp_connect(target, options)
    try:
        with open(file, "rb") as source:
            ftp.storbinary(f"STOR {path}", source, blocksize=_CHUNK)
    finally:
        _ftp_close(ftp)


def _http_upload(base: str, target: str, file: Path, options: TransferOptions) -> str:
    opener = _opener(target, options)
    size = file.stat().st_size
    try:
        with open(file, "rb") as body:
            request = _http_request(target, "PUT", body, {
                "Content-Type": "application/zip", "Content-Length": str(size)})
            with opener.open(request, timeout=options.stall_timeout_s) as response:
                response.read()
        return target
    except urllib.error.HTTPError as exc:
        if exc.code not in (405, 501):
            raise TransferError(f"{shown(target)}: HTTP {exc.code} {exc.reason}",
                                _http_cause(exc.code)) from None
    except urllib.error.URLError as exc:
        raise TransferError(f"{shown(target)}: {_why(exc.reason, options)}") from None
    body, content_type = _multipart(file)
    try:
        request = _http_request(base, "POST", body, {"Content-Type": content_type,
                                                     "Content-Length": str(len(body))})
        with opener.open(request, timeout=options.stall_timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        raise TransferError(f"{shown(base)}: HTTP {exc.code} {exc.reason} (PUT was not "
                            "allowed either)", _http_cause(exc.code)) from None
    except urllib.error.URLError as exc:
        raise TransferError(f"{shown(base)}: {_why(exc.reason, options)}") from None
    return base


def _multipart(file: Path) -> tuple[bytes, str]:
    """One file field ("file") as multipart/form-data (RFC 7578). Written out here: the
    standard library has no encoder for it, and the archive is small (bounded parts)."""
    boundary = uuid.uuid4().hex
    name = file.name.replace('"', "")
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{name}\"\r\nContent-Type: application/zip\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + file.read_bytes() + tail, f"multipart/form-data; boundary={boundary}"


# ------------------------------------------------------------------------------ causes
def _why(exc: object, options: TransferOptions) -> str:
    """An OSError (or urllib's reason) in an operator's words."""
    if isinstance(exc, socket.gaierror):
        return f"host not found ({exc.strerror or exc})"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no answer or no data for {options.stall_timeout_s:g} s (the server stalled)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate is not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "the server closed the connection"
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return f"host unreachable ({exc.strerror})"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _http_cause(code: int) -> str:
    return "permission" if code in (401, 403) else ""


def _ftp_cause(exc: ftplib.Error) -> str:
    return "permission" if str(exc).startswith("530") else ""


def _ftp_reply(exc: ftplib.Error) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
