"""Start-up time: process start to the BootNotification received by the CSMS.

Why: a charger that reboots (power cut, Reset, firmware update) is offline until it has
registered again, and a driver may be standing at it. This starts the real
`python -m chargepoint run` process on simulated hardware (bench/_common.py) against the
bundled loopback CSMS (chargepoint/csms/server.py `LocalCsms`) and measures from just
before the process is spawned to the moment the CSMS has received the BootNotification
(`Received.time`, both on time.monotonic()). That covers the interpreter's start, the
imports, reading config.toml, opening SQLite, the hardware and the WebSocket handshake.

Two cases: a first start (no database yet: the schema is created) and a restart (the
database of the previous run). One run of each is made first and not counted, so every
counted run finds the files in the page cache, as a controller restarting does.

    .venv/bin/python bench/startup.py              # 7 counted runs of each case
    .venv/bin/python bench/startup.py --runs 11
    .venv/bin/python bench/startup.py --quick      # 2 runs: a smoke test

Prints Markdown; `--json FILE` also writes the figures.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (FirmwareProcess, Workdir, fmt, machine, machine_lines, median,  # noqa: E402
                     quiet_csms, table)

TARGET_S = 0.5


def one_start(csms, workdir: Path, cp_id: str) -> float:
    """Seconds from spawning the firmware to its BootNotification at the CSMS."""
    fw = FirmwareProcess(workdir, csms.url, cp_id=cp_id)
    mark = len(csms.received)
    fw.start()
    try:
        record = csms.wait_for("BootNotification", cp_id=cp_id, after=mark, timeout=20)
        return record.time - fw.started_at
    finally:
        if fw.stop() != 0:
            raise RuntimeError("the firmware did not stop cleanly:\n" + fw.tail())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="counted runs of each case")
    parser.add_argument("--quick", action="store_true", help="2 runs (a smoke test)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--dir", help="work directory (default: a new one in $TMPDIR)")
    args = parser.parse_args(argv)
    runs = 2 if args.quick else args.runs

    csms = quiet_csms()
    first, again = [], []
    try:
        with Workdir("bench-startup-", base=args.dir) as root:
            for i in range(runs + 1):
                cp_id = f"CP-START-{i}"
                seconds = one_start(csms, root / f"run{i}", cp_id)        # new database
                restart = one_start(csms, root / f"run{i}", cp_id)        # the same again
                if i > 0:                                                  # run 0 warms up
                    first.append(seconds)
                    again.append(restart)
    finally:
        csms.stop(graceful=False)

    result = {"machine": machine(), "runs": runs, "target_s": TARGET_S,
              "first_start_s": first, "restart_s": again,
              "first_start_median_s": median(first), "restart_median_s": median(again)}
    rows = []
    for name, values in (("first start (new database)", first),
                         ("restart (existing database)", again)):
        rows.append((name, fmt(median(values), 3), fmt(min(values), 3), fmt(max(values), 3),
                     len(values), "met" if median(values) <= TARGET_S else "missed"))
    print("### Start-up: process start to BootNotification at the CSMS\n")
    print("\n".join(machine_lines()))
    print(f"- {runs} counted runs of each case after one uncounted warm-up run; "
          "loopback CSMS (LocalCsms), simulated hardware\n")
    print(table(("case", "median s", "min s", "max s", "runs", f"target ≤ {TARGET_S} s"),
                rows))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
