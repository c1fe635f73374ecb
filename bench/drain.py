"""Draining the durable queue: 10,000 transaction messages delivered after a reconnect.

Why: a charger that was offline for a day holds thousands of MeterValues; when the link
comes back they must all reach the CSMS, in order, before anything newer, one at a time
(OCPP-J allows one outstanding CALL), each deleted only once its CALLRESULT is recorded
durably (docs/delivery.md). How fast that goes decides how long the backlog delays
everything else.

The queue is made through the Outbox API (chargepoint/model/outbox.py) in the firmware's own
database, as a long offline transaction leaves it: a StartTransaction, then MeterValues
one second apart (energy register and power, as config.toml samples them) and a
StopTransaction, all of one transaction whose transactionId is not known yet. The real
`python -m chargepoint run` process is started while nothing listens at the CSMS's
address; once it is up (its sim control socket answers) the CSMS starts on that address,
the firmware reconnects, registers and drains the queue.

Measured: from the StartTransaction's arrival to the StopTransaction's, at the CSMS;
messages/s = (messages - 1) / that time, and the firmware's CPU time (utime + stime, all
threads, /proc) over the same span per message. Checked: every message arrived exactly once, in
the order produced (the energy values rise one by one), each MeterValues and the
StopTransaction carry the transactionId the CSMS gave, and after a clean stop the
firmware's `outbox` and `outbox_dead` tables are empty.

Against two CSMSs: `RawCsms` (bench/_common.py: `websockets` only, answers at once; the
firmware bounds the rate) and the bundled one (chargepoint/csms/server.py `LocalCsms`:
validates every message with the `ocpp` library and answers from a worker thread).

Then the memory a big backlog costs (`--backlog`, 200,000 messages by default, about a
month offline at a 10 s sample interval): one more run against the raw CSMS, reporting
the process's VmRSS once it is up with the whole queue on disk and not yet connected, and
its VmHWM (peak) after draining all of it.

    .venv/bin/python bench/drain.py                    # 3 runs of 10,000 per CSMS
    .venv/bin/python bench/drain.py --messages 50000 --runs 5
    .venv/bin/python bench/drain.py --backlog 0        # without the backlog run
    .venv/bin/python bench/drain.py --quick            # 1 run of 300: a smoke test
    .venv/bin/python bench/drain.py --dir /mnt/sdcard  # the database on that disk

Prints Markdown; `--json FILE` also writes the figures.
"""
from __future__ import annotations

import argparse
import datetime
import json
import socket
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (TAG, FirmwareProcess, RawCsms, Workdir, fmt, machine,  # noqa: E402
                     machine_lines, median, proc_cpu_s, proc_status, table)

TARGET_PER_S = 1000.0
TX_ACTIONS = ("StartTransaction", "MeterValues", "StopTransaction")
POWER_W = 22080


def iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def sampled(energy_wh: int) -> list[dict]:
    return [{"value": str(energy_wh), "context": "Sample.Periodic", "format": "Raw",
             "measurand": "Energy.Active.Import.Register", "location": "Outlet",
             "unit": "Wh"},
            {"value": str(POWER_W), "context": "Sample.Periodic", "format": "Raw",
             "measurand": "Power.Active.Import", "location": "Outlet", "unit": "W"}]


def fill_queue(db: Path, messages: int) -> None:
    """One stopped transaction with `messages` queued messages, in one commit."""
    from chargepoint.model.outbox import Outbox
    from chargepoint.store import Store

    store = Store(db)
    try:
        outbox = Outbox(store)
        t0 = time.time() - messages - 60
        samples = messages - 2
        with store.transaction():
            cur = store.execute(
                "INSERT INTO transactions(connector_id, id_tag, meter_start, started, "
                "last_wh, last_ts, stopped) VALUES(1, ?, 0, ?, ?, ?, 1)",
                (TAG, t0, samples + 1, t0 + samples + 1))
            tx = cur.lastrowid
            outbox.produce("StartTransaction", {"connectorId": 1, "idTag": TAG,
                                                "meterStart": 0, "timestamp": iso(t0)}, tx, t0)
            for i in range(1, samples + 1):
                outbox.produce("MeterValues", {"connectorId": 1, "meterValue": [
                    {"timestamp": iso(t0 + i), "sampledValue": sampled(i)}]}, tx, t0 + i)
            outbox.produce("StopTransaction", {"meterStop": samples + 1, "idTag": TAG,
                                               "timestamp": iso(t0 + samples + 1),
                                               "reason": "Local"}, tx, t0 + samples + 1)
    finally:
        store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Bundled:
    """LocalCsms behind the same small interface as RawCsms."""

    def __init__(self, port: int):
        from chargepoint.csms.server import LocalCsms

        self.csms = LocalCsms(host="127.0.0.1", port=port)
        self.url = f"ws://127.0.0.1:{port}/ocpp"

    def start(self):
        self.csms.start()
        return self

    def stop(self):
        self.csms.stop(graceful=False)

    def wait_for(self, action: str, timeout: float) -> float:
        return self.csms.wait_for(action, timeout=timeout).time

    def transaction_messages(self) -> list[tuple[float, str, str, dict]]:
        return [(r.time, r.action, r.unique_id, r.payload)
                for r in self.csms.records(TX_ACTIONS)]

    def transaction_id(self) -> int:
        return self.csms.records("StartTransaction")[0].reply["transactionId"]


class _Raw(RawCsms):
    def transaction_messages(self):
        return [r for r in self.received if r[1] in TX_ACTIONS]

    def transaction_id(self) -> int:
        return 1                                   # RawCsms numbers from 1


def check(messages: list, expected: int, tx_id: int) -> list[str]:
    problems = []
    if len(messages) != expected:
        problems.append(f"{len(messages)} transaction messages arrived, {expected} expected")
    uids = [m[2] for m in messages]
    if len(set(uids)) != len(uids):
        problems.append(f"{len(uids) - len(set(uids))} repeated unique ids")
    actions = [m[1] for m in messages]
    if actions[:1] != ["StartTransaction"] or actions[-1:] != ["StopTransaction"] or \
            any(a != "MeterValues" for a in actions[1:-1]):
        problems.append("not StartTransaction, MeterValues..., StopTransaction")
    energies = []
    for _, action, _, payload in messages[1:-1]:
        energies.append(int(payload["meterValue"][0]["sampledValue"][0]["value"]))
        if payload.get("transactionId") != tx_id:
            problems.append(f"MeterValues with transactionId {payload.get('transactionId')}")
            break
    if energies != list(range(1, len(energies) + 1)):
        problems.append("MeterValues out of order or missing")
    if messages and messages[-1][3].get("transactionId") != tx_id:
        problems.append("StopTransaction without the transactionId")
    return problems


def queued(db: Path) -> tuple[int, int]:
    """Rows in outbox and outbox_dead (read beside the running firmware: WAL allows it)."""
    con = sqlite3.connect(db, timeout=5)
    try:
        return tuple(con.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
                     for name in ("outbox", "outbox_dead"))
    finally:
        con.close()


def one_run(workdir: Path, messages: int, kind: str) -> dict:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ocpp"
    fw = FirmwareProcess(workdir, url, log_level="warning", reconnect_min_s=0.05,
                         reconnect_max_s=0.1)
    fill_queue(fw.db, messages)
    fw.start()
    csms = None
    try:
        fw.wait_sim(timeout=60)                 # up, queue loaded, trying to connect
        loaded_s = time.monotonic() - fw.started_at
        rss_loaded = proc_status(fw.pid)["VmRSS"]
        csms = (_Raw("127.0.0.1", port) if kind == "raw" else _Bundled(port)).start()
        up = time.monotonic()
        boot = csms.wait_for("BootNotification", timeout=30)
        first = csms.wait_for("StartTransaction", timeout=30)
        cpu0 = proc_cpu_s(fw.pid)
        last = csms.wait_for("StopTransaction", timeout=600)
        cpu1 = proc_cpu_s(fw.pid)
        # The StopTransaction's answer may still be on its way back: wait until the
        # firmware has recorded it (the row deleted) before stopping it.
        deadline = time.monotonic() + 10
        while queued(fw.db)[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        hwm = proc_status(fw.pid)["VmHWM"]
        code = fw.stop()
        if code != 0:
            raise RuntimeError(f"the firmware exited with {code}:\n" + fw.tail())
        got = csms.transaction_messages()
        problems = check(got, messages, csms.transaction_id())
    finally:
        fw.kill()
        if csms is not None:
            csms.stop()
    left, dead = queued(fw.db)
    if left or dead:
        problems.append(f"{left} message(s) left in outbox, {dead} in outbox_dead")
    return {"csms": kind, "messages": messages, "seconds": last - first,
            "per_s": (messages - 1) / (last - first), "reconnect_to_boot_s": boot - up,
            "cpu_us_per_message": (cpu1 - cpu0) / (messages - 1) * 1e6,
            "boot_to_last_s": last - boot, "start_with_queue_s": loaded_s,
            "rss_kib_loaded": rss_loaded, "hwm_kib": hwm, "problems": problems}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3, help="runs per CSMS")
    parser.add_argument("--csms", choices=("raw", "bundled", "both"), default="both")
    parser.add_argument("--backlog", type=int, default=200_000,
                        help="messages queued for the memory run (0: no such run)")
    parser.add_argument("--quick", action="store_true",
                        help="1 run of 300 and a backlog of 3,000 (smoke test)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--dir", help="where the database goes (default: $TMPDIR)")
    args = parser.parse_args(argv)
    messages, runs = (300, 1) if args.quick else (args.messages, args.runs)
    backlog = min(args.backlog, 3000) if args.quick else args.backlog
    kinds = ("raw", "bundled") if args.csms == "both" else (args.csms,)
    if messages < 3:
        parser.error("--messages must be at least 3")
    if backlog and backlog < 3:
        parser.error("--backlog must be 0 or at least 3")

    results = {kind: [] for kind in kinds}
    big = None
    with Workdir("bench-drain-", base=args.dir) as root:
        for i in range(runs):
            for kind in kinds:
                results[kind].append(one_run(root / f"{kind}{i}", messages, kind))
        if backlog:
            big = one_run(root / "backlog", backlog, "raw")

    problems = [p for rs in results.values() for r in rs for p in r["problems"]]
    problems += big["problems"] if big else []
    out = {"machine": machine(), "messages": messages, "runs": runs, "results": results,
           "median_per_s": {k: median(r["per_s"] for r in rs) for k, rs in results.items()},
           "backlog": big, "ok": not problems, "target_per_s": TARGET_PER_S}
    print(f"### Draining {messages:,} queued transaction messages after a reconnect\n")
    print("\n".join(machine_lines()))
    print(f"- {runs} run(s) per CSMS, each a new process and database; medians over the runs")
    print(f"- order, completeness, transactionId and the empty outbox checked: "
          f"{'ok' if not problems else 'FAILED: ' + '; '.join(sorted(set(problems)))}\n")
    names = {"raw": "raw websockets server", "bundled": "bundled CSMS (LocalCsms)"}
    rows = []
    for kind, rs in results.items():
        rows.append((names[kind], fmt(median(r["per_s"] for r in rs), 0),
                     fmt(min(r["per_s"] for r in rs), 0), fmt(max(r["per_s"] for r in rs), 0),
                     fmt(median(r["seconds"] for r in rs), 2),
                     fmt(median(r["reconnect_to_boot_s"] for r in rs), 2),
                     fmt(median(r["cpu_us_per_message"] for r in rs), 0),
                     fmt(median(r["start_with_queue_s"] for r in rs), 2),
                     fmt(median(r["hwm_kib"] for r in rs) / 1024, 1)))
    print(table(("CSMS", "messages/s (median)", "min", "max", "drain s",
                 "CSMS up → BootNotification s", "firmware CPU µs per message",
                 "process start → ready s (queue loaded)", "VmHWM MiB"), rows))
    if "raw" in results:
        rate = out["median_per_s"]["raw"]
        print(f"\nTarget ≥ {TARGET_PER_S:,.0f} messages/s (firmware-bound, raw CSMS): "
              f"{fmt(rate, 0)}, {'met' if rate >= TARGET_PER_S else 'missed'}.")
    if big:
        print(f"\n#### Memory with a backlog of {backlog:,} messages (raw CSMS, 1 run)\n")
        print(table(("messages queued", "VmRSS MiB, up and offline (queue loaded)",
                     "VmHWM MiB after draining", "process start → ready s", "messages/s"),
                    [(f"{backlog:,}", fmt(big["rss_kib_loaded"] / 1024, 1),
                      fmt(big["hwm_kib"] / 1024, 1), fmt(big["start_with_queue_s"], 2),
                      fmt(big["per_s"], 0))]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
