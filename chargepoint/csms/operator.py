"""What an operator at the local Central System does about firmware and diagnostics: put
a release bundle on the file server and send UpdateFirmware (or SignedUpdateFirmware with
the manufacturer's signing certificate and signature), send GetDiagnostics and take the
archive it uploads. `chargepoint demo` reads these as commands typed in its terminal
(`Operator.console`), so the demo can be updated from its own Central System:

    update-firmware dist/chargepoint-0.2.0-linux_x86_64.cpr
    signed-update-firmware dist/chargepoint-0.2.0.tar --certificate cs.pem --signature b.sig
    get-diagnostics
"""
from __future__ import annotations

import shlex
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional, TextIO

from chargepoint.csms.files import FileServer, publish

HELP = """\
commands (then Enter):
  update-firmware BUNDLE [--in SECONDS] [--retries N]   serve BUNDLE, send UpdateFirmware
  signed-update-firmware BUNDLE --certificate PEM --signature FILE [--in SECONDS]
                                                        serve BUNDLE, send SignedUpdateFirmware
  get-diagnostics                                       send GetDiagnostics; the archive
                                                        arrives in the uploads directory
  help"""


class Operator:
    """Firmware and diagnostics through `csms` (a LocalCsms), with a file server of its
    own on loopback (started when first needed) in `workdir`."""

    def __init__(self, csms, workdir: Optional[Path] = None,
                 printer: Optional[Callable[[str], None]] = None):
        self.csms = csms
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="chargepoint-csms-files-"))
        self.printer = printer or (lambda line: print(line, flush=True))
        self._files: Optional[FileServer] = None
        self._lock = threading.Lock()
        self._request_ids = 0

    @property
    def files(self) -> FileServer:
        with self._lock:
            if self._files is None:
                self._files = FileServer(self.workdir / "served", self.workdir / "uploads")
                self._files.root.mkdir(parents=True, exist_ok=True)
                self._files.start()
            return self._files

    def stop(self) -> None:
        with self._lock:
            if self._files is not None:
                self._files.stop()
                self._files = None

    def update_firmware(self, cp_id: str, bundle: Path, in_s: float = 0.0,
                        retries: Optional[int] = None,
                        retry_interval_s: Optional[int] = None) -> str:
        """Serve `bundle` and ask `cp_id` to fetch it `in_s` from now; its location."""
        bundle = Path(bundle)
        if not bundle.is_file():
            raise FileNotFoundError(f"no bundle at {bundle}")
        location = publish(self.files, bundle)
        when = datetime.now(timezone.utc) + timedelta(seconds=in_s)
        payload = {"location": location,
                   "retrieveDate": when.isoformat(timespec="seconds").replace("+00:00", "Z")}
        if retries is not None:
            payload["retries"] = retries
        if retry_interval_s is not None:
            payload["retryInterval"] = retry_interval_s
        self.csms.call(cp_id, "UpdateFirmware", payload)
        return location

    def signed_update_firmware(self, cp_id: str, bundle: Path, certificate: str,
                               signature: str, request_id: int = 1, in_s: float = 0.0,
                               install_in_s: Optional[float] = None,
                               retries: Optional[int] = None,
                               retry_interval_s: Optional[int] = None) -> str:
        """Serve `bundle` and send SignedUpdateFirmware with the signing `certificate` (PEM)
        and the bundle's base64 `signature` (`chargepoint release sign`); the charger's
        answer (Accepted, AcceptedCanceled, InvalidCertificate, Rejected)."""
        bundle = Path(bundle)
        if not bundle.is_file():
            raise FileNotFoundError(f"no bundle at {bundle}")
        now = datetime.now(timezone.utc)
        firmware = {"location": publish(self.files, bundle),
                    "retrieveDateTime": _iso(now + timedelta(seconds=in_s)),
                    "signingCertificate": certificate, "signature": signature.strip()}
        if install_in_s is not None:
            firmware["installDateTime"] = _iso(now + timedelta(seconds=install_in_s))
        payload = {"requestId": request_id, "firmware": firmware}
        if retries is not None:
            payload["retries"] = retries
        if retry_interval_s is not None:
            payload["retryInterval"] = retry_interval_s
        return self.csms.call(cp_id, "SignedUpdateFirmware", payload)["status"]

    def get_diagnostics(self, cp_id: str, **extra) -> Optional[str]:
        """Ask `cp_id` for its diagnostics, uploaded to the file server; the file name."""
        answer = self.csms.call(cp_id, "GetDiagnostics",
                                {"location": self.files.base_url + "/uploads/", **extra})
        return answer.get("fileName")

    def _next_request_id(self) -> int:
        with self._lock:
            self._request_ids += 1
            return self._request_ids

    # -- typed commands
    def console(self, stream: TextIO, cp_id: str) -> threading.Thread:
        """Read commands from `stream` (a terminal) on a thread until it ends."""
        thread = threading.Thread(target=self._read, args=(stream, cp_id),
                                  name="csms-console", daemon=True)
        thread.start()
        return thread

    def _read(self, stream: TextIO, cp_id: str) -> None:
        for line in stream:
            try:
                self.command(line, cp_id)
            except Exception as exc:            # noqa: BLE001 (said, and the demo goes on)
                self.printer(f"{line.strip()}: {type(exc).__name__}: {exc}")

    def command(self, line: str, cp_id: str) -> None:
        words = shlex.split(line)
        if not words:
            return
        name, args = words[0], words[1:]
        if name == "update-firmware" and args:
            options = dict(zip(args[1::2], args[2::2]))
            location = self.update_firmware(cp_id, Path(args[0]),
                                            in_s=float(options.get("--in", 0)),
                                            retries=int(options["--retries"])
                                            if "--retries" in options else None)
            self.printer(f"UpdateFirmware sent to {cp_id}: {location}")
        elif name == "signed-update-firmware" and args:
            options = dict(zip(args[1::2], args[2::2]))
            status = self.signed_update_firmware(
                cp_id, Path(args[0]), Path(options["--certificate"]).read_text(),
                Path(options["--signature"]).read_text(), request_id=self._next_request_id(),
                in_s=float(options.get("--in", 0)))
            self.printer(f"SignedUpdateFirmware sent to {cp_id}: {status}")
        elif name == "get-diagnostics":
            found = self.get_diagnostics(cp_id)
            self.printer(f"GetDiagnostics sent to {cp_id}: {found or 'no file (busy)'} will "
                         f"arrive in {self.files.uploads}")
        else:
            self.printer(HELP)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
