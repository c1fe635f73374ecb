"""Hostile Central Systems against the real firmware: the loop keeps turning, memory stays
bounded, the contactor opens at once.

Why: the charger's safety must not depend on the CSMS behaving. A CSMS that floods CALLs
and stops reading, trickles a frame, sends a message of hundreds of megabytes or asks for
a schedule of ten thousand days must cost at most the link, never the loop that opens the
contactor when the EV leaves.

Each scenario runs a new `python -m chargepoint run` process (bench/_common.py
`FirmwareProcess`, simulated charger) against tests/hostile_csms.py `HostileCsms`, with an
EV charging on connector 1 (contactor closed). The hostile input starts, and in the middle
of it the EV is unplugged (the sim control socket). Reported, from the firmware's own
turn accounting (chargepoint/turns.py, read from the sim control socket's `status`):

- the loop's worst turn: the longest time from taking an event off its queue to having
  carried out its actions, over the whole run (the maximum, not a mean);
- the contactor-open latency after the unplug: from the hardware event being queued to
  `SetContactor(open)` carried out, queueing included;
- the process's peak RSS (VmHWM from /proc), beside its peak before the hostile input;
- what happened to the link (the firmware's log and the CSMS's connection log).

The scenarios: `flood` (GetConfiguration CALLs as fast as the socket takes them while the
CSMS reads nothing), `trickle` (one CALL written a byte every 2 s), `fragments` (one
200 MB message in 1 MB fragments), `large` (400 frames of 900 KB while the CSMS reads
nothing), `trigger` (TriggerMessage(StatusNotification) at 200/s for 10 s) and
`composite` (GetCompositeSchedule with duration 864,000,000 s over 16 recurring
profiles, the most ChargingScheduleMaxPeriods and MaxChargingProfilesInstalled allow).

    .venv/bin/python bench/hostile.py                    # every scenario at full size
    .venv/bin/python bench/hostile.py --only flood trickle
    .venv/bin/python bench/hostile.py --quick            # reduced sizes: a smoke test

Prints Markdown; `--json FILE` also writes the figures.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import (TAG, FirmwareProcess, Workdir, fmt, machine,  # noqa: E402
                           machine_lines, proc_status, table)
from tests.hostile_csms import HostileCsms  # noqa: E402


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# ------------------------------------------------------------------------------ the rig
class Rig:
    """A hostile CSMS and one firmware process with an EV charging on connector 1."""

    def __init__(self, workdir: Path, csms: Optional[dict] = None, ocpp: Optional[dict] = None,
                 log: Optional[dict] = None, reconnect_min_s: float = 0.05,
                 reconnect_max_s: float = 0.2):
        self.csms = HostileCsms().start()
        self.fw = FirmwareProcess(workdir, self.csms.url, ocpp=ocpp, csms=csms, log=log,
                                  reconnect_min_s=reconnect_min_s,
                                  reconnect_max_s=reconnect_max_s)

    def start(self, charging: bool = True) -> "Rig":
        self.fw.start()
        self.fw.wait_sim()
        self.csms.wait_for("StatusNotification", lambda r: r.payload["connectorId"] == 1,
                           timeout=20)
        if charging:
            self.fw.sim("plug", "1")
            self.fw.sim("tap", TAG)
            if not wait_until(lambda: self.contactor() == "closed", 20):
                raise RuntimeError("the EV never started charging:\n" + self.fw.tail())
        return self

    def close(self) -> None:
        try:
            self.fw.stop()
        finally:
            self.csms.stop()

    def __enter__(self) -> "Rig":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def status(self) -> dict:
        return self.fw.sim("status")

    def loop(self) -> dict:
        """The firmware's turn accounting (chargepoint/turns.py)."""
        return self.status()["loop"]

    def contactor(self) -> str:
        return self.status()["connectors"]["1"]["contactor"]

    def unplug(self, timeout: float = 30.0) -> Optional[float]:
        """Unplug the EV and wait for the contactor to open; the firmware's measured
        latency in ms (None: not open within `timeout`)."""
        before = self.loop()["contactor_opens"]
        self.fw.sim("unplug", "1")
        if not wait_until(lambda: self.contactor() == "open"
                          and self.loop()["contactor_opens"] > before, timeout):
            return None
        return self.loop()["last_contactor_open_ms"]

    def peak_rss_mib(self) -> float:
        return proc_status(self.fw.pid)["VmHWM"] / 1024

    def disconnects(self) -> list[str]:
        """Why the firmware lost the link, each time, from its log."""
        text = self.fw.log.read_text(errors="replace")
        return re.findall(r"disconnected from the CSMS: (.*)", text)


# ------------------------------------------------------------------------------ scenarios
@dataclass
class Outcome:
    scenario: str
    worst_turn_ms: float = 0.0
    contactor_open_ms: Optional[float] = None
    rss_before_mib: float = 0.0
    peak_rss_mib: float = 0.0
    link: str = ""
    seconds: float = 0.0
    problems: list = field(default_factory=list)


def _link_outcome(rig: Rig, op_started: float, timeout: float) -> str:
    """How the link ended (if it did) and came back, from both sides' logs."""
    try:
        closed = rig.csms.wait_closed(1, timeout)
    except TimeoutError:
        return "kept"                               # (wait_closed(1, ...): the first one)
    text = f"dropped after {closed.closed - op_started:.1f} s"
    reasons = wait_until(rig.disconnects, 5)
    if reasons:
        text += f" ({reasons[0]})"
    try:
        again = rig.csms.wait_connected(2, 30)
        text += f", back {again.opened - closed.closed:.2f} s later"
    except TimeoutError:
        text += ", not back within 30 s"
    return text


def flood(rig: Rig, quick: bool) -> tuple[Optional[float], str]:
    op = rig.csms.flood("GetConfiguration", {}, stop_reading=True)
    wait_until(lambda: op.sent >= 200 or op.done.is_set(), 10)
    opened = rig.unplug()
    link = _link_outcome(rig, op.started, 60)
    return opened, f"{op.sent:,} CALLs sent; link {link}"


def trickle(rig: Rig, quick: bool) -> tuple[Optional[float], str]:
    op = rig.csms.trickle(interval_s=2.0)
    wait_until(lambda: op.sent_bytes >= 1, 5)
    opened = rig.unplug()
    link = _link_outcome(rig, op.started, 120)
    return opened, f"{op.sent_bytes} bytes trickled; link {link}"


def fragments(rig: Rig, quick: bool) -> tuple[Optional[float], str]:
    op = rig.csms.send_fragmented(200 * 10 ** 6, 10 ** 6)
    wait_until(lambda: op.sent >= 1 or op.done.is_set(), 10)
    opened = rig.unplug()
    link = _link_outcome(rig, op.started, 60)
    return opened, f"{op.sent_bytes / 1e6:,.0f} MB of 200 MB sent; link {link}"


def large(rig: Rig, quick: bool) -> tuple[Optional[float], str]:
    count = 40 if quick else 400
    op = rig.csms.send_large_frames(count, 900_000, stop_reading=True)
    wait_until(lambda: op.sent >= count // 2 or op.done.is_set(), 60)
    opened = rig.unplug()
    op.wait(300)
    link = _link_outcome(rig, op.started, 1)
    return opened, f"{op.sent} of {count} frames of 900 KB sent; link {link}"


def trigger(rig: Rig, quick: bool) -> tuple[Optional[float], str]:
    seconds = 2 if quick else 10
    after = time.monotonic()
    op = rig.csms.flood("TriggerMessage", {"requestedMessage": "StatusNotification",
                                           "connectorId": 1}, rate=200, count=200 * seconds)
    wait_until(lambda: op.sent >= 100 * seconds or op.done.is_set(), 2 * seconds + 10)
    opened = rig.unplug()
    op.wait(2 * seconds + 30)
    time.sleep(1.0)                       # let the triggered StatusNotifications arrive
    got = sum(1 for r in rig.csms.received if r.action == "StatusNotification"
              and r.time > after)
    link = _link_outcome(rig, op.started, 1)
    return opened, (f"{op.sent:,} TriggerMessage in {op.ended - op.started:.1f} s; "
                    f"{got:,} StatusNotification at the CSMS 1 s later; link {link}")


def recurring_profile(profile_id: int, level: int, purpose: str) -> dict:
    """A daily profile of 24 hourly periods (ChargingScheduleMaxPeriods)."""
    return {"chargingProfileId": profile_id, "stackLevel": level,
            "chargingProfilePurpose": purpose, "chargingProfileKind": "Recurring",
            "recurrencyKind": "Daily",
            "chargingSchedule": {"chargingRateUnit": "A",
                                 "startSchedule": "2026-01-01T00:00:00Z",
                                 "chargingSchedulePeriod": [
                                     {"startPeriod": h * 3600, "limit": 6 + (h + level) % 20}
                                     for h in range(24)]}}


def composite(rig: Rig, quick: bool) -> tuple[Optional[float], str]:
    profiles, duration = (2, 86_400_000) if quick else (16, 864_000_000)
    for i in range(profiles):
        purpose = "ChargePointMaxProfile" if i % 2 == 0 else "TxDefaultProfile"
        answer = rig.csms.call("SetChargingProfile", {
            "connectorId": 0, "csChargingProfiles": recurring_profile(i + 1, i // 2, purpose)})
        if answer[:1] != [3] or answer[2].get("status") != "Accepted":
            raise RuntimeError(f"SetChargingProfile {i + 1} refused: {answer}")
    answers = len(rig.csms.answers)
    op = rig.csms.flood("GetCompositeSchedule", {"connectorId": 1, "duration": duration},
                        count=1)
    op.wait(10)
    time.sleep(0.3)                        # the request is in the loop by now
    opened = rig.unplug(timeout=600)
    wait_until(lambda: len(rig.csms.answers) > answers
               or rig.csms.connections[0].closed is not None, 600)
    answered = len(rig.csms.answers) > answers
    took = rig.csms.answers[answers].time - op.started if answered else None
    link = _link_outcome(rig, op.started, 1)
    return opened, (f"{profiles} profiles, duration {duration:,} s; "
                    + (f"answered after {took:.1f} s" if answered else "not answered")
                    + f"; link {link}")


SCENARIOS: dict[str, tuple[str, Callable[[Rig, bool], tuple[Optional[float], str]]]] = {
    "flood": ("GetConfiguration flood, CSMS not reading", flood),
    "trickle": ("a CALL trickled a byte every 2 s", trickle),
    "fragments": ("one 200 MB message in 1 MB fragments", fragments),
    "large": ("900 KB frames, CSMS not reading", large),
    "trigger": ("TriggerMessage(StatusNotification) at 200/s", trigger),
    "composite": ("GetCompositeSchedule, 864,000,000 s over 16 recurring profiles", composite),
}

#: The firmware's settings for the runs: the shipped defaults, but a trickle is given up
#: after 3 s in the quick run (30 s by default).
QUICK_CSMS = {"frame_timeout_s": 3}


def run(name: str, workdir: Path, quick: bool) -> Outcome:
    outcome = Outcome(name)
    _, scenario = SCENARIOS[name]
    rig = Rig(workdir / name, csms=QUICK_CSMS if quick else None)
    started = time.monotonic()
    try:
        rig.start()
        outcome.rss_before_mib = rig.peak_rss_mib()
        outcome.contactor_open_ms, outcome.link = scenario(rig, quick)
        loop = rig.loop()
        outcome.worst_turn_ms = loop["worst_turn_ms"]
        outcome.peak_rss_mib = rig.peak_rss_mib()
        if outcome.contactor_open_ms is None:
            outcome.problems.append("the contactor did not open after the unplug")
        if rig.fw.proc.poll() is not None:
            outcome.problems.append(f"the firmware died:\n{rig.fw.tail()}")
    except Exception as exc:  # noqa: BLE001 - reported, and the next scenario runs
        outcome.problems.append(f"{type(exc).__name__}: {exc}\n{rig.fw.tail()}")
    finally:
        outcome.seconds = time.monotonic() - started
        rig.close()
    return outcome


def _ms(value: Optional[float]) -> str:
    return "not opened" if value is None else fmt(value, 1)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), help="these scenarios")
    parser.add_argument("--quick", action="store_true",
                        help="reduced sizes (40 large frames, 2 s of triggers, 2 profiles "
                             "for 1,000 days, a trickle given up after 3 s): a smoke test")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--dir", help="work directory (default: a new one in $TMPDIR)")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    with Workdir("bench-hostile-", base=args.dir) as root:
        outcomes = [run(name, root, args.quick) for name in names]
    problems = [f"{o.scenario}: {p}" for o in outcomes for p in o.problems]
    print(f"### Hostile Central Systems{' (quick)' if args.quick else ''}\n")
    print("\n".join(machine_lines()))
    print(f"- command: `.venv/bin/python bench/hostile.py{' --quick' if args.quick else ''}`; "
          f"each scenario a new firmware process, an EV charging, unplugged mid-way")
    print("- settings as shipped (send_timeout_s 20, frame_timeout_s "
          f"{QUICK_CSMS['frame_timeout_s'] if args.quick else 30}, max_frame_bytes 262144)\n")
    rows = [(SCENARIOS[o.scenario][0], fmt(o.worst_turn_ms, 1), _ms(o.contactor_open_ms),
             f"{fmt(o.rss_before_mib, 1)} → {fmt(o.peak_rss_mib, 1)}", o.link)
            for o in outcomes]
    print(table(("hostile input", "worst loop turn ms", "unplug → contactor open ms",
                 "peak RSS MiB (before → after)", "what happened"), rows))
    for problem in problems:
        print(f"\n  PROBLEM {problem}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine(), "quick": args.quick,
             "scenarios": {o.scenario: asdict(o) for o in outcomes}, "ok": not problems},
            indent=1))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
