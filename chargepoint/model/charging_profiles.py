"""Charging profiles as plain data, and the composite schedule as a pure function.

OCPP 1.6 section 3.13: at every instant each connector's limit is
    min(ChargePointMaxProfile, TxProfile if one applies else TxDefaultProfile)
where each purpose contributes the profile with the highest stackLevel that is
valid (validFrom / validTo) and running (its schedule has started and not run past
`duration`) at that instant. A connector's own TxDefaultProfile wins over the one
installed on connector 0 (which applies to every connector). ChargePointMaxProfile
lives on connector 0 and caps the whole charger.

Times are UTC seconds, and every instant that starts or ends a profile's say (its
`startSchedule`, `validFrom`, `validTo`, when it was installed, the transaction's start) and
the composite's start are taken down to the whole second (`whole_second`): the periods
and durations are whole seconds too, so every change falls on a whole second and
GetCompositeSchedule, which reports whole seconds, never depends on where in a second
it was asked. Limits are converted between A and W per phase count and
nominal voltage: W = A x volts x phases, with the period's `numberPhases` (default
3, as the specification says) or, when converting for a connector, the connector's
own phase count if it has fewer. Nothing here reads a clock or a database: the
station passes `now`, the profiles and the transaction's start.

Cost: nothing walks time. A profile's edges (the instants where its answer may change)
are produced lazily and in order, a recurrence starts from the repetition that holds the
first instant asked about, and the composite schedule keeps each profile's period between
its own edges, so one instant costs a merge over the profiles, not a search through them.
The composite looks at most COMPOSITE_HORIZON_S ahead and stops at `max_periods`;
`next_change` costs O(profiles x periods) whatever the dates. `Work` counts what a
computation did, so the bounds are tested, not timed.
"""
from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Iterable, Iterator, Optional

from chargepoint.clock import parse_utc

DAY = 86400.0
WEEK = 7 * DAY
PURPOSES = ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile")
#: How far ahead a composite schedule reaches at most: a weekly profile's whole cycle. It
#: bounds the instants a composite can visit to about profiles x periods x 8.
COMPOSITE_HORIZON_S = 7 * 86400


def whole_second(t: float) -> float:
    """The one rounding rule for the instants of profiles and composites: down to the whole
    second it falls in (a profile installed at 12:00:00.6 has its say from 12:00:00)."""
    return float(math.floor(t))


def parse_time(text: Optional[str]) -> Optional[float]:
    """UTC seconds, None when absent; ValueError when unreadable (the profile is refused)."""
    return None if text is None else parse_utc(text)


def _whole(t: Optional[float]) -> Optional[float]:
    return None if t is None else whole_second(t)


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
        """The profile of a csChargingProfiles; its instants down to the whole second."""
        sched = body["chargingSchedule"]
        periods = tuple(Period(float(p["startPeriod"]), float(p["limit"]), p.get("numberPhases"))
                        for p in sched["chargingSchedulePeriod"])
        return cls(
            profile_id=body["chargingProfileId"], connector_id=connector_id,
            stack_level=body["stackLevel"], purpose=body["chargingProfilePurpose"],
            kind=body["chargingProfileKind"], unit=sched["chargingRateUnit"], periods=periods,
            recurrency=body.get("recurrencyKind"),
            valid_from=_whole(parse_time(body.get("validFrom"))),
            valid_to=_whole(parse_time(body.get("validTo"))),
            start_schedule=_whole(parse_time(sched.get("startSchedule"))),
            duration=float(sched["duration"]) if sched.get("duration") is not None else None,
            min_rate=(float(sched["minChargingRate"])
                      if sched.get("minChargingRate") is not None else None),
            transaction_id=body.get("transactionId"), installed=whole_second(installed),
            raw=body)

    # -- when this profile's schedule runs
    @cached_property
    def span(self) -> Optional[float]:
        """The length of one repetition of a Recurring profile (None: it does not repeat)."""
        if self.kind != "Recurring":
            return None
        return WEEK if self.recurrency == "Weekly" else DAY

    @cached_property
    def _starts(self) -> tuple[float, ...]:
        return tuple(period.start for period in self.periods)

    @cached_property
    def _offsets(self) -> tuple[float, ...]:
        """Where, counted from its schedule's start, this profile's answer may change: its
        start, each period's start and the end of its duration (a repetition ends at its
        span, which is the next repetition's start)."""
        offsets = {0.0, *self._starts}
        if self.duration is not None:
            offsets.add(self.duration)
        limit = self.span if self.span is not None else math.inf
        return tuple(sorted(o for o in offsets if 0 <= o < limit))

    def _anchor(self) -> float:
        if self.start_schedule is not None:
            return self.start_schedule
        return self.valid_from if self.valid_from is not None else self.installed

    def schedule_start(self, t: float, tx_start: Optional[float]) -> Optional[float]:
        """Start of the schedule instance that governs instant `t` (None: none does)."""
        if self.kind == "Relative":
            return _whole(tx_start)
        anchor = self._anchor()
        if self.span is not None:
            return anchor + math.floor((t - anchor) / self.span) * self.span
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
        if self.span is not None and elapsed >= self.span:
            return None
        index = bisect.bisect_right(self._starts, elapsed) - 1   # the periods are increasing
        return self.periods[index] if index >= 0 else None

    def edges(self, begin: float, end: float, tx_start: Optional[float],
              work: Optional["Work"] = None) -> Iterator[float]:
        """Every instant in (begin, end) where this profile's answer may change, in order.

        Lazy: a consumer that stops early pays only for the instants it took, and a
        recurrence starts from the repetition that holds `begin`.
        """
        validity = sorted({t for t in (self.valid_from, self.valid_to)
                           if t is not None and begin < t < end})
        last = None
        for t in heapq.merge(validity, self._schedule_edges(begin, end, tx_start, work)):
            if t != last:
                last = t
                yield t

    def _schedule_edges(self, begin: float, end: float, tx_start: Optional[float],
                        work: Optional["Work"]) -> Iterator[float]:
        start = self.schedule_start(begin, tx_start)
        if start is None:
            return
        span = self.span
        while start < end:
            if work is not None:                # at most this many instants computed
                work.candidates += len(self._offsets)
            for offset in self._offsets:
                t = start + offset
                if t >= end:
                    break
                if t > begin:
                    yield t
            if span is None:
                break
            start += span


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


@dataclass
class Work:
    """What a computation did, counted where it is spent, so its bounds can be tested.

    `candidates`: instants computed from the profiles' schedules (an upper bound of the
    edges produced); `evaluations`: profiles asked for their period at an instant (each
    O(log periods)); `merges`: instants at which the profiles' answers were combined (each
    O(profiles)).
    """

    candidates: int = 0
    evaluations: int = 0
    merges: int = 0


def _roles(profiles: list[Profile], connector_id: int,
           tx_id: Optional[int]) -> list[list[int]]:
    """Which of `profiles` may speak for `connector_id`, as index lists: the cap first, then
    the transaction's candidates in order of precedence (its TxProfile, the connector's own
    TxDefaultProfile, connector 0's). Each list runs from the highest stack level down (in
    installation order within one level), so the first that has a period in force rules."""
    def where(test) -> list[int]:
        return sorted((i for i, p in enumerate(profiles) if test(p)),
                      key=lambda i: -profiles[i].stack_level)

    cap = where(lambda p: p.purpose == "ChargePointMaxProfile")
    if connector_id == 0:
        return [cap]
    return [cap,
            where(lambda p: p.purpose == "TxProfile" and p.connector_id == connector_id
                  and (p.transaction_id is None or tx_id is None or p.transaction_id == tx_id)),
            where(lambda p: p.purpose == "TxDefaultProfile" and p.connector_id == connector_id),
            where(lambda p: p.purpose == "TxDefaultProfile" and p.connector_id == 0)]


def _ruling(periods: list[Optional[Period]], role: list[int]) -> Optional[int]:
    """The first of `role` (highest stack level first) that has a period in force."""
    for i in role:
        if periods[i] is not None:
            return i
    return None


def _merge(profiles: list[Profile], periods: list[Optional[Period]], roles: list[list[int]],
           conn: Connection) -> Limit:
    """The limit, in amps, that `periods` (each profile's period in force, or None) add up to."""
    def amps(i: int) -> tuple[float, int]:
        phases = _phases(periods[i], conn)
        return to_amps(periods[i].limit, profiles[i].unit, phases, conn.volts), phases

    cap = _ruling(periods, roles[0])
    result: Optional[tuple[float, int]] = amps(cap) if cap is not None else None
    min_amps = None
    for role in roles[1:]:
        tx = _ruling(periods, role)
        if tx is None:
            continue
        value = amps(tx)
        result = value if result is None or value[0] < result[0] else result
        profile = profiles[tx]
        if profile.min_rate is not None:
            min_amps = to_amps(profile.min_rate, profile.unit, value[1], conn.volts)
        break
    if result is None:
        return Limit(None)
    return Limit(result[0], result[1], min_amps)


def _speaking(profiles: list[Profile], connector_id: int,
              tx_id: Optional[int]) -> tuple[list[Profile], list[list[int]]]:
    """The profiles that may speak for `connector_id`, and their roles among them."""
    roles = _roles(profiles, connector_id, tx_id)
    kept = sorted({i for role in roles for i in role})
    mine = [profiles[i] for i in kept]
    return mine, _roles(mine, connector_id, tx_id)


def limit_at(profiles: list[Profile], connector_id: int, t: float, conn: Connection,
             tx_start: Optional[float] = None, tx_id: Optional[int] = None) -> Limit:
    """The limit for `connector_id` (0 = the whole charger) at instant `t`, in amps."""
    mine, roles = _speaking(profiles, connector_id, tx_id)
    return _merge(mine, [p.period_at(t, tx_start) for p in mine], roles, conn)


@dataclass(frozen=True)
class Schedule:
    """A composite schedule: its periods, how far they reach, and what computing it cost."""

    periods: list[dict]
    #: Seconds from the start that the periods cover: the duration asked for, or less when
    #: it reached beyond the horizon or needed more than `max_periods` periods.
    duration: float
    work: Work


def schedule(profiles: list[Profile], connector_id: int, start: float, duration: float,
             unit: str, conn: Connection, tx_start: Optional[float] = None,
             tx_id: Optional[int] = None, max_periods: Optional[int] = None,
             horizon: float = COMPOSITE_HORIZON_S) -> Schedule:
    """GetCompositeSchedule's periods from `start` (down to its whole second) for `duration`
    seconds, in `unit`.

    Contiguous, sorted, and minimal: a new period begins only where the limit (or its
    phase count) changes. An instant no profile limits gets the connector's rating.
    Computed only as far as it is returned: at most `horizon` seconds, and up to where a
    period beyond `max_periods` would begin (the schedule's `duration` then ends there).

    One pass over the profiles' edges in time order; between its own edges a profile's
    period cannot change, so an edge re-evaluates only the profiles it belongs to.
    """
    work = Work()
    start = whole_second(start)
    duration = min(duration, horizon)
    end = start + duration
    if tx_start is None:
        tx_start = start            # a Relative profile shows as if a transaction began now
    cap = None if max_periods is None else max(1, max_periods)
    mine, roles = _speaking(profiles, connector_id, tx_id)
    periods_now = [p.period_at(start, tx_start) for p in mine]
    work.evaluations += len(mine)
    edges = heapq.merge(*(_tagged(p.edges(start, end, tx_start, work), i)
                          for i, p in enumerate(mine)))
    out: list[dict] = []
    last = None
    t = start
    pending = next(edges, None)
    while True:
        work.merges += 1
        lim = _merge(mine, periods_now, roles, conn)
        amps = conn.max_amps if lim.amps is None else min(lim.amps, conn.max_amps)
        phases = lim.phases or conn.phases
        value = round(to_unit(amps, unit, phases, conn.volts), 1)
        key = (value, phases)
        if key != last:
            last = key
            period = {"startPeriod": int(t - start), "limit": value}   # whole seconds
            if phases != 3:
                period["numberPhases"] = phases
            if not (out and out[-1]["limit"] == period["limit"]
                    and out[-1].get("numberPhases") == period.get("numberPhases")):
                out.append(period)           # (rounding may make neighbours equal: merged)
        # Only the last period may still change; with cap + 2 the first cap + 1 are final.
        if pending is None or (cap is not None and len(out) > cap + 1):
            break
        t = pending[0]
        while pending is not None and pending[0] == t:
            i = pending[1]
            periods_now[i] = mine[i].period_at(t, tx_start)
            work.evaluations += 1
            pending = next(edges, None)
    if cap is not None and len(out) > cap:
        return Schedule(out[:cap], out[cap]["startPeriod"], work)
    return Schedule(out, duration, work)


def _tagged(edges: Iterator[float], index: int) -> Iterator[tuple[float, int]]:
    for t in edges:
        yield t, index


def composite(profiles: list[Profile], connector_id: int, start: float, duration: float,
              unit: str, conn: Connection, tx_start: Optional[float] = None,
              tx_id: Optional[int] = None) -> list[dict]:
    """The periods of `schedule` (at most COMPOSITE_HORIZON_S of them, in any number)."""
    return schedule(profiles, connector_id, start, duration, unit, conn, tx_start,
                    tx_id).periods


def next_change(profiles: list[Profile], now: float, horizon: float,
                tx_starts: Iterable[Optional[float]],
                work: Optional[Work] = None) -> Optional[float]:
    """The first instant after `now`, within `horizon`, where any connector's limit may
    change. Each profile's first edge costs O(its periods), whatever the dates: only a
    Relative profile depends on the transaction's start, so only it is asked per start."""
    best = None
    starts = set(tx_starts) | {None}
    for profile in profiles:
        for tx_start in (starts if profile.kind == "Relative" else (None,)):
            t = next(profile.edges(now, now + horizon, tx_start, work), None)
            if t is not None and (best is None or t < best):
                best = t
    return best
