"""Crash-test machinery: the real firmware as a process, killed and restarted at will,
and the checks that read the Central System's own log afterwards.

`Charger` runs `python -m chargepoint run` on simulated hardware whose meter keeps
its register in a file, so a restarted firmware continues where the killed one
stopped, as a real meter would. `drive` plays a driver at the charger through the
sim control socket until a deadline. `check` is pure: it takes the parsed CSMS log
and what the test recorded at each kill, and returns the problems it finds, so it
can be shown to fail on logs that lose, repeat or reorder a message.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

from hal.sim_control import send_command

ROOT = Path(__file__).resolve().parents[1]

TAG = "CRASH01"
SAMPLE_INTERVAL_S = 1
INITIAL_WH = 5000.0
MAX_CURRENT_A = 63.0
PHASES = 3
VOLTAGE_V = 230.0
#: The most the EV can draw: every bound on unbilled energy is this power times a time.
P_MAX_W = MAX_CURRENT_A * PHASES * VOLTAGE_V
#: Poll period of the firmware's meter poller (chargepoint/runtime.py).
POLL_S = 1.0
#: Clock differences between the test and the firmware's stamps (same machine, ms text).
CLOCK_SLACK_S = 0.05

TX_ACTIONS = ("StartTransaction", "MeterValues", "StopTransaction")
ENERGY = "Energy.Active.Import.Register"

CONFIG = """\
[csms]
url = "{url}"
charge_point_id = "{cp_id}"
reconnect_min_s = 0.05
reconnect_max_s = 0.2
response_timeout_s = 5

[storage]
path = "{db}"

[log]
level = "info"

[system]
sim_socket = "{sock}"

[ocpp]
MeterValueSampleInterval = {interval}
MeterValuesSampledData = "Energy.Active.Import.Register,Power.Active.Import"
WebSocketPingInterval = 0
{ocpp}
{connectors}
[[readers]]
type = "sim"
"""

#: One `[[connectors]]` block of CONFIG; its meter keeps its register in its own file.
CONNECTOR = """\
[[connectors]]
id = {id}
max_current_a = {amps}
phases = {phases}
nominal_voltage_v = {volts}
fixed_cable = true

[connectors.meter]
type = "sim"
initial_wh = {initial}
register_file = "{register}"

[connectors.contactor]
type = "sim"

[connectors.pilot]
type = "sim"
ev_max_current_a = {amps}
battery_wh = 500000
initial_soc = 10

"""


@dataclass
class Kill:
    """One SIGKILL: when (time.time()), the meter register it left, what the driver did."""

    number: int
    wall: float
    register_wh: float
    phase: str


@dataclass
class CleanStop:
    """One SIGTERM and the register after the process exited."""

    wall: float
    register_wh: float


class Charger:
    """One firmware process at a time, on a fixed configuration, database and meter files.

    `connectors` simulated connectors (each with its own meter register file) and
    `ocpp` keys besides CONFIG's serve benchmarks that drive several sessions at once.
    """

    def __init__(self, workdir: Path, csms_url: str, connectors: int = 1,
                 ocpp: Optional[dict] = None, cp_id: str = "CP-CRASH",
                 db: Optional[Path] = None):
        self.workdir = workdir
        self.cp_id = cp_id
        self.db = db if db is not None else workdir / "cp.db"
        self.sock = workdir / "sim.sock"
        self.register_file = workdir / "register"
        self.register_files = {cid: self.register_file if cid == 1
                               else workdir / f"register-{cid}"
                               for cid in range(1, connectors + 1)}
        self.config = workdir / "config.toml"
        blocks = "".join(CONNECTOR.format(
            id=cid, register=path, amps=MAX_CURRENT_A, phases=PHASES, volts=VOLTAGE_V,
            initial=INITIAL_WH) for cid, path in self.register_files.items())
        keys = "".join(f"{key} = {json.dumps(value)}\n" for key, value in (ocpp or {}).items())
        self.config.write_text(CONFIG.format(
            url=csms_url, cp_id=cp_id, db=self.db, sock=self.sock, interval=SAMPLE_INTERVAL_S,
            ocpp=keys, connectors=blocks))
        self.proc: Optional[subprocess.Popen] = None
        self.runs = 0
        #: When the running process was sent SIGKILL (None: not yet). Under the lock, so a
        #: sniper's timer can never kill the next process by mistake.
        self.killed_at: Optional[float] = None
        self._lock = threading.Lock()
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            self.env.pop(name, None)

    @property
    def log_file(self) -> Path:
        return self.workdir / f"run-{self.runs:03d}.log"

    def spawn(self, **popen) -> None:
        """Start the next run; `popen` (e.g. `user=`, `umask=`) goes to subprocess.Popen."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self._lock:
            self.runs += 1
            self.killed_at = None
            with open(self.log_file, "wb") as out:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "chargepoint", "run", "--config", str(self.config)],
                    cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, **popen)

    def kill_now(self, run: Optional[int] = None) -> None:
        """SIGKILL the process of run `run` (default: the current one) unless done already."""
        with self._lock:
            if self.killed_at is None and run in (None, self.runs):
                self.killed_at = time.time()
                self.proc.send_signal(signal.SIGKILL)

    def kill(self, number: int, phase: str) -> Kill:
        self.kill_now()
        self.proc.wait(timeout=10)
        return Kill(number, self.killed_at, self.register(), phase)

    def terminate(self, timeout: float = 20.0) -> tuple[int, CleanStop]:
        wall = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            code = -999
        return code, CleanStop(wall, self.register())

    def abort(self) -> None:
        """Teardown: make sure no firmware outlives the test."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def register(self, connector_id: int = 1) -> float:
        try:
            return float(self.register_files[connector_id].read_text().strip())
        except FileNotFoundError:
            return INITIAL_WH

    def sim(self, cmd: str, *args: str, timeout: float = 2.0) -> Optional[dict]:
        """The command's result, or None if the firmware is not (or no longer) answering."""
        try:
            reply = send_command(str(self.sock), cmd, list(args), timeout=timeout)
        except (OSError, ValueError):
            return None
        return reply.get("result") if reply.get("ok") else None

    def connector(self, connector_id: int = 1) -> Optional[dict]:
        status = self.sim("status")
        return None if status is None else status["connectors"][str(connector_id)]

    def db_counts(self) -> dict[str, int]:
        """Rows left in the durable tables (read beside the running firmware: WAL allows it)."""
        con = sqlite3.connect(self.db, timeout=5)
        try:
            return {table: con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                    for table in ("outbox", "transactions", "outbox_dead")}
        finally:
            con.close()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


# ---------------------------------------------------------------------------- the driver
@dataclass
class DriveResult:
    phase: str
    #: Energy seen at the start of each charging episode the driver watched (one episode:
    #: from seeing power offered to the driver's stop or the deadline).
    episodes: list[float] = field(default_factory=list)


def drive(charger: Charger, rng: random.Random, until: float, snipe: float = 0.0,
          hold: Optional[float] = None) -> DriveResult:
    """Plug in, tap to start, charge, tap or unplug to stop, again, until `until`
    (time.monotonic()). With probability `snipe` after a tap or an unplug, the deadline
    moves to within 40 ms, into the commit and send of a Start or Stop. With `hold`,
    return once a session has charged that long instead of stopping it."""
    result = DriveResult("waiting for the firmware")
    next_tap = 0.0
    charge_until: Optional[float] = None
    charging = False

    def after_action(now: float) -> float:
        if snipe and rng.random() < snipe:
            return min(until, now + rng.uniform(0.0, 0.04))
        return until

    while True:
        now = time.monotonic()
        if now >= until or charger.killed_at is not None:
            return result
        conn = charger.connector()
        now = time.monotonic()
        if conn is None:
            result.phase = "waiting for the firmware"
        elif not conn["plugged"]:
            charger.sim("plug", "1")
            result.phase = "plugged in"
            charging = False
        elif conn["offered_a"] is None:             # no transaction running
            charging = False
            charge_until = None
            if now >= next_tap:
                charger.sim("tap", TAG)
                result.phase = "tapped to start"
                next_tap = now + 1.5                 # tap again if it did not start
                until = after_action(now)
        else:
            if not charging:
                charging = True
                result.episodes.append(conn["energy_wh"])
                charge_until = now + (hold if hold is not None else rng.uniform(0.3, 3.0))
                result.phase = "charging"
            elif hold is not None and now >= charge_until:
                return result
            elif now >= charge_until:
                if rng.random() < 0.5:
                    charger.sim("tap", TAG)
                    result.phase = "tapped to stop"
                else:
                    charger.sim("unplug", "1")
                    result.phase = "unplugged"
                charging = False
                next_tap = now + rng.uniform(0.1, 0.8)
                until = after_action(now)
        time.sleep(max(0.0, min(0.04, until - time.monotonic())))


class Sniper:
    """Kills the firmware a few milliseconds after the CSMS receives the n-th transaction
    message of a run: the windows where a message is in flight, answered but not yet
    recorded, or just recorded, are a few milliseconds wide, too narrow for a kill at a
    random moment to hit often, and right after a restart the queue holds a backlog."""

    def __init__(self, charger: Charger, csms):
        self.charger = charger
        self._lock = threading.Lock()
        self._armed: Optional[tuple[int, int, float]] = None
        self._count = 0
        for action in TX_ACTIONS:
            csms.handlers[action] = self._received

    def arm(self, nth: int, delay_s: float) -> None:
        with self._lock:
            self._armed, self._count = (self.charger.runs, nth, delay_s), 0

    def disarm(self) -> None:
        with self._lock:
            self._armed = None

    def _received(self, cp_id: str, payload: dict) -> None:
        with self._lock:
            if self._armed is not None:
                self._count += 1
                run, nth, delay = self._armed
                if self._count >= nth:
                    self._armed = None
                    # From a timer, so the answer goes out and the kill lands before,
                    # during or after the charger records it.
                    threading.Timer(delay, self.charger.kill_now, args=(run,)).start()
        return None                                  # the CSMS's usual answer


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# ---------------------------------------------------------------------------- the checks
def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _energy(meter_value: dict) -> Optional[float]:
    for sv in meter_value.get("sampledValue", []):
        if sv.get("measurand", ENERGY) == ENERGY:
            return float(sv["value"])
    return None


@dataclass
class Tx:
    """One transaction as the CSMS saw it (first receipts only)."""

    start_uid: str
    start: dict
    transaction_id: Optional[int] = None
    meter_values: list[dict] = field(default_factory=list)
    stop: Optional[dict] = None

    @property
    def name(self) -> str:
        return f"transaction {self.transaction_id} (StartTransaction {self.start_uid})"


@dataclass
class Report:
    problems: list[str]
    transactions: list[Tx]
    duplicates: int
    summary: str


def check(entries: list[dict], kills: list[Kill], clean_stops: list[CleanStop],
          initial_wh: float, final_wh: float, episodes: int = 0) -> Report:
    """Everything the crash test asserts, from the CSMS log (`read_log` lines)."""
    problems, receipts, replies, duplicates = deliveries(entries)
    allowed = len(kills) + len(clean_stops)
    if duplicates > allowed:
        problems.append(f"{duplicates} repeated messages for {len(kills)} kills and "
                        f"{len(clean_stops)} clean stops: more than one per restart")
    more, txs = transactions(receipts, replies, kills, initial_wh, final_wh, episodes)
    problems += more
    return Report(problems, txs, duplicates, _summary(kills, txs, duplicates,
                                                      final_wh - initial_wh))


def check_connectors(entries: list[dict], restarts: int, initial_wh: dict[int, float],
                     final_wh: dict[int, float], episodes: Optional[dict[int, int]] = None,
                     kills: Optional[list[Kill]] = None) -> Report:
    """`check` for a charger with several connectors: one FIFO queue for all of them, so
    deliveries (lost, repeated) are judged on the whole log and order, transaction ids
    and energy per connector. `restarts` is how many times a message may have been in
    flight at a cut (kills, clean stops, dropped links); `kills` (register of connector
    1 only) are for a one-connector charger."""
    problems, receipts, replies, duplicates = deliveries(entries)
    if duplicates > restarts:
        problems.append(f"{duplicates} repeated messages for {restarts} restarts or dropped "
                        f"links: more than one per cut")
    connector_of: dict[int, int] = {}                # transactionId -> connector
    mine: dict[int, list[tuple[str, str, dict]]] = {cid: [] for cid in initial_wh}
    for uid, action, payload in receipts:
        if action == "StopTransaction":
            cid = connector_of.get(payload.get("transactionId"))
        else:
            cid = payload.get("connectorId")
        if cid not in mine:
            problems.append(f"{action} {uid} belongs to no connector of this charger "
                            f"(connectorId {payload.get('connectorId')}, transactionId "
                            f"{payload.get('transactionId')}): its StartTransaction was lost "
                            f"or came later")
            continue
        mine[cid].append((uid, action, payload))
        if action == "StartTransaction":
            for answer in replies.get(uid) or []:
                if answer.get("transactionId") is not None:
                    connector_of[answer["transactionId"]] = cid
    txs: list[Tx] = []
    for cid, own in mine.items():
        more, found = transactions(own, replies, kills or [], initial_wh[cid], final_wh[cid],
                                   (episodes or {}).get(cid, 0))
        problems += [f"connector {cid}: {p}" for p in more]
        txs += found
    charged = sum(final_wh[c] - initial_wh[c] for c in initial_wh)
    return Report(problems, txs, duplicates, _summary(kills or [], txs, duplicates, charged))


def deliveries(entries: list[dict]) -> tuple[list[str], list[tuple[str, str, dict]],
                                              dict[str, list[dict]], int]:
    """The transaction messages in a CSMS log: (problems, the first receipt of each unique
    id in order, the CSMS's CALLRESULT payloads by unique id, the number of repeats).
    A repeat must be the first transaction message on a new connection and the last one
    received before it: the one message that may have been in flight at a cut."""
    problems: list[str] = []
    receipts: list[tuple[str, str, dict]] = []       # first receipt of each unique id
    replies: dict[str, list[dict]] = {}
    seen: dict[str, dict] = {}
    duplicates = 0
    last_tx_uid: Optional[str] = None                # latest transaction message received
    fresh_connection = False                         # no transaction message yet on it
    for entry in entries:
        if entry.get("event") == "connected":
            fresh_connection = True
            continue
        message = entry.get("message")
        if not isinstance(message, list) or len(message) < 3:
            continue
        if entry.get("direction") == "out":
            if message[0] == 3:
                replies.setdefault(message[1], []).append(message[2])
            elif message[0] == 4 and message[1] in seen:
                problems.append(f"the CSMS refused {seen[message[1]]['action']} {message[1]}: "
                                f"{message[2:]}")
            continue
        if message[0] != 2 or message[2] not in TX_ACTIONS:
            continue
        uid, action, payload = message[1], message[2], message[3]
        if uid in seen:
            duplicates += 1
            if not (fresh_connection and last_tx_uid == uid):
                problems.append(f"{action} {uid} received again, but not as the first "
                                f"transaction message after a restart repeating the last one "
                                f"before it: a repeat of a message that was not in flight")
            if payload != seen[uid]["payload"]:
                problems.append(f"{action} {uid} repeated with a different payload: "
                                f"{seen[uid]['payload']} then {payload}")
        else:
            seen[uid] = {"action": action, "payload": payload}
            receipts.append((uid, action, payload))
        fresh_connection = False
        last_tx_uid = uid
    return problems, receipts, replies, duplicates


def transactions(receipts: list[tuple[str, str, dict]], replies: dict[str, list[dict]],
                 kills: list[Kill], initial_wh: float, final_wh: float,
                 episodes: int = 0) -> tuple[list[str], list[Tx]]:
    """The transactions of one connector from its first receipts (`deliveries`), and the
    problems with their order, ids, readings and energy."""
    problems: list[str] = []
    # Order: one connector, one FIFO queue, so the first receipts are blocks of
    # Start, MeterValues..., Stop, each carrying the id the CSMS gave that Start.
    txs: list[Tx] = []
    current: Optional[Tx] = None
    for uid, action, payload in receipts:
        if uid not in replies:
            problems.append(f"{action} {uid} was never answered (not delivered)")
        if action == "StartTransaction":
            if current is not None:
                problems.append(f"StartTransaction {uid} arrived while {current.name} had "
                                f"no StopTransaction yet (lost or reordered)")
            current = Tx(uid, payload)
            answers = replies.get(uid) or [{}]
            current.transaction_id = answers[-1].get("transactionId")
            txs.append(current)
            continue
        if current is None:
            problems.append(f"{action} {uid} (transactionId {payload.get('transactionId')}) "
                            f"arrived with no open transaction: its StartTransaction was "
                            f"lost or came later")
            continue
        if payload.get("transactionId") != current.transaction_id:
            problems.append(f"{action} {uid} carries transactionId "
                            f"{payload.get('transactionId')}, but {current.name} was given "
                            f"{current.transaction_id} in the answer the charger recorded")
        if action == "MeterValues":
            current.meter_values.append(payload)
        else:
            current.stop = payload
            current = None
    if current is not None:
        problems.append(f"{current.name} has no StopTransaction after the final clean run")

    # Per transaction: stamps in order, readings between meterStart and meterStop.
    for tx in txs:
        start_wh, start_ts = tx.start["meterStart"], _time(tx.start["timestamp"])
        stop = tx.stop
        readings, stamps = [], []
        for mv in tx.meter_values:
            for value in mv["meterValue"]:
                stamps.append(_time(value["timestamp"]))
                energy = _energy(value)
                if energy is not None:
                    readings.append(energy)
        if any(b < a for a, b in zip(stamps, stamps[1:])):
            problems.append(f"{tx.name}: MeterValues timestamps go backwards: {stamps}")
        if any(b < a for a, b in zip(readings, readings[1:])):
            problems.append(f"{tx.name}: the energy register goes backwards: {readings}")
        if stamps and stamps[0] < start_ts - CLOCK_SLACK_S:
            problems.append(f"{tx.name}: a MeterValues is stamped before the start")
        if stop is None:
            continue
        stop_wh, stop_ts = stop["meterStop"], _time(stop["timestamp"])
        if stop_wh < start_wh:
            problems.append(f"{tx.name}: meterStop {stop_wh} < meterStart {start_wh}")
        if stamps and stop_ts < stamps[-1] - CLOCK_SLACK_S:
            problems.append(f"{tx.name}: StopTransaction stamped before its last MeterValues")
        if readings and not (start_wh - 0.5 <= readings[0] and readings[-1] <= stop_wh + 0.501):
            problems.append(f"{tx.name}: readings {readings[0]}..{readings[-1]} outside "
                            f"meterStart {start_wh}..meterStop {stop_wh}")
        if stop.get("reason") == "PowerLoss":
            # meterStop must be the last reading that reached the disk, and every stored
            # reading went out as a MeterValues in the same commit.
            last = readings[-1] if readings else start_wh
            if abs(stop_wh - last) > 0.501:
                problems.append(f"{tx.name}: PowerLoss meterStop {stop_wh} is not the last "
                                f"stored reading {last}")
            if stamps and abs(stop_ts - stamps[-1]) > CLOCK_SLACK_S:
                problems.append(f"{tx.name}: PowerLoss stop stamped {stop['timestamp']}, not "
                                f"at its last stored reading")

    # Energy: the register's growth from the first start to the end is what the
    # transactions billed plus the stopped remainders: what the EV drew after the last
    # stored reading before a kill, and anything between sessions. Each remainder is
    # bounded by what the EV can draw in the time it covers, and nothing is drawn
    # between a kill and the next start (the contactor is open).
    ended = [t for t in txs if t.stop is not None]
    if not ended:
        if final_wh != initial_wh:
            problems.append(f"the register moved by {final_wh - initial_wh:.2f} Wh without "
                            f"a transaction")
    else:
        lead = ended[0].start["meterStart"] - initial_wh
        if abs(lead) > 0.5:
            problems.append(f"first meterStart {ended[0].start['meterStart']} is not the "
                            f"register {initial_wh} before any charging")
        billed = sum(t.stop["meterStop"] - t.start["meterStart"] for t in ended)
        remainders = 0.0
        used: set[int] = set()
        for i, tx in enumerate(ended):
            stop = tx.stop
            reason, stop_wh = stop.get("reason"), stop["meterStop"]
            stop_ts = _time(stop["timestamp"])
            following = ended[i + 1] if i + 1 < len(ended) else None
            next_wh = following.start["meterStart"] if following else final_wh
            if following is not None and following.start["meterStart"] < stop_wh:
                problems.append(f"{following.name} starts at {following.start['meterStart']} "
                                f"Wh, before {tx.name} stopped at {stop_wh} Wh: energy "
                                f"billed twice")
            if reason != "PowerLoss":
                remainder = next_wh - stop_wh
                limit = 1.0                      # rounding of two integer Wh
                if reason == "Reboot":           # stopped with the poller's latest reading
                    limit += P_MAX_W * (POLL_S + 0.5) / 3600.0
                if not -0.5 <= remainder <= limit:
                    problems.append(f"{tx.name} stopped {reason} at {stop_wh} Wh, then "
                                    f"{next_wh} Wh: {remainder:.2f} Wh unaccounted, "
                                    f"outside 0..{limit:.2f}")
                remainders += remainder
                continue
            kill = next((k for k in kills if k.number not in used
                         and k.wall >= stop_ts - CLOCK_SLACK_S), None)
            if kill is None:
                problems.append(f"{tx.name} stopped PowerLoss but no kill followed its last "
                                f"stored reading")
                continue
            used.add(kill.number)
            remainder = kill.register_wh - stop_wh
            span = kill.wall - stop_ts
            limit = P_MAX_W * (span + CLOCK_SLACK_S) / 3600.0 + 0.5
            if not -0.5 <= remainder <= limit:
                problems.append(f"{tx.name}: {remainder:.2f} Wh between its PowerLoss "
                                f"meterStop and the register at kill {kill.number} "
                                f"({span:.2f} s later), outside 0..{limit:.2f} Wh")
            if span > SAMPLE_INTERVAL_S + 1.5:
                problems.append(f"{tx.name}: its last stored reading was {span:.2f} s before "
                                f"kill {kill.number}; readings must reach the disk every "
                                f"{SAMPLE_INTERVAL_S} s")
            if abs(next_wh - kill.register_wh) > 0.5:
                problems.append(f"{following.name if following else 'the final register'}: "
                                f"{next_wh} Wh, but the register was {kill.register_wh:.2f} Wh "
                                f"after kill {kill.number} and nothing charged in between")
            remainders += remainder
        tolerance = 0.5 * (len(used) + 1) + 1e-6
        if abs(billed + remainders - (final_wh - initial_wh)) > tolerance:
            problems.append(f"energy does not add up: billed {billed} Wh + remainders "
                            f"{remainders:.2f} Wh = {billed + remainders:.2f} Wh, but the "
                            f"register went from {initial_wh:.2f} to {final_wh:.2f} Wh")
    if episodes > len(txs):
        problems.append(f"the driver watched {episodes} charging sessions, the CSMS heard of "
                        f"{len(txs)} transactions")
    return problems, txs


#: Words in the problems `check` reports that name the promise broken, first match wins.
PROBLEM_KINDS = (
    ("duplicated", ("received again", "repeated")),
    ("lost", ("never answered", "no StopTransaction", "lost", "belongs to no connector",
              "heard of")),
    ("reordered", ("backwards", "reordered", "came later", "stamped before")),
)


def problem_kinds(problems: list[str]) -> dict[str, int]:
    """How many problems say a message was duplicated, lost, reordered, or something else
    (transaction ids, energy); for benchmark reports."""
    counts = {kind: 0 for kind, _ in PROBLEM_KINDS}
    counts["other"] = 0
    for problem in problems:
        kind = next((kind for kind, words in PROBLEM_KINDS
                     if any(word in problem for word in words)), "other")
        counts[kind] += 1
    return counts


def _summary(kills: list[Kill], txs: list[Tx], duplicates: int, charged_wh: float) -> str:
    reasons: dict[str, int] = {}
    for tx in (t for t in txs if t.stop is not None):
        reasons[tx.stop.get("reason")] = reasons.get(tx.stop.get("reason"), 0) + 1
    mvs = sum(len(t.meter_values) for t in txs)
    return (f"{len(kills)} kills, {len(txs)} transactions ({reasons}), {mvs} MeterValues, "
            f"{duplicates} repeated, {charged_wh:.1f} Wh charged")

