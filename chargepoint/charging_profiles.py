"""Charging profiles as plain data, and the composite schedule as a pure function.

OCPP 1.6 section 3.13: at every instant each connector's limit is
    min(ChargePointMaxProfile, TxProfile if one applies else TxDefaultProfile)
where each purpose contributes the profile with the highest stackLevel that is
valid (validFrom / validTo) and running (its schedule has started and not run past
`duration`) at that instant. A connector's own TxDefaultProfile wins over the one
installed on connector 0 (which applies to every connector). ChargePointMaxProfile
lives on connector 0 and caps the whole charger.

Times are UTC seconds. Limits are converted between A and W per phase count and
nominal voltage: W = A x volts x phases, with the period's `numberPhases` (default
3, as the specification says) or, when converting for a connector, the connector's
own phase count if it has fewer. Nothing here reads a clock or a database: the
station passes `now`, the profiles and the transaction's start.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Optional

from chargepoint.clock import parse_utc

DAY = 86400.0
WEEK = 7 * DAY
PURPOSES = ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile")


def parse_time(text: Optional[str]) -> Optional[float]:
    """UTC seconds, None when absent; ValueError when unreadable (the profile is refused)."""
    return None if text is None else parse_utc(text)


def format_time(t: float) -> str:
    return datetime.fromtimestamp(round(t, 3), timezone.utc).isoformat(
        timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Period:
    start: float                       # seconds after the schedule's start
    limit: float                       # in the schedule's unit
    number_phases: Optional[int] = None


@dataclass(frozen=True)
class Profile:
    profile_id: int
    connector_id: int
    stack_level: int
    purpose: str
    kind: str                          # Absolute | Recurring | Relative
    unit: str                          # A | W
    periods: tuple[Period, ...]
    recurrency: Optional[str] = None   # Daily | Weekly
    valid_from: Optional[float] = None
    valid_to: Optional[float] = None
    start_schedule: Optional[float] = None
    duration: Optional[float] = None
    min_rate: Optional[float] = None
    transaction_id: Optional[int] = None
    #: When the charger installed it (the start of an Absolute profile without startSchedule).
    installed: float = 0.0
    raw: dict = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def from_ocpp(cls, connector_id: int, body: dict, installed: float) -> "Profile":
        sched = body["chargingSchedule"]
        periods = tuple(Period(float(p["startPeriod"]), float(p["limit"]), p.get("numberPhases"))
                        for p in sched["chargingSchedulePeriod"])
        return cls(
            profile_id=body["chargingProfileId"], connector_id=connector_id,
            stack_level=body["stackLevel"], purpose=body["chargingProfilePurpose"],
            kind=body["chargingProfileKind"], unit=sched["chargingRateUnit"], periods=periods,
            recurrency=body.get("recurrencyKind"), valid_from=parse_time(body.get("validFrom")),
            valid_to=parse_time(body.get("validTo")),
            start_schedule=parse_time(sched.get("startSchedule")),
            duration=float(sched["duration"]) if sched.get("duration") is not None else None,
            min_rate=(float(sched["minChargingRate"])
                      if sched.get("minChargingRate") is not None else None),
            transaction_id=body.get("transactionId"), installed=installed, raw=body)

    # -- when this profile's schedule runs
    def schedule_start(self, t: float, tx_start: Optional[float]) -> Optional[float]:
        """Start of the schedule instance that governs instant `t` (None: none does)."""
        if self.kind == "Relative":
            return tx_start
        anchor = self.start_schedule if self.start_schedule is not None else \
            (self.valid_from if self.valid_from is not None else self.installed)
        if self.kind == "Recurring":
            span = WEEK if self.recurrency == "Weekly" else DAY
            return anchor + math.floor((t - anchor) / span) * span
        return anchor

    def valid(self, t: float) -> bool:
        return ((self.valid_from is None or t >= self.valid_from)
                and (self.valid_to is None or t < self.valid_to))

    def period_at(self, t: float, tx_start: Optional[float]) -> Optional[Period]:
        """The period in force at `t`, or None when the profile has no say then."""
        if not self.valid(t):
            return None
        start = self.schedule_start(t, tx_start)
        if start is None:
            return None
        elapsed = t - start
        if elapsed < 0:
            return None
        if self.duration is not None and elapsed >= self.duration:
            return None
        if self.kind == "Recurring":
            span = WEEK if self.recurrency == "Weekly" else DAY
            if elapsed >= span:
                return None
        current = None
        for period in self.periods:
            if period.start <= elapsed:
                current = period
            else:
                break
        return current

    def edges(self, begin: float, end: float, tx_start: Optional[float]) -> set[float]:
        """Every instant in (begin, end) where this profile's answer may change."""
        out: set[float] = set()
        for t in (self.valid_from, self.valid_to):
            if t is not None:
                out.add(t)
        starts: list[float] = []
        if self.kind == "Recurring":
            span = WEEK if self.recurrency == "Weekly" else DAY
            first = self.schedule_start(begin, tx_start)
            k = 0
            while first is not None and first + k * span < end and k < 10000:
                starts.append(first + k * span)
                k += 1
        else:
            start = self.schedule_start(begin, tx_start)
            if start is not None:
                starts.append(start)
        for start in starts:
            out.add(start)
            for period in self.periods:
                out.add(start + period.start)
            if self.duration is not None:
                out.add(start + self.duration)
            if self.kind == "Recurring":
                out.add(start + (WEEK if self.recurrency == "Weekly" else DAY))
        return {t for t in out if begin < t < end}


# ------------------------------------------------------------------------- units
def to_amps(limit: float, unit: str, phases: int, volts: float) -> float:
    return limit if unit == "A" else limit / (volts * phases)


def to_unit(amps: float, unit: str, phases: int, volts: float) -> float:
    return amps if unit == "A" else amps * volts * phases


@dataclass(frozen=True)
class Connection:
    """What the conversion needs to know about a connector."""

    phases: int = 3
    volts: float = 230.0
    max_amps: float = 32.0


def _phases(period: Period, conn: Connection) -> int:
    return min(period.number_phases or 3, conn.phases)


# ------------------------------------------------------------------------- the merge
@dataclass(frozen=True)
class Limit:
    amps: Optional[float]              # None: no profile limits this instant
    phases: Optional[int] = None
    min_amps: Optional[float] = None


def _best(profiles: Iterable[Profile], t: float, tx_start: Optional[float]):
    """The (profile, period) of the highest stack level that is in force at `t`."""
    best = None
    for profile in profiles:
        period = profile.period_at(t, tx_start)
        if period is not None and (best is None or profile.stack_level > best[0].stack_level):
            best = (profile, period)
    return best


def limit_at(profiles: list[Profile], connector_id: int, t: float, conn: Connection,
             tx_start: Optional[float] = None, tx_id: Optional[int] = None) -> Limit:
    """The limit for `connector_id` (0 = the whole charger) at instant `t`, in amps."""
    def amps(best) -> tuple[float, int]:
        profile, period = best
        phases = _phases(period, conn)
        return to_amps(period.limit, profile.unit, phases, conn.volts), phases

    cap = _best((p for p in profiles if p.purpose == "ChargePointMaxProfile"), t, tx_start)
    result: Optional[tuple[float, int]] = amps(cap) if cap else None
    min_amps = None
    if connector_id != 0:
        tx = _best((p for p in profiles if p.purpose == "TxProfile"
                    and p.connector_id == connector_id
                    and (p.transaction_id is None or tx_id is None
                         or p.transaction_id == tx_id)), t, tx_start)
        if tx is None:
            tx = _best((p for p in profiles if p.purpose == "TxDefaultProfile"
                        and p.connector_id == connector_id), t, tx_start)
        if tx is None:
            tx = _best((p for p in profiles if p.purpose == "TxDefaultProfile"
                        and p.connector_id == 0), t, tx_start)
        if tx is not None:
            value = amps(tx)
            result = value if result is None or value[0] < result[0] else result
            profile = tx[0]
            if profile.min_rate is not None:
                min_amps = to_amps(profile.min_rate, profile.unit, value[1], conn.volts)
    if result is None:
        return Limit(None)
    return Limit(result[0], result[1], min_amps)


def composite(profiles: list[Profile], connector_id: int, start: float, duration: float,
              unit: str, conn: Connection, tx_start: Optional[float] = None,
              tx_id: Optional[int] = None) -> list[dict]:
    """GetCompositeSchedule's periods from `start` for `duration` seconds, in `unit`.

    Contiguous, sorted, and minimal: a new period begins only where the limit (or its
    phase count) changes. An instant no profile limits gets the connector's rating.
    """
    end = start + duration
    if tx_start is None:
        tx_start = start            # a Relative profile shows as if a transaction began now
    edges = {start}
    for profile in profiles:
        edges |= profile.edges(start, end, tx_start)
    periods: list[dict] = []
    last = None
    for t in sorted(edges):
        lim = limit_at(profiles, connector_id, t, conn, tx_start, tx_id)
        amps = conn.max_amps if lim.amps is None else min(lim.amps, conn.max_amps)
        phases = lim.phases or conn.phases
        value = round(to_unit(amps, unit, phases, conn.volts), 1)
        key = (value, phases)
        if key == last:
            continue
        last = key
        period = {"startPeriod": int(round(t - start)), "limit": value}
        if phases != 3:
            period["numberPhases"] = phases
        if periods and period["startPeriod"] == periods[-1]["startPeriod"]:
            periods[-1] = period
        else:
            periods.append(period)
    # merging after rounding may leave equal neighbours
    merged: list[dict] = []
    for period in periods:
        if merged and merged[-1]["limit"] == period["limit"] and \
                merged[-1].get("numberPhases") == period.get("numberPhases"):
            continue
        merged.append(period)
    return merged


def next_change(profiles: list[Profile], now: float, horizon: float,
                tx_starts: Iterable[Optional[float]]) -> Optional[float]:
    """The first instant after `now` where any connector's limit may change."""
    best = None
    for profile in profiles:
        for tx_start in set(tx_starts) | {None}:
            for t in profile.edges(now, now + horizon, tx_start):
                if best is None or t < best:
                    best = t
    return best
