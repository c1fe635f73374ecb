"""Storage wear per charging hour: bytes written to disk and durable commits.

Why: every transaction message is committed with fsync before it counts as produced, and
an SD card wears with every page written. This runs one simulated charging hour in this
process (the real Runtime on a virtual clock, tests/harness.py `Firmware`, against the
loopback CSMS) at MeterValueSampleInterval 10 s and 60 s, with the measurands shipped in
config.toml, and reports for that hour:

- `write_bytes` from /proc/self/io (Linux): bytes this process sent towards the disk,
  counted by the kernel in 4 KiB page-cache pages as they are dirtied;
- `Store.commits` (chargepoint/store.py): durable commits, i.e. WAL fsyncs;
- the growth of the database and its -wal file;
- then what one commit writes: the WAL frames (24-byte header + one page each) of the
  commits still in the -wal file at the end, by table (`dbstat`).

Run from the project directory (Linux, on the disk you care about, not a tmpfs):

    .venv/bin/python bench/storage_wear.py            # temporary directory in $TMPDIR
    .venv/bin/python bench/storage_wear.py --dir /mnt/sdcard/bench

    .venv/bin/python bench/storage_wear.py --real 300 # plus 5 minutes of the real process

Prints Markdown and exits 0. Takes about half a minute (plus `--real` seconds).
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import struct
import sys
import tempfile
import time
from collections import Counter
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chargepoint.clock import VirtualClock  # noqa: E402
from chargepoint.csms.server import LocalCsms  # noqa: E402
from tests.harness import Firmware, wait_until  # noqa: E402

HOUR_S = 3600
INTERVALS_S = (10, 60)
#: As shipped in config.toml.
SAMPLED = "Energy.Active.Import.Register,Power.Active.Import"
WAL_HEADER = 32
FRAME_HEADER = 24


def write_bytes() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no write_bytes")


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def filesystem(path: Path) -> str:
    """Type of the filesystem holding `path` (longest mount point in /proc/self/mounts)."""
    best, kind = "", "?"
    real = str(path.resolve())
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            mount = fields[1].replace("\\040", " ")
            if (real == mount or real.startswith(mount.rstrip("/") + "/")) \
                    and len(mount) >= len(best):
                best, kind = mount, fields[2]
    return kind


def wal_commits(db: Path) -> tuple[bytes, list[list[int]]]:
    """The WAL's salts and the page numbers written by each commit still in the -wal
    file (valid frames only: a checkpoint resets the WAL, later commits overwrite it)."""
    data = Path(f"{db}-wal").read_bytes()
    if len(data) < WAL_HEADER:
        return b"", []
    page_size = struct.unpack(">I", data[8:12])[0]
    salts = data[16:24]
    commits, current = [], []
    offset = WAL_HEADER
    while offset + FRAME_HEADER + page_size <= len(data):
        page, db_size = struct.unpack(">II", data[offset:offset + 8])
        if data[offset + 8:offset + 16] != salts:
            break                                  # left over from before the last reset
        current.append(page)
        if db_size:                                # a commit's last frame
            commits.append(current)
            current = []
        offset += FRAME_HEADER + page_size
    return salts, commits


def page_owners(db: Path) -> tuple[int, dict[int, str]]:
    with closing(sqlite3.connect(db)) as con:
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        owners = {page: name for name, page in con.execute("SELECT name, pageno FROM dbstat")}
        freelist = con.execute("PRAGMA freelist_count").fetchone()[0]
    owners[1] = owners.get(1, "sqlite_schema") + " (page 1: header)"
    if freelist:
        owners.setdefault(-1, f"{freelist} free pages")
    return page_size, owners


def charging_hour(workdir: Path, interval: int) -> dict:
    """One hour of charging at `interval`; what it wrote, and the WAL's last commits."""
    csms = LocalCsms(host="127.0.0.1", port=0)
    csms.start()
    fw = Firmware(workdir, csms.url, {
        "log": {"level": "warning"},
        "ocpp": {"MeterValueSampleInterval": interval, "MeterValuesSampledData": SAMPLED},
    }, clock=VirtualClock())
    try:
        fw.start()
        assert wait_until(lambda: fw.station.services.link.accepted, 10), "BootNotification not accepted"
        fw.sim.plug(1)
        fw.settle()
        fw.sim.tap("BENCH01")
        csms.wait_for("StartTransaction", timeout=10)
        assert wait_until(lambda: fw.station.services.connectors[1].tx is not None
                          and fw.station.services.connectors[1].tx.transaction_id is not None, 10)
        fw.advance(1)
        store, db = fw.runtime.store, Path(fw.settings.storage.path)
        mv_before = len(csms.records("MeterValues"))
        salts, earlier = wal_commits(db)
        before = (write_bytes(), store.commits, size(db), time.monotonic())
        fw.advance(HOUR_S)
        after = (write_bytes(), store.commits, size(db), time.monotonic())
        salts_now, commits = wal_commits(db)
        if salts_now == salts:                     # no WAL reset: skip the commits before
            commits = commits[len(earlier):]
        page_size, owners = page_owners(db)
        return {
            "interval": interval,
            "meter_values": len(csms.records("MeterValues")) - mv_before,
            "write_bytes": after[0] - before[0],
            "commits": after[1] - before[1],
            "growth": after[2] - before[2],
            "db_size": after[2],
            "seconds": after[3] - before[3],
            "page_size": page_size,
            "wal_commits": commits,
            "owners": owners,
        }
    finally:
        fw.stop()
        csms.stop(graceful=False)


def real_time(workdir: Path, interval: int, seconds: float) -> dict:
    """The real `chargepoint run` process charging for `seconds` of wall time: what the
    kernel wrote for it (`/proc/<pid>/io` write_bytes), including the periodic write-back of
    SQLite's shared-memory index that a compressed simulated hour leaves no time for."""
    from bench._common import FirmwareProcess, quiet_csms

    csms = quiet_csms()
    fw = FirmwareProcess(workdir, csms.url, ocpp={"MeterValueSampleInterval": interval,
                                                   "MeterValuesSampledData": SAMPLED},
                         log_level="warning")
    try:
        fw.start()
        csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1, timeout=20)
        fw.wait_sim()                              # registered: a card is now authorized
        fw.sim("plug", "1")
        fw.sim("tap", "BENCH01")
        csms.wait_for("StartTransaction", timeout=20)
        time.sleep(2 * interval)                   # start-up writes are not charging
        io = Path(f"/proc/{fw.pid}/io")

        def written() -> int:
            return next(int(line.split()[1]) for line in io.read_text().splitlines()
                        if line.startswith("write_bytes:"))
        mv_before, start, t0 = len(csms.records("MeterValues")), written(), time.monotonic()
        time.sleep(seconds)
        end, t1 = written(), time.monotonic()
        return {"interval": interval, "seconds": t1 - t0,
                "meter_values": len(csms.records("MeterValues")) - mv_before,
                "per_hour": (end - start) * 3600.0 / (t1 - t0)}
    finally:
        fw.stop()
        csms.stop(graceful=False)


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def report(results: list[dict], fs: str) -> str:
    lines = [
        f"## Storage wear per charging hour (filesystem: {fs})",
        "",
        "| MeterValueSampleInterval | MeterValues/h | commits/h | write_bytes/h | "
        "per commit (4 KiB pages) | DB+WAL growth | run time |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        per = r["write_bytes"] / r["commits"] if r["commits"] else 0
        lines.append(f"| {r['interval']} s | {r['meter_values']} | {r['commits']} | "
                     f"{r['write_bytes'] / 1e6:.2f} MB | {kib(per)} ({per / 4096:.2f}) | "
                     f"{kib(r['growth'])} "
                     f"(now {kib(r['db_size'])}) | {r['seconds']:.1f} s |")
    for r in results:
        commits = r["wal_commits"]
        if not commits:
            continue
        frame = FRAME_HEADER + r["page_size"]
        by_table: Counter[str] = Counter()
        for pages in commits:
            for page in pages:
                by_table[r["owners"].get(page, f"page {page} (freed since)")] += 1
        frames = sum(len(p) for p in commits)
        lines += [
            "",
            f"### What one commit writes at {r['interval']} s "
            f"(its last {len(commits)} commits, still in the -wal file)",
            "",
            f"page_size {r['page_size']} B, WAL frame {frame} B; "
            f"{frames / len(commits):.2f} frames = {kib(frames * frame / len(commits))} "
            f"appended to the WAL per commit, then one fsync. The kernel counts (and "
            f"writes) whole 4 KiB pages: an append dirties one or two of them, and the "
            f"fsync cleans them, so the next commit dirties the same page again.",
            "",
            "| table (pages written) | frames per commit |",
            "| --- | ---: |",
        ]
        for name, count in by_table.most_common():
            lines.append(f"| {name} | {count / len(commits):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="where the databases go (default: a temporary directory)")
    parser.add_argument("--real", type=float, metavar="SECONDS", default=0,
                        help="also run the real process for SECONDS of wall time at a 10 s "
                             "interval (e.g. 300) and report its write_bytes per hour")
    args = parser.parse_args(argv)
    if not os.path.exists("/proc/self/io"):
        print("needs Linux (/proc/self/io)", file=sys.stderr)
        return 0
    base = Path(args.dir) if args.dir else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="storage-wear-", dir=base) as tmp:
        fs = filesystem(Path(tmp))
        results = []
        for interval in INTERVALS_S:
            workdir = Path(tmp) / f"interval-{interval}"
            workdir.mkdir()
            results.append(charging_hour(workdir, interval))
        print(report(results, fs))
        if args.real > 0:
            workdir = Path(tmp) / "real-time"
            real = real_time(workdir, 10, args.real)
            print(f"\nReal process, {real['seconds']:.0f} s of wall time at a 10 s interval "
                  f"({real['meter_values']} MeterValues): "
                  f"{real['per_hour'] / 1e6:.2f} MB written per hour (/proc/<pid>/io).")
        if fs in ("tmpfs", "ramfs"):
            print(f"\nNote: {tmp} is on {fs}; write_bytes stays 0 there. Use --dir on a disk.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
