"""Link torture: the Central System dropped and restarted every few seconds while the real
firmware runs charging sessions on several connectors.

    .venv/bin/python bench/torture_link.py                    # 1,000 sessions, 4 connectors
    .venv/bin/python bench/torture_link.py --sessions 40 --seed 7
    .venv/bin/python bench/torture_link.py --quick              # 6 sessions, 5 drops

The firmware (`python -m chargepoint run`, simulated hardware, tests/crash_driver.py
`Charger` with 4 connectors, MeterValueSampleInterval = 1) is driven through short
sessions on every connector at once: plug, tap the connector's own card, charge for 1.5
to 3.5 s, then unplug, or tap and unplug. Starts go one connector at a time (a tap starts
on whichever connector waits with an EV), stops whenever they are due.

Meanwhile the bundled CSMS (chargepoint/csms/server.py `LocalCsms`, logging every frame
to a JSON-lines file) stays up for a random 1 to 5 s, then is either stopped as in a crash
(`stop(graceful=False)`: every connection aborted, the port closed) and started again on
the same port after up to 1 s, or has the charger's connection aborted while it keeps
listening. Every second the CSMS also sends a GetConfiguration to the charger.

Afterwards the queue is left to drain, the firmware stopped with SIGTERM, and the CSMS's
log judged as tests/crash_driver.py judges a crash test (`check_connectors`): no
transaction message lost, none reordered (per connector: Start, MeterValues..., Stop,
each with the transactionId the CSMS gave), a repeat only of the message in flight at a
drop (the first transaction message on the new connection, and at most one per drop),
the energy of every connector's meter billed. Also reported: the process never died, a
session the driver saw is a transaction the CSMS heard of, the largest gap between two
MeterValues of a transaction (1 s sampling: a lost one would leave 2 s), and the CSMS's
CALLs left unanswered while the link stayed up (0).

A session takes about 2.8 s of a connector's time; with 4 connectors 1,000 sessions take
about 12 minutes (the script prints its estimate).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import table, torture_report  # noqa: E402
from chargepoint.csms.server import LocalCsms, read_log  # noqa: E402
from tests.crash_driver import (INITIAL_WH, Charger, check_connectors,  # noqa: E402
                                problem_kinds, wait_until)

CP_ID = "CP-LINK"
#: Seconds of a connector's time per session, for the estimate (measured: start, 1.5 to
#: 3.5 s of charging, stop, waiting for the other connectors' starts).
SESSION_S = 2.8


def tag(connector_id: int) -> str:
    return f"LINK{connector_id:02d}"


# ------------------------------------------------------------------------------ the CSMS
class Dropper(threading.Thread):
    """Takes the CSMS's link away every `up_min`..`up_max` seconds."""

    def __init__(self, csms: LocalCsms, rng: random.Random, up_min: float = 1.0,
                 up_max: float = 5.0, down_max: float = 1.0):
        super().__init__(name="dropper", daemon=True)
        self.csms, self.rng = csms, rng
        self.up_min, self.up_max, self.down_max = up_min, up_max, down_max
        self.halt = threading.Event()
        self.lock = threading.Lock()
        #: (start, end) time.monotonic() of every drop: restarts and aborted connections.
        self.drops: list[tuple[float, float]] = []
        self.restarts = 0
        self.aborts = 0
        self.limit: Optional[int] = None

    def run(self) -> None:
        while not self.halt.wait(self.rng.uniform(self.up_min, self.up_max)):
            if self.limit is not None and len(self.drops) >= self.limit:
                return
            began = time.monotonic()
            if self.rng.random() < 0.5:
                self.csms.stop(graceful=False)
                time.sleep(self.rng.uniform(0.0, self.down_max))
                self.csms.start()
                self.restarts += 1
            else:
                if not self.csms.drop(CP_ID, graceful=False):
                    continue                      # not connected just now: nothing to drop
                self.aborts += 1
            with self.lock:
                self.drops.append((began, time.monotonic()))

    def stop(self) -> None:
        self.halt.set()
        if self.ident is not None:
            self.join(timeout=30)
        if not self.csms.running:
            self.csms.start()

    def dropped_between(self, start: float, end: float) -> bool:
        with self.lock:
            return any(a <= end and b >= start for a, b in self.drops)


class Prober(threading.Thread):
    """A GetConfiguration from the CSMS every second; counts those not answered although
    the link was not cut (`cut(start, end)`, time.monotonic()) while they waited."""

    def __init__(self, csms: LocalCsms, cut, cp_id: str = CP_ID, timeout: float = 5.0):
        super().__init__(name="prober", daemon=True)
        self.csms, self.cut_between, self.cp_id, self.timeout = csms, cut, cp_id, timeout
        self.halt = threading.Event()
        self.sent = self.answered = self.cut = 0
        self.unanswered: list[str] = []

    def run(self) -> None:
        while not self.halt.wait(1.0):
            if not self.csms.connected(self.cp_id):
                continue
            began = time.monotonic()
            self.sent += 1
            try:
                self.csms.call(self.cp_id, "GetConfiguration", {"key": ["HeartbeatInterval"]},
                               timeout=self.timeout)
                self.answered += 1
            except TimeoutError as exc:
                if self.cut_between(began, time.monotonic()):
                    self.cut += 1
                else:
                    self.unanswered.append(str(exc))
            except Exception:  # noqa: BLE001 - the link or the CSMS went away meanwhile
                self.cut += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)


# ------------------------------------------------------------------------------ the driver
@dataclass
class Plan:
    state: str = "idle"            # idle, starting, charging, stopping
    since: float = 0.0
    until: float = 0.0


@dataclass
class LinkResult:
    seed: int
    connectors: int
    sessions: int = 0
    seconds: float = 0.0
    episodes: dict = field(default_factory=dict)
    transactions: int = 0
    meter_values: int = 0
    duplicates: int = 0
    drops: int = 0
    restarts: int = 0
    aborts: int = 0
    kinds: dict = field(default_factory=dict)
    deaths: int = 0
    exit_code: Optional[int] = None
    start_timeouts: int = 0
    strays: int = 0
    probes: int = 0
    probes_answered: int = 0
    probes_cut: int = 0
    unanswered: list = field(default_factory=list)
    max_gap_s: float = 0.0
    gaps: int = 0
    summary: str = ""
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        k = self.kinds
        return (f"{self.sessions} sessions on {self.connectors} connectors in "
                f"{self.seconds:.0f} s; {self.drops} drops ({self.restarts} CSMS restarts, "
                f"{self.aborts} aborted connections); {self.transactions} transactions, "
                f"{self.meter_values} MeterValues; lost {k.get('lost', 0)}, reordered "
                f"{k.get('reordered', 0)}, duplicated {self.duplicates} (limit 1 per drop; "
                f"{k.get('duplicated', 0)} beyond it), other problems {k.get('other', 0)}; "
                f"process deaths {self.deaths}, exit code {self.exit_code}; largest gap "
                f"between MeterValues {self.max_gap_s:.2f} s ({self.gaps} over 2.5 s); "
                f"CSMS CALLs {self.probes}: {self.probes_answered} answered, "
                f"{self.probes_cut} cut by a drop, {len(self.unanswered)} unanswered")


def _meter_gaps(transactions) -> tuple[float, int]:
    """The largest gap between consecutive sampled readings of a transaction, and how
    many gaps exceed 2.5 s (1 s sampling)."""
    largest, over = 0.0, 0
    for tx in transactions:
        stamps = [datetime.fromisoformat(v["timestamp"].replace("Z", "+00:00")).timestamp()
                  for mv in tx.meter_values for v in mv["meterValue"]]
        for a, b in zip(stamps, stamps[1:]):
            largest = max(largest, b - a)
            over += b - a > 2.5
    return largest, over


def torture(sessions: int, seed: int, workdir: Path, connectors: int = 4,
            up_min: float = 1.0, up_max: float = 5.0, down_max: float = 1.0,
            max_drops: Optional[int] = None, min_drops: int = 0,
            progress=None) -> LinkResult:
    """Drive `sessions` sessions (more until `min_drops` drops have happened, at most
    `max_drops` drops) while the link is dropped; the judged result."""
    progress = progress or (lambda text: None)
    rng = random.Random(seed)
    res = LinkResult(seed, connectors)
    log_path = workdir / "csms.jsonl"
    csms = LocalCsms(host="127.0.0.1", port=0, log_path=str(log_path))
    csms.start()
    charger = Charger(workdir, csms.url, connectors=connectors, cp_id=CP_ID)
    dropper = Dropper(csms, random.Random(rng.random()), up_min, up_max, down_max)
    dropper.limit = max_drops
    prober = Prober(csms, dropper.dropped_between)
    ids = list(range(1, connectors + 1))
    plans = {c: Plan() for c in ids}
    episodes = {c: 0 for c in ids}
    started = time.monotonic()
    last_report = started
    try:
        charger.spawn()
        if not wait_until(lambda: csms.connected(CP_ID), 20):
            raise RuntimeError("the firmware never connected:\n" + charger.tail())
        prober.start()
        done = 0

        def wanted() -> bool:                     # another session to start?
            return done + _busy(plans) < sessions or len(dropper.drops) < min_drops

        while wanted() or any(p.state != "idle" for p in plans.values()):
            if charger.proc.poll() is not None:
                res.deaths += 1
                res.problems.append(f"the firmware died (exit code "
                                    f"{charger.proc.returncode}):\n{charger.tail()}")
                charger.spawn()
            status = charger.sim("status")
            now = time.monotonic()
            if status is None:
                time.sleep(0.05)
                continue
            conns = status["connectors"]
            starting = any(p.state == "starting" for p in plans.values())
            for c in ids:
                plan, conn = plans[c], conns[str(c)]
                charging = conn["offered_a"] is not None
                if plan.state == "idle":
                    if charging:
                        res.strays += 1           # a start the driver did not ask for
                        charger.sim("unplug", str(c))
                    elif not starting and wanted():
                        if not conn["plugged"]:
                            charger.sim("plug", str(c))
                        charger.sim("tap", tag(c))
                        plan.state, plan.since, starting = "starting", now, True
                elif plan.state == "starting":
                    if charging:
                        plan.state, plan.until = "charging", now + rng.uniform(1.5, 3.5)
                        episodes[c] += 1
                        if dropper.ident is None and all(episodes.values()):
                            dropper.start()       # every card is in the cache by now
                    elif now - plan.since > 12:
                        res.start_timeouts += 1   # never started: give up this one
                        charger.sim("unplug", str(c))
                        plan.state, plan.since = "stopping", now
                elif plan.state == "charging":
                    if now >= plan.until:
                        if not starting and rng.random() < 0.5:
                            charger.sim("tap", tag(c))
                        charger.sim("unplug", str(c))
                        plan.state, plan.since = "stopping", now
                elif plan.state == "stopping":
                    if not charging and not conn["plugged"]:
                        plan.state = "idle"
                        done += 1
                    elif now - plan.since > 10:
                        charger.sim("unplug", str(c))
                        plan.since = now
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                elapsed = last_report - started
                progress(f"  {done} sessions in {elapsed:.0f} s, {len(dropper.drops)} drops, "
                         f"about {(sessions - done) * elapsed / max(done, 1):.0f} s to go")
            time.sleep(0.04)
        res.sessions = done
        res.seconds = time.monotonic() - started
        prober.stop()
        dropper.stop()
        empty = {"outbox": 0, "transactions": 0, "outbox_dead": 0}
        if not wait_until(lambda: charger.db_counts() == empty, 60):
            res.problems.append(f"the queue did not drain: {charger.db_counts()}")
        res.exit_code, _ = charger.terminate()
        if res.exit_code != 0:
            res.problems.append(f"SIGTERM: exit code {res.exit_code}\n{charger.tail()}")
    finally:
        prober.halt.set()
        dropper.halt.set()
        charger.abort()
        csms.stop(graceful=False)

    res.drops, res.restarts, res.aborts = len(dropper.drops), dropper.restarts, dropper.aborts
    res.probes, res.probes_answered = prober.sent, prober.answered
    res.probes_cut, res.unanswered = prober.cut, prober.unanswered
    res.episodes = episodes
    report = check_connectors(read_log(str(log_path)), res.drops,
                              {c: INITIAL_WH for c in ids},
                              {c: charger.register(c) for c in ids}, episodes)
    res.summary = report.summary
    res.transactions = len(report.transactions)
    res.meter_values = sum(len(t.meter_values) for t in report.transactions)
    res.duplicates = report.duplicates
    res.kinds = problem_kinds(report.problems)
    res.problems += report.problems
    res.max_gap_s, res.gaps = _meter_gaps(report.transactions)
    if res.gaps:
        res.problems.append(f"{res.gaps} gaps over 2.5 s between the MeterValues of a "
                            f"transaction (sampling every 1 s): a lost sample?")
    if res.unanswered:
        res.problems.append(f"{len(res.unanswered)} CSMS CALLs unanswered while the link "
                            f"stayed up: {res.unanswered[:3]}")
    if res.strays:
        res.problems.append(f"{res.strays} transactions started where the driver did not "
                            f"start one")
    if sum(episodes.values()) != res.transactions:
        res.problems.append(f"the driver saw {sum(episodes.values())} sessions charge, the "
                            f"CSMS heard of {res.transactions} transactions")
    return res


def _busy(plans: dict[int, Plan]) -> int:
    return sum(p.state != "idle" for p in plans.values())


def rows(res: LinkResult) -> list[tuple[str, str]]:
    k = res.kinds
    return [
        ("charging sessions", f"{res.sessions:,} on {res.connectors} connectors in "
                              f"{res.seconds:,.0f} s"),
        ("link drops", f"{res.drops:,} ({res.restarts:,} CSMS restarts, {res.aborts:,} "
                       f"connections aborted)"),
        ("transactions / MeterValues at the CSMS", f"{res.transactions:,} / "
                                                   f"{res.meter_values:,}"),
        ("transaction messages lost", f"{k.get('lost', 0)}"),
        ("… reordered", f"{k.get('reordered', 0)}"),
        ("… repeated (at most 1 per drop, in flight at it)",
         f"{res.duplicates} ({k.get('duplicated', 0)} not so)"),
        ("other problems (transaction ids, energy)", f"{k.get('other', 0)}"),
        ("largest gap between two MeterValues (1 s sampling)", f"{res.max_gap_s:.2f} s"),
        ("process deaths", f"{res.deaths} (SIGTERM at the end: exit code {res.exit_code})"),
        ("CSMS CALLs: answered / cut by a drop / unanswered",
         f"{res.probes_answered:,} / {res.probes_cut:,} / {len(res.unanswered)}"),
    ]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--connectors", type=int, default=4, choices=range(1, 9))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="6 sessions on 2 connectors, 5 drops (a smoke test)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--dir", help="work directory (default: a new one in $TMPDIR, "
                                      "removed unless something failed)")
    args = parser.parse_args(argv)
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="torture-link-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        sessions, connectors = 6, 2
        options = dict(up_min=0.4, up_max=1.2, down_max=0.3, max_drops=5, min_drops=5)
    else:
        sessions, connectors, options = args.sessions, args.connectors, {}
    estimate = sessions * SESSION_S / connectors
    print(f"torture_link: {sessions:,} sessions on {connectors} connectors, seed "
          f"{args.seed}, about {estimate / 60:.0f} min; work directory {workdir}", flush=True)
    res = torture(sessions, args.seed, workdir, connectors,
                  progress=lambda text: print(text, flush=True), **options)
    command = (f".venv/bin/python bench/torture_link.py --sessions {sessions} "
               f"--connectors {connectors} --seed {args.seed}")
    body = table(("", "result"), rows(res)) + f"\n\n{res.summary}"
    return torture_report(res, "Link drops", command, body, args.json, workdir,
                          bool(args.dir), vars(res))


if __name__ == "__main__":
    sys.exit(main())
