"""The charger's own key pairs on disk: `<state dir>/charger-keys/charger-<id>.key` (mode
0600, in a 0700 directory) and the certificate the CSMS signed for it beside it
(`charger-<id>.crt`), for the TLS client of security profile 3.

Each file is written whole or not at all (a temporary file, fsync, rename, fsync of the
directory), so a power cut never leaves half a key. The key is written before its CSR is
sent (chargepoint/model/charger_certificate.py). The certificate's truth is the database;
its file is rewritten from there whenever it differs. The private key is never read back
here, never logged.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from chargepoint import durable

log = logging.getLogger("chargepoint.keys")

DIRECTORY = "charger-keys"


class KeyFiles:
    def __init__(self, state_dir: str | os.PathLike):
        self.directory = Path(state_dir) / DIRECTORY

    def key_path(self, key_id: str) -> Path:
        return self.directory / f"charger-{key_id}.key"

    def cert_path(self, key_id: str) -> Path:
        return self.directory / f"charger-{key_id}.crt"

    def store_private_key(self, key_id: str, pem: bytes) -> Path:
        path = self.key_path(key_id)
        self._write(path, pem)
        log.info("private key %s written to %s (mode 0600)", key_id, path)
        return path

    def certificate_files(self, key_id: str, chain_pem: str) -> tuple[str, str]:
        """(certificate file, key file) for `key_id`, the certificate file brought in line
        with `chain_pem`. FileNotFoundError when the key is not there."""
        key = self.key_path(key_id)
        if not key.exists():
            raise FileNotFoundError(f"the private key {key} of the charger's certificate is "
                                    "missing")
        cert = self.cert_path(key_id)
        data = chain_pem.encode("ascii")
        try:
            same = cert.read_bytes() == data
        except OSError:
            same = False
        if not same:
            self._write(cert, data)
        return str(cert), str(key)

    def prune(self, keep: Iterable[str]) -> None:
        """Delete the key pairs other than `keep` (replaced certificates, abandoned CSRs),
        and what a power cut left half-renamed (`.tmp`)."""
        wanted = set(keep)
        if not self.directory.is_dir():
            return
        for path in [*self.directory.glob("charger-*.*"), *self.directory.glob(".charger-*")]:
            key_id = path.stem[len("charger-"):]
            if path.suffix == ".tmp" or (key_id not in wanted and path.suffix in (".key", ".crt")):
                try:
                    path.unlink()
                except OSError as exc:
                    log.warning("could not delete %s: %s", path, exc)

    def _write(self, path: Path, data: bytes) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        durable.write_whole(path, data, mode=0o600)
