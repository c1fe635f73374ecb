"""Kill torture: the real firmware SIGKILLed at random instants, again and again, over
hundreds of charging sessions.

    .venv/bin/python bench/torture_kill.py                    # 500 sessions, seed 1
    .venv/bin/python bench/torture_kill.py --sessions 50 --seed 7
    .venv/bin/python bench/torture_kill.py --quick              # 5 sessions

The machinery is tests/crash_driver.py's, as tests/test_crash.py uses it: `Charger` runs
`python -m chargepoint run` on simulated hardware whose meter register survives the
process, `drive` plays a driver (plug, tap, charge 0.3 to 3 s, tap or unplug), `Sniper`
kills a few milliseconds after the CSMS receives the n-th transaction message, `check`
judges the bundled CSMS's own log. Each run of the firmware lives for a random time and
is then killed:

- 15 %: during start-up (recovery, the queued backlog going out), within 0.5 s;
- 20 %: 0 to 15 ms after the CSMS received transaction message 1, 2 or 3 of the run,
  when a message is in flight, answered but not recorded, or just recorded;
- 65 %: at a random instant 0.5 to 8 s in, a sixth of them within 40 ms of a tap or an
  unplug (in the commit and send of a Start or Stop).

Runs follow until the driver has seen the requested number of sessions charge; then a
run stopped by SIGTERM while charging (Reboot) and one that only drains the queue. The
CSMS sends a GetConfiguration every second. Reported: transaction messages lost,
reordered, repeated (at most one per kill or stop), the energy billed against what the
meter counted, the process dying by itself, CSMS CALLs unanswered while the firmware was
not being killed.

About 2 s per session: 500 sessions take about 17 minutes (the script prints its
estimate).
"""
from __future__ import annotations

import argparse
import bisect
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import table, torture_report  # noqa: E402
from bench.torture_link import Prober  # noqa: E402
from chargepoint.csms.server import LocalCsms, read_log  # noqa: E402
from tests.crash_driver import (INITIAL_WH, Charger, CleanStop, Kill, Sniper,  # noqa: E402
                                check, drive, problem_kinds, wait_until)

CP_ID = "CP-CRASH"
#: Seconds per session, for the estimate.
SESSION_S = 2.0


@dataclass
class KillResult:
    seed: int
    sessions: int = 0
    kills: int = 0
    sniped: int = 0
    startup_kills: int = 0
    seconds: float = 0.0
    transactions: int = 0
    power_losses: int = 0
    meter_values: int = 0
    duplicates: int = 0
    kinds: dict = field(default_factory=dict)
    deaths: int = 0
    charged_wh: float = 0.0
    probes: int = 0
    probes_answered: int = 0
    probes_cut: int = 0
    unanswered: list = field(default_factory=list)
    summary: str = ""
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        k = self.kinds
        return (f"{self.sessions} sessions, {self.kills} SIGKILLs ({self.startup_kills} during "
                f"start-up, {self.sniped} just after a transaction message) in "
                f"{self.seconds:.0f} s; {self.transactions} transactions ({self.power_losses} "
                f"stopped PowerLoss), {self.meter_values} MeterValues; lost "
                f"{k.get('lost', 0)}, reordered {k.get('reordered', 0)}, duplicated "
                f"{self.duplicates} (limit 1 per kill; {k.get('duplicated', 0)} beyond it), "
                f"other problems {k.get('other', 0)}; process deaths {self.deaths}; "
                f"{self.charged_wh:.0f} Wh charged and all accounted for; CSMS CALLs "
                f"{self.probes}: {self.probes_answered} answered, {self.probes_cut} cut by a "
                f"kill, {len(self.unanswered)} unanswered")


def torture(sessions: int, seed: int, workdir: Path, progress=None) -> KillResult:
    progress = progress or (lambda text: None)
    rng = random.Random(seed)
    res = KillResult(seed)
    log_path = workdir / "csms.jsonl"
    csms = LocalCsms(host="127.0.0.1", port=0, log_path=str(log_path))
    csms.start()
    charger = Charger(workdir, csms.url, cp_id=CP_ID)
    sniper = Sniper(charger, csms)
    kills: list[Kill] = []
    stops: list[CleanStop] = []
    #: time.monotonic() of each kill, for the prober: a CALL cut by a kill is no failure.
    killed_at: list[float] = []
    lock = threading.Lock()

    def cut(start: float, end: float) -> bool:
        with lock:
            i = bisect.bisect_left(killed_at, start)
            return i < len(killed_at) and killed_at[i] <= end + 0.5

    prober = Prober(csms, cut, cp_id=CP_ID)
    episodes = 0
    started = last_report = time.monotonic()
    try:
        prober.start()
        number = 0
        while episodes < sessions:
            number += 1
            charger.spawn()
            mode, snipe, note = rng.random(), 0.0, ""
            if mode < 0.15:
                life = rng.uniform(0.0, 0.5)
                res.startup_kills += 1
            elif mode < 0.35:
                nth = rng.choice((1, 2, 2, 3))
                delay = rng.uniform(0.0, 0.002 if rng.random() < 0.5 else 0.015)
                sniper.arm(nth, delay)
                life = 6.0
                note = f", {delay * 1000:.1f} ms after transaction message {nth}"
            else:
                life, snipe = rng.uniform(0.5, 8.0), 0.15
            result = drive(charger, rng, time.monotonic() + life, snipe=snipe)
            sniper.disarm()
            sniped = charger.killed_at is not None
            res.sniped += sniped
            episodes += len(result.episodes)
            kill = charger.kill(number, result.phase + (note if sniped else ""))
            with lock:
                killed_at.append(time.monotonic())
            kills.append(kill)
            if charger.proc.returncode != -signal.SIGKILL:
                res.deaths += 1
                res.problems.append(f"run {number} ended by itself (exit code "
                                    f"{charger.proc.returncode}) before the kill:\n"
                                    f"{charger.tail()}")
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                elapsed = last_report - started
                progress(f"  {episodes} sessions, {number} kills in {elapsed:.0f} s, about "
                         f"{(sessions - episodes) * elapsed / max(episodes, 1):.0f} s to go")

        # The final clean runs, as in tests/test_crash.py: a session stopped by SIGTERM
        # (Reboot), then a run that only delivers what is still queued.
        charger.spawn()
        result = drive(charger, rng, time.monotonic() + 30, hold=1.5)
        episodes += len(result.episodes)
        if result.phase != "charging":
            res.problems.append(f"no session in the final run ({result.phase}):\n"
                                f"{charger.tail()}")
        code, stop = charger.terminate()
        stops.append(stop)
        if code != 0:
            res.problems.append(f"SIGTERM while charging: exit code {code}\n{charger.tail()}")
        mark = len(csms.received)
        charger.spawn()
        # Up before it is judged: the clean stop above may have delivered everything.
        try:
            csms.wait_for("BootNotification", timeout=60, after=mark)
        except TimeoutError:
            res.problems.append(f"the last run did not boot:\n{charger.tail()}")
        empty = {"outbox": 0, "transactions": 0, "outbox_dead": 0}
        if not wait_until(lambda: charger.db_counts() == empty, 60):
            res.problems.append(f"not drained: {charger.db_counts()}")
        code, stop = charger.terminate()
        stops.append(stop)
        if code != 0:
            res.problems.append(f"SIGTERM: exit code {code}\n{charger.tail()}")
        res.seconds = time.monotonic() - started
    finally:
        prober.stop()
        charger.abort()
        csms.stop(graceful=False)

    res.sessions, res.kills = episodes, len(kills)
    res.probes, res.probes_answered = prober.sent, prober.answered
    res.probes_cut, res.unanswered = prober.cut, prober.unanswered
    report = check(read_log(str(log_path)), kills, stops, INITIAL_WH, stops[-1].register_wh,
                   episodes)
    res.summary = report.summary
    res.transactions = len(report.transactions)
    res.power_losses = sum(t.stop is not None and t.stop.get("reason") == "PowerLoss"
                           for t in report.transactions)
    res.meter_values = sum(len(t.meter_values) for t in report.transactions)
    res.duplicates = report.duplicates
    res.charged_wh = stops[-1].register_wh - INITIAL_WH
    res.kinds = problem_kinds(report.problems)
    res.problems += report.problems
    if csms.violations.snapshot():
        res.problems.append(f"messages that break OCPP 1.6: {csms.violations.snapshot()[:3]}")
    if res.unanswered:
        res.problems.append(f"{len(res.unanswered)} CSMS CALLs unanswered while the firmware "
                            f"ran: {res.unanswered[:3]}")
    return res


def rows(res: KillResult) -> list[tuple[str, str]]:
    k = res.kinds
    return [
        ("charging sessions", f"{res.sessions:,} in {res.seconds:,.0f} s"),
        ("SIGKILLs", f"{res.kills:,} ({res.startup_kills} during start-up, {res.sniped} "
                     f"just after a transaction message)"),
        ("transactions / MeterValues at the CSMS",
         f"{res.transactions:,} ({res.power_losses:,} stopped PowerLoss) / "
         f"{res.meter_values:,}"),
        ("transaction messages lost", f"{k.get('lost', 0)}"),
        ("… reordered", f"{k.get('reordered', 0)}"),
        ("… repeated (at most 1 per kill, in flight at it)",
         f"{res.duplicates} ({k.get('duplicated', 0)} not so)"),
        ("other problems (transaction ids, energy)", f"{k.get('other', 0)}"),
        ("energy charged, billed or bounded after a kill", f"{res.charged_wh:,.0f} Wh"),
        ("process deaths (not by SIGKILL)", f"{res.deaths}"),
        ("CSMS CALLs: answered / cut by a kill / unanswered",
         f"{res.probes_answered:,} / {res.probes_cut:,} / {len(res.unanswered)}"),
    ]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="5 sessions (a smoke test)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--dir", help="work directory (default: a new one in $TMPDIR, "
                                      "removed unless something failed)")
    args = parser.parse_args(argv)
    sessions = 5 if args.quick else args.sessions
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="torture-kill-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"torture_kill: {sessions:,} sessions, seed {args.seed}, about "
          f"{sessions * SESSION_S / 60:.0f} min; work directory {workdir}", flush=True)
    res = torture(sessions, args.seed, workdir, progress=lambda text: print(text, flush=True))
    command = (f".venv/bin/python bench/torture_kill.py --sessions {sessions} --seed {args.seed}")
    body = table(("", "result"), rows(res)) + f"\n\n{res.summary}"
    return torture_report(res, "SIGKILL at random instants", command, body, args.json, workdir,
                          bool(args.dir), vars(res))


if __name__ == "__main__":
    sys.exit(main())
