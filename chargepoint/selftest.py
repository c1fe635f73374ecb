"""The self-test of a release on trial, run in its own process once the CSMS has accepted
it (chargepoint/maintenance.py): passing it commits the release, failing it rolls it back.

By then the release has imported, started its loop, opened its database and hardware
and reached the CSMS. What is left to prove is what a charger needs later and would only
find out then: the database reads whole, its directory takes writes and its disk has
room, and the modules loaded only when needed import, the next update's above
all (a release that cannot update itself again would need a truck roll).
"""
from __future__ import annotations

import importlib
import os
import shutil
import sqlite3
from pathlib import Path

#: Modules a running charger loads only when it needs them (not those of optional extras,
#: such as the local Central System's: a controller has no reason to install them).
LATER_MODULES = ("chargepoint.transfers", "chargepoint.diagnostics", "chargepoint.releases",
                 "chargepoint.maintenance", "hal.meter_poller", "hal.sim_control")


def run(database: str, data_dir: str, min_free_bytes: int) -> list[str]:
    """What is wrong with the running release, one line each; [] when it passes."""
    problems = []
    problems += _database(database)
    problems += _writable(data_dir)
    try:
        free = shutil.disk_usage(data_dir).free
        if free < min_free_bytes:
            problems.append(f"only {free // (1024 * 1024)} MiB free in {data_dir}")
    except OSError as exc:
        problems.append(f"cannot read the free space of {data_dir}: {exc.strerror}")
    for name in LATER_MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:            # noqa: BLE001 (whatever breaks an import)
            problems.append(f"module {name} does not import: {type(exc).__name__}: {exc}")
    return problems


def _database(path: str) -> list[str]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        return [f"the database {path} does not open: {exc}"]
    try:
        found = [row[0] for row in db.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.Error as exc:
        return [f"the database {path} cannot be checked: {exc}"]
    finally:
        db.close()
    return [] if found == ["ok"] else [f"the database {path} is damaged: {'; '.join(found)}"]


def _writable(data_dir: str) -> list[str]:
    probe = Path(data_dir) / f".selftest-{os.getpid()}"
    try:
        with open(probe, "wb") as out:
            out.write(b"x" * 4096)
            out.flush()
            os.fsync(out.fileno())
        probe.unlink()
    except OSError as exc:
        return [f"the directory of the database {data_dir} takes no write: {exc.strerror or exc}"]
    return []
