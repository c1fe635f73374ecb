"""Releases: what a bundle and an installed release weigh, how long building and
installing take, and the time from the Central System's request to the new release's
BootNotification.

Why: an update costs the charger its service for as long as it takes to come back, and
the card holds several releases (`[releases] keep`). This builds the bundle of this
checkout as another version (`chargepoint.releases.build_bundle`, as `chargepoint release
build` does), installs it (`install_bundle`: verify, virtual environment, pip from the
bundle, offline) and measures the disk it takes, then updates a running firmware
(`chargepoint run` by hand, on simulated hardware, against the bundled loopback CSMS):

- **UpdateFirmware**: the CSMS serves the bundle over HTTP on loopback and sends
  UpdateFirmware; measured from the request to the BootNotification of the new release
  (download, verify, install, switch, restart, boot). A firmware that answers
  NotSupported (no Firmware Management in this build) skips it, and says so.
- **switch**: the release already installed, put on trial, then a Reset; measured from
  the Reset to the new release's BootNotification (the restart through the guard).

    .venv/bin/python bench/releases.py              # 3 updates of each kind
    .venv/bin/python bench/releases.py --quick      # 1 of each

Prints Markdown; `--json FILE` also writes the figures.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import json
import shutil
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (ROOT, FirmwareProcess, Workdir, fmt, machine, machine_lines,  # noqa: E402
                     median, quiet_csms, table)

from chargepoint import __version__  # noqa: E402
from chargepoint import release_guard as guard  # noqa: E402
from chargepoint import releases  # noqa: E402

NEW = f"{__version__}.99"


def build_new(workdir: Path) -> tuple[Path, float]:
    """The bundle of this checkout as release NEW; (its path, seconds to build)."""
    spec = releases._dev_module(ROOT)
    source = workdir / "src"
    shutil.copytree(ROOT, source, ignore=spec._NOT_BUILT_FROM)
    init = source / "chargepoint" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', f'"{NEW}"'))
    started = time.monotonic()
    bundle = releases.build_bundle(workdir / "bundles", source=source)
    return bundle, time.monotonic() - started


def fresh_state(workdir: Path) -> Path:
    state = workdir / "state"
    if state.exists():
        shutil.rmtree(state)
    guard.adopt(state, sys.prefix, log=lambda level, text: None)
    return state


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def one_update(csms, workdir: Path, bundle: Path, via: str, run: int) -> float:
    """Seconds from the request (UpdateFirmware, or the Reset after the switch) to the
    new release's BootNotification."""
    state = fresh_state(workdir)
    cp_id = f"CP-REL-{via}-{run}"
    firmware = FirmwareProcess(workdir / f"{via[0]}{run}", csms.url, cp_id=cp_id,
                               args=["--state-dir", str(state)])
    firmware.start()
    try:
        csms.wait_for("BootNotification", lambda r: r["firmwareVersion"] == __version__,
                      cp_id=cp_id, timeout=30)
        if via == "switch":
            releases.install_bundle(bundle, state)
            releases.start_trial(NEW, state, guard.Policy(trial_s=600))
        mark = len(csms.received)
        started = time.monotonic()
        if via == "switch":
            csms.call(cp_id, "Reset", {"type": "Soft"})
        else:
            server, url = serve(bundle.parent)
            try:
                now = datetime.now(timezone.utc).isoformat(timespec="seconds")
                csms.call(cp_id, "UpdateFirmware", {"location": f"{url}/{bundle.name}",
                                                    "retrieveDate": now.replace("+00:00",
                                                                                "Z")})
                boot = csms.wait_for("BootNotification",
                                     lambda r: r["firmwareVersion"] == NEW, cp_id=cp_id,
                                     after=mark, timeout=300)
            finally:
                server.shutdown()
            return boot.time - started
        boot = csms.wait_for("BootNotification", lambda r: r["firmwareVersion"] == NEW,
                             cp_id=cp_id, after=mark, timeout=120)
        return boot.time - started
    finally:
        firmware.stop()
        firmware.kill()


def update_supported(csms, workdir: Path) -> bool:
    cp_id = "CP-REL-PROBE"
    firmware = FirmwareProcess(workdir / "probe", csms.url, cp_id=cp_id,
                               args=["--state-dir", str(workdir / "probe-state")])
    firmware.start()
    try:
        csms.wait_for("BootNotification", cp_id=cp_id, timeout=30)
        profiles = csms.call(cp_id, "GetConfiguration", {"key": ["SupportedFeatureProfiles"]})
        values = [k.get("value", "") for k in profiles.get("configurationKey", [])]
        return any("FirmwareManagement" in v for v in values)
    finally:
        firmware.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="updates of each kind")
    parser.add_argument("--quick", action="store_true", help="1 update of each kind")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--dir", help="work directory (default: a new one in $TMPDIR)")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs

    csms = quiet_csms()
    with Workdir("cp-rel-", base=args.dir) as workdir:
        bundle, build_s = build_new(workdir)
        manifest = releases.read_manifest(bundle)
        bundle_bytes = bundle.stat().st_size
        state = fresh_state(workdir)
        started = time.monotonic()
        releases.install_bundle(bundle, state)
        install_s = time.monotonic() - started
        installed = releases.disk_usage(state / "releases" / NEW)
        files = sum(1 for p in (state / "releases" / NEW).rglob("*") if p.is_file())
        switch = [one_update(csms, workdir, bundle, "switch", n) for n in range(runs)]
        supported = update_supported(csms, workdir)
        update = [one_update(csms, workdir, bundle, "update", n) for n in range(runs)] \
            if supported else []
    csms.stop()

    figures = {"machine": machine(), "bundle_bytes": bundle_bytes,
               "bundle_wheels": len(manifest.files), "build_s": build_s,
               "install_s": install_s, "installed_bytes": installed,
               "installed_files": files, "switch_s": switch, "update_s": update,
               "update_supported": supported}
    print("### Releases\n")
    print("\n".join(machine_lines()))
    print(f"- {runs} update(s) of each kind; release {NEW} of this checkout, "
          f"{manifest.platform}, Python {manifest.python}\n")
    rows = [
        ("bundle (one file)", f"{fmt(bundle_bytes / 1e6)} MB, "
                              f"{len(manifest.files)} wheels", f"built in {fmt(build_s)} s"),
        ("installed release", f"{fmt(installed / 1e6)} MB, {files} files",
         f"installed in {fmt(install_s)} s (verify, venv, pip, offline)"),
        ("Reset to the new release's BootNotification (installed, on trial)",
         f"median {fmt(median(switch), 2)} s", ", ".join(fmt(s, 2) for s in switch)),
        ("UpdateFirmware to the new release's BootNotification",
         f"median {fmt(median(update), 1)} s" if update else "not measured",
         ", ".join(fmt(s, 1) for s in update) if update
         else "this build answers UpdateFirmware NotSupported"),
    ]
    print(table(["what", "size / time", "detail"], rows))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
