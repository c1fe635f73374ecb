"""Unplug → contactor open while the loop waits on the database, with and without the
interlock (chargepoint/interlock.py).

Why: a commit to a stalled SD card holds the loop for as long as the card takes, and a
hardware event queued behind it waits as long. The interlock opens the contactor in the
thread that reports the event; this measures what that is worth.

The real Runtime in this process (tests/harness.py `Firmware`, simulated charger, the
bundled CSMS on loopback): an EV charges on connector 1, another SQLite connection takes
the database's write lock (as a stalled card holds a commit), a ChangeConfiguration makes
the loop commit, and once the loop waits inside that commit the EV is unplugged. Measured:
from the unplug to the simulated contactor reading open (polled every 0.1 ms), then the
lock is let go after `--stall` seconds. "off" is the same run with the interlock given no
contactors.

    .venv/bin/python bench/stalled_card.py              # stalls of 0.5 and 2 s, 5 runs each
    .venv/bin/python bench/stalled_card.py --runs 3 --stall 1

Prints Markdown.
"""
from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import machine_lines, table  # noqa: E402
from chargepoint.csms.server import LocalCsms  # noqa: E402
from tests.harness import Firmware, in_a_commit, wait_until  # noqa: E402

CP = "CP-1"


def one_run(workdir: Path, stall_s: float, interlock: bool) -> float:
    """Seconds from the unplug to the open contactor."""
    csms = LocalCsms(host="127.0.0.1", port=0)
    csms.start()
    fw = Firmware(workdir, csms.url, {"log": {"level": "warning"}}).start()
    try:
        csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, timeout=20)
        if not interlock:
            fw.runtime.interlock.attach({})
        fw.sim.plug(1)
        fw.sim.tap("04A1B2C3")
        if not wait_until(lambda: fw.sim.contactor_commanded(1), 10):
            raise RuntimeError("the EV never charged")
        # Let go from a timer's thread: the connection is not tied to this one.
        blocker = sqlite3.connect(fw.settings.storage.path, isolation_level=None,
                                  check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        caller = threading.Thread(target=lambda: csms.call(
            CP, "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "30"},
            timeout=30), daemon=True)
        caller.start()
        if not wait_until(lambda: in_a_commit(fw._thread), 10):
            raise RuntimeError("the loop never reached the commit")
        release = threading.Timer(stall_s, lambda: blocker.execute("ROLLBACK"))
        unplugged = time.monotonic()
        release.start()
        fw.sim.unplug(1)
        while fw.sim.contactor_commanded(1):
            time.sleep(0.0001)
        opened = time.monotonic() - unplugged
        release.join()
        caller.join(timeout=30)
        blocker.close()
        return opened
    finally:
        fw.stop()
        csms.stop(graceful=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stall", type=float, nargs="+", default=[0.5, 2.0],
                        help="seconds the database's write lock is held (under 5: the "
                             "loop's commit gives up after 5 s)")
    args = parser.parse_args(argv)
    rows = []
    for stall in args.stall:
        for interlock in (True, False):
            times = []
            for _ in range(args.runs):
                with tempfile.TemporaryDirectory(prefix="stalled-card-") as tmp:
                    times.append(one_run(Path(tmp), stall, interlock))
            rows.append((f"{stall:g} s", "on" if interlock else "off",
                         f"{statistics.median(times) * 1000:.2f}",
                         f"{max(times) * 1000:.2f}", str(len(times))))
    print("\n".join(machine_lines()))
    print()
    print(table(("loop held in a commit for", "interlock", "unplug → contactor open, median ms",
                 "worst ms", "runs"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
