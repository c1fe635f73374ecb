"""The updates and the diagnostics, carried out away from the station loop.

The model (chargepoint/model/firmware.py, chargepoint/model/diagnostics.py) asks for
each step as an action; here each runs on a thread of its own, so that the loop keeps
turning (and the contactor keeps answering) through a download of minutes, and its
outcome goes back to the loop as an event:

- `DownloadFirmware`  → chargepoint/transfers.py into `downloads/` beside the database
                      → `FirmwareDownloaded`
- `VerifyFirmware`    → chargepoint/releases.py: the signature of the bundle (signed
                        updates), then its manifest; a refused bundle is deleted
                      → `FirmwareVerified`
- `FetchCrls`         → chargepoint/transfers.py `fetch`, every URI at once on a thread
                        of its own, the answer given at the action's time limit whatever
                        is still on its way → `CrlsFetched`
- `InstallFirmware`   → chargepoint/releases.py: verify, install beside the running
                        release, start its trial (switch `current`) → `FirmwareInstalled`
- `TestRelease`       → chargepoint/selftest.py, then commit → `ReleaseTested`
- `RollBackRelease`   → chargepoint/releases.py rollback, then a restart (at once, on
                        the loop's thread), which starts the release now current
- `UploadDiagnostics` → chargepoint/diagnostics.py archive, or chargepoint/security_log.py
                        file (GetLog's SecurityLog), then transfers.py
                      → `DiagnosticsUploaded`

Every failure becomes an event with the cause in words (and a log line here): nothing
raised on a worker is lost, and the loop never waits for one.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from chargepoint import __version__
from chargepoint import actions as act
from chargepoint import diagnostics, releases, security_log, selftest, transfers
from chargepoint import events as ev
from chargepoint.model.firmware import RunningRelease

log = logging.getLogger("chargepoint.maintenance")


ACTIONS = (act.DownloadFirmware, act.VerifyFirmware, act.FetchCrls, act.InstallFirmware,
           act.TestRelease, act.RollBackRelease, act.UploadDiagnostics)


def state_dir_of(settings) -> str:
    """The state directory, where the releases live: the configured one, or the
    database's directory (settings made without `load_settings`, as in tests)."""
    return settings.state_dir or str(Path(settings.storage.path).parent)


def data_dir_of(settings) -> str:
    """Where the working files go (downloads, archives, the log file): beside the database,
    in the place the start-up checks found to be the firmware's own, on the disk whose
    free space a download must leave (the state directory unless [storage] path moves
    the database)."""
    return str(Path(settings.storage.path).parent)


def transfer_options(settings) -> transfers.TransferOptions:
    section = settings.transfers
    return transfers.TransferOptions(stall_timeout_s=section.stall_timeout_s,
                                     ca_file=section.ca_file,
                                     min_free_bytes=section.min_free_mb * 1024 * 1024)


def running_release(state_dir: str) -> RunningRelease:
    """This process's release and its trial, as the release records say."""
    try:
        found = releases.trial(Path(state_dir))
    except Exception:                       # noqa: BLE001 (never stop a start for it)
        log.exception("could not read the release records in %s", state_dir)
        return RunningRelease(__version__)
    if found is None:
        return RunningRelease(__version__)
    rolled = found.last_rollback
    on_trial = found.running_on_trial(__version__)
    return RunningRelease(
        __version__, on_trial=on_trial,
        rolled_back=(rolled.version, rolled.reason) if rolled is not None else None)


class Maintenance:
    """Runs the actions of ACTIONS; `put` takes their outcome events (thread-safe)."""

    def __init__(self, settings, put: Callable[[Any], None], frames: diagnostics.FrameRing):
        self.settings = settings
        self.state_dir = state_dir_of(settings)
        self.data_dir = data_dir_of(settings)
        self.options = transfer_options(settings)
        self._put = put
        self._frames = frames
        self._threads: list[threading.Thread] = []

    @property
    def downloads(self) -> Path:
        return Path(self.data_dir) / "downloads"

    def bundle_path(self, request_id: str) -> Path:
        return self.downloads / f"{request_id}.bundle"

    def carry_out(self, action: Any) -> Optional[act.Restart]:
        """Start `action` on a worker; a rollback is done here and asks for the restart."""
        if isinstance(action, act.RollBackRelease):
            return self._roll_back(action.reason)
        job = {act.DownloadFirmware: self._download, act.VerifyFirmware: self._verify,
               act.FetchCrls: self._fetch_crls, act.InstallFirmware: self._install,
               act.TestRelease: self._test, act.UploadDiagnostics: self._upload}[type(action)]
        thread = threading.Thread(target=job, args=(action,), daemon=True,
                                  name=f"maintenance-{type(action).__name__}")
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return None

    def busy(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    # ------------------------------------------------------------------ firmware
    def _download(self, action: act.DownloadFirmware) -> None:
        dest = self.bundle_path(action.request_id)
        try:
            transfers.check_location(action.location)
        except transfers.TransferError as exc:
            log.error("firmware download refused: %s", exc)
            self._put(ev.FirmwareDownloaded(action.request_id, False, str(exc), final=True))
            return
        self._forget_other_downloads(dest)
        try:
            size = transfers.download(action.location, dest, self.options,
                                      room_for=lambda n: n * releases.ROOM_FACTOR)
        except transfers.TransferError as exc:
            log.error("firmware download failed: %s", exc)
            self._put(ev.FirmwareDownloaded(action.request_id, False, str(exc)))
            return
        except Exception as exc:            # noqa: BLE001 (reported, never lost)
            log.exception("firmware download failed")
            self._put(ev.FirmwareDownloaded(action.request_id, False,
                                            f"{type(exc).__name__}: {exc}"))
            return
        log.info("firmware bundle downloaded: %s, %d bytes", transfers.shown(action.location),
                 size)
        self._put(ev.FirmwareDownloaded(action.request_id, True))

    def _forget_other_downloads(self, keep: Path) -> None:
        """Only the request in progress keeps its bytes (a replaced request's are junk)."""
        if not self.downloads.is_dir():
            return
        for path in self.downloads.iterdir():
            if not path.name.startswith(keep.name):
                try:
                    path.unlink()
                except OSError:
                    pass

    def _verify(self, action: act.VerifyFirmware) -> None:
        bundle = self.bundle_path(action.request_id)
        outcome = "invalid-signature"
        try:
            releases.verify_bundle_signature(bundle, action.signature, action.certificate)
            outcome = "invalid-bundle"
            releases.verify_bundle(bundle)
        except releases.ReleaseError as exc:
            log.error("firmware bundle refused (%s): %s", outcome, exc)
            shutil.rmtree(self.downloads, ignore_errors=True)
            self._put(ev.FirmwareVerified(action.request_id, outcome, str(exc)))
            return
        except Exception as exc:            # noqa: BLE001 (reported, never lost)
            log.exception("firmware bundle could not be verified")
            shutil.rmtree(self.downloads, ignore_errors=True)
            self._put(ev.FirmwareVerified(action.request_id, outcome,
                                          f"{type(exc).__name__}: {exc}"))
            return
        log.info("firmware bundle signature verified: %s", bundle.name)
        self._put(ev.FirmwareVerified(action.request_id, "verified"))

    def _fetch_crls(self, action: act.FetchCrls) -> None:
        """Each URI on a thread of its own, so that one slow server does not eat the
        others' time; at `within_s` the answer goes, a URI still running counted as not
        answering (its thread ends at its next read)."""
        deadline = time.monotonic() + action.within_s
        got: dict[str, ev.FetchedCrl] = {}

        def one(url: str) -> None:
            try:
                got[url] = ev.FetchedCrl(url, transfers.fetch(url, action.max_bytes,
                                                              action.within_s, self.options))
            except transfers.TransferError as exc:
                got[url] = ev.FetchedCrl(url, reason=str(exc))
            except Exception as exc:        # noqa: BLE001 (reported, never lost)
                log.exception("CRL fetch from %s failed", transfers.shown(url))
                got[url] = ev.FetchedCrl(url, reason=f"{transfers.shown(url)}: "
                                                     f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=one, args=(url,), daemon=True,
                                    name="maintenance-FetchCrl") for url in action.urls]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        results = tuple(got.get(url) or ev.FetchedCrl(
            url, reason=f"{transfers.shown(url)}: no whole answer within {action.within_s:g} s")
            for url in action.urls)
        self._put(ev.CrlsFetched(action.fetch_id, results))

    def _install(self, action: act.InstallFirmware) -> None:
        bundle = self.bundle_path(action.request_id)
        try:
            version = releases.install_bundle(bundle, Path(self.state_dir))
            releases.start_trial(version, Path(self.state_dir), self.settings.releases)
        except releases.ReleaseError as exc:
            log.error("firmware installation failed: %s", exc)
            self._put(ev.FirmwareInstalled(action.request_id, False, reason=str(exc)))
            return
        except Exception as exc:            # noqa: BLE001 (reported, never lost)
            log.exception("firmware installation failed")
            self._put(ev.FirmwareInstalled(action.request_id, False,
                                           reason=f"{type(exc).__name__}: {exc}"))
            return
        finally:
            shutil.rmtree(self.downloads, ignore_errors=True)
        log.warning("release %s installed and switched to, on trial", version)
        self._put(ev.FirmwareInstalled(action.request_id, True, version=version))

    def _test(self, action: act.TestRelease) -> None:
        problems = selftest.run(self.settings.storage.path, self.data_dir,
                                self.options.min_free_bytes)
        if problems:
            self._put(ev.ReleaseTested(False, "; ".join(problems)))
            return
        try:
            releases.commit(Path(self.state_dir))
        except Exception as exc:            # noqa: BLE001
            log.exception("could not commit the release")
            self._put(ev.ReleaseTested(False, f"commit failed: {type(exc).__name__}: {exc}"))
            return
        self._put(ev.ReleaseTested(True))

    def _roll_back(self, reason: str) -> Optional[act.Restart]:
        try:
            releases.rollback(Path(self.state_dir), reason)
        except Exception:                   # noqa: BLE001
            log.exception("could not roll the release back (%s); it keeps running", reason)
            return None
        log.error("release %s rolled back: %s; restarting into the previous release",
                  __version__, reason)
        return act.Restart("release")

    # ------------------------------------------------------------------ diagnostics
    def _upload(self, action: act.UploadDiagnostics) -> None:
        # A folder per request: a GetLog and a GetDiagnostics may be under way together.
        folder = Path(self.data_dir) / "diagnostics" / action.request_id
        archive = folder / action.file_name
        what = action.kind.replace("-", " ")
        try:
            transfers.check_location(action.location)
        except transfers.TransferError as exc:
            log.error("%s upload refused: %s", what, exc)
            self._put(ev.DiagnosticsUploaded(action.request_id, False, str(exc), final=True,
                                             cause=exc.cause))
            return
        try:
            self._build(action, archive)
            where = transfers.upload(action.location, archive, self.options)
        except transfers.TransferError as exc:
            log.error("%s upload failed: %s", what, exc)
            self._put(ev.DiagnosticsUploaded(action.request_id, False, str(exc),
                                             cause=exc.cause))
            return
        except Exception as exc:            # noqa: BLE001
            log.exception("%s upload failed", what)
            self._put(ev.DiagnosticsUploaded(action.request_id, False,
                                             f"{type(exc).__name__}: {exc}"))
            return
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            try:
                folder.parent.rmdir()       # the last one out leaves nothing behind
            except OSError:
                pass
        log.info("%s uploaded to %s", what, where)
        self._put(ev.DiagnosticsUploaded(action.request_id, True))

    def _build(self, action: act.UploadDiagnostics, out: Path) -> None:
        if action.kind == "security-log":
            security_log.write_file(out, self.settings.storage.path,
                                    self.settings.csms.charge_point_id, action.start,
                                    action.stop)
            return
        diagnostics.build_archive(
            out, config_path=self.settings.source, database=self.settings.storage.path,
            data_dir=self.data_dir, start=action.start, stop=action.stop,
            frames=self._frames.lines(), settings=self.settings,
            extra_facts={"charge_point_id": self.settings.csms.charge_point_id,
                         "release": self.release_facts()})

    def release_facts(self) -> dict:
        release = running_release(self.state_dir)
        return {"version": release.version, "on_trial": release.on_trial,
                "last_rollback": list(release.rolled_back) if release.rolled_back else None,
                "pid": os.getpid()}
