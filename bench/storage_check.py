"""What checking the database at start costs, and what a salvage costs, on a realistic file.

Why: every start reads the header and runs `PRAGMA integrity_check` before trusting the
database (chargepoint/storage.py), so a damaged SD card is found before the firmware acts
on it. That is paid on every boot; `quick_check` would be cheaper but does not compare
indexes with their tables (a local-list lookup through a bad index answers wrongly).
This measures both, the header check, the check that the rows loaded at start decode
and fit (damage inside a record passes integrity_check), a whole `Storage.open` of a
sound file, and the salvage of a damaged one, so the choices rest on figures.

The database is made through the firmware's own code: `fill_queue` of bench/drain.py
(one offline transaction: StartTransaction, MeterValues one second apart with energy
and power, StopTransaction) and a local authorization list, in the firmware's schema
and page size. Each figure is the median of several repetitions on a warm page cache
(a cold SD card adds its read time: about 5 MB at the card's read rate).

    .venv/bin/python bench/storage_check.py                  # 10,000 queued + 10,000 tags
    .venv/bin/python bench/storage_check.py --messages 50000 --tags 0
    .venv/bin/python bench/storage_check.py --quick          # 300 + 300: a smoke test
    .venv/bin/python bench/storage_check.py --dir /mnt/sdcard

Prints Markdown; `--json FILE` also writes the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import Workdir, fmt, machine, machine_lines, median, table  # noqa: E402
from drain import fill_queue  # noqa: E402


def add_tags(db: Path, tags: int) -> None:
    from chargepoint.store import Store

    store = Store(db)
    try:
        with store.transaction():
            for i in range(tags):
                store.execute("INSERT INTO local_list(id_tag, info) VALUES(?, ?)",
                              (f"TAG{i:08X}", json.dumps({"status": "Accepted",
                                                          "expiryDate": "2027-01-01T00:00:00Z"})))
        store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()


def timed(fn, repeat: int) -> float:
    """Median seconds of `fn()` over `repeat` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return median(times)


def pragma(db: Path, name: str) -> None:
    con = sqlite3.connect(db)
    try:
        assert con.execute(f"PRAGMA {name}").fetchone()[0] == "ok"
    finally:
        con.close()


def content(db: Path) -> None:
    from chargepoint import salvage
    from chargepoint.storage import Storage

    con = sqlite3.connect(db)
    try:
        assert salvage.content_problem(con, Storage._schema()) is None
    finally:
        con.close()


def open_sound(db: Path) -> None:
    from chargepoint.storage import Storage

    Storage.open(db).close()


def salvage_damaged(root: Path, db: Path) -> None:
    """Storage.open of a copy whose header is destroyed: everything read and seeded."""
    from chargepoint.storage import Storage

    work = root / "damaged"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    copy = work / "cp.db"
    shutil.copyfile(db, copy)
    with open(copy, "r+b") as f:
        f.write(b"\0" * 100)
    storage = Storage.open(copy)
    try:
        assert storage.health.state == "repaired"
    finally:
        storage.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="queued messages")
    parser.add_argument("--tags", type=int, default=10_000, help="local list entries")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="300 + 300, 3 repetitions")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--dir", help="where the database goes (default: $TMPDIR)")
    args = parser.parse_args(argv)
    messages, tags, repeat = (300, 300, 3) if args.quick else \
        (args.messages, args.tags, args.repeat)

    import logging

    logging.disable(logging.ERROR)              # the salvage's ERROR line is expected
    from chargepoint import salvage

    with Workdir("bench-storage-check-", base=args.dir) as root:
        db = root / "cp.db"
        fill_queue(db, messages)
        add_tags(db, tags)
        size = os.path.getsize(db)
        figures = {
            "header_s": timed(lambda: salvage.header_problem(str(db)), repeat),
            "quick_check_s": timed(lambda: pragma(db, "quick_check"), repeat),
            "integrity_check_s": timed(lambda: pragma(db, "integrity_check"), repeat),
            "content_s": timed(lambda: content(db), repeat),
            "open_s": timed(lambda: open_sound(db), repeat),
            "salvage_s": timed(lambda: salvage_damaged(root, db), max(1, repeat // 2)),
        }
    out = {"machine": machine(), "messages": messages, "tags": tags, "repeat": repeat,
           "bytes": size, **figures, "ok": True}
    print(f"### Checking the database at start: {messages:,} queued messages, "
          f"{tags:,} local-list entries ({size / 1e6:.1f} MB)\n")
    print("\n".join(machine_lines()))
    print(f"- median of {repeat} repetitions, warm page cache\n")
    print(table(("step", "ms (median)"), [
        ("header and size check (100 bytes)", fmt(figures["header_s"] * 1000, 2)),
        ("PRAGMA quick_check", fmt(figures["quick_check_s"] * 1000, 1)),
        ("PRAGMA integrity_check (used)", fmt(figures["integrity_check_s"] * 1000, 1)),
        ("rows loaded at start decode and fit (salvage.content_problem)",
         fmt(figures["content_s"] * 1000, 1)),
        ("Storage.open of the sound file (lock, modes, checks, one commit)",
         fmt(figures["open_s"] * 1000, 1)),
        ("Storage.open of a copy with its header destroyed (salvage, fresh file)",
         fmt(figures["salvage_s"] * 1000, 1)),
    ]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
