"""The composite schedule as a pure function: properties against a brute-force reference,
recurrence and relative schedules at the right instants, A <-> W, and pinned examples.

The reference (`ref_limit`) reads the OCPP dictionaries directly, walks recurrences one
span at a time and scans every profile at every instant: slow and obviously right. The
generated profiles put every instant that matters (period starts, validFrom/validTo,
durations, recurrence anchors, the transaction start) on a grid of G seconds, so the true
limit is constant on each grid cell and checking every grid instant checks all of time.
"""
import itertools
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chargepoint.model import charging_profiles as cp
from chargepoint.model.charging_profiles import Connection, Profile

DAY = 86400
WEEK = 7 * DAY
CPMAX, TXDEFAULT, TX = "ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"
#: Sunday 2026-03-01T00:00:00Z: a week boundary (Sunday -> Monday) and midnights to cross.
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp()
EXAMPLES = settings(max_examples=150, deadline=None)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def body(pid, purpose, periods, *, stack=0, kind="Absolute", unit="A", start=None,
         duration=None, valid_from=None, valid_to=None, recurrency=None, tx_id=None,
         min_rate=None) -> dict:
    """csChargingProfiles as a CSMS sends it; `periods` is [(startPeriod, limit[, phases])]."""
    sched = {"chargingRateUnit": unit, "chargingSchedulePeriod": [
        {"startPeriod": p[0], "limit": p[1], **({"numberPhases": p[2]} if len(p) > 2 and
                                                 p[2] is not None else {})}
        for p in periods]}
    if start is not None:
        sched["startSchedule"] = iso(start)
    if duration is not None:
        sched["duration"] = duration
    if min_rate is not None:
        sched["minChargingRate"] = min_rate
    out = {"chargingProfileId": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
           "chargingProfileKind": kind, "chargingSchedule": sched}
    for key, value in (("validFrom", valid_from), ("validTo", valid_to)):
        if value is not None:
            out[key] = iso(value)
    if recurrency is not None:
        out["recurrencyKind"] = recurrency
    if tx_id is not None:
        out["transactionId"] = tx_id
    return out


def profile(cid, b, installed=T0) -> Profile:
    return Profile.from_ocpp(cid, b, installed)


# ============================================================================ the reference

def _t(text):
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def ref_period(b: dict, installed: float, t: float, tx_start):
    """The chargingSchedulePeriod of `b` in force at `t`, or None."""
    valid_from, valid_to = _t(b.get("validFrom")), _t(b.get("validTo"))
    if valid_from is not None and t < valid_from or valid_to is not None and t >= valid_to:
        return None
    sched = b["chargingSchedule"]
    kind = b["chargingProfileKind"]
    if kind == "Relative":
        if tx_start is None:
            return None
        begin = tx_start
    else:
        begin = _t(sched.get("startSchedule"))
        if begin is None:
            begin = valid_from if valid_from is not None else installed
        if kind == "Recurring":
            span = WEEK if b["recurrencyKind"] == "Weekly" else DAY
            while begin + span <= t:             # walk to the repetition that holds t
                begin += span
            while begin > t:
                begin -= span
    if t < begin:
        return None
    if sched.get("duration") is not None and t >= begin + sched["duration"]:
        return None
    found = None
    for period in sched["chargingSchedulePeriod"]:
        if begin + period["startPeriod"] <= t:
            found = period
    return found


def ref_limit(entries, cid, t, conn: Connection, tx_start=None, tx_id=None):
    """(amps, phases that may be reported) at `t`; amps None when no profile limits.

    entries: [(connector id, csChargingProfiles, installed)].
    """
    def ruling(purpose, on, tx_filter=False):
        best = None
        for c, b, installed in entries:
            if b["chargingProfilePurpose"] != purpose or c != on:
                continue
            if tx_filter and b.get("transactionId") is not None and tx_id is not None \
                    and b["transactionId"] != tx_id:
                continue
            period = ref_period(b, installed, t, tx_start)
            if period is not None and (best is None or b["stackLevel"] > best[0]["stackLevel"]):
                best = (b, period)
        if best is None:
            return None
        b, period = best
        phases = min(period.get("numberPhases", 3), conn.phases)
        limit = period["limit"]
        amps = limit if b["chargingSchedule"]["chargingRateUnit"] == "A" \
            else limit / (conn.volts * phases)
        return amps, phases

    candidates = [ruling(CPMAX, 0)]
    if cid != 0:
        candidates.append(ruling(TX, cid, tx_filter=True) or ruling(TXDEFAULT, cid)
                          or ruling(TXDEFAULT, 0))
    candidates = [c for c in candidates if c is not None]
    if not candidates:
        return None, {conn.phases}
    amps = min(a for a, _ in candidates)
    return amps, {p for a, p in candidates if abs(a - amps) < 1e-9}


# ============================================================================ generated profiles

@st.composite
def scenarios(draw):
    """Profiles, a connector and a composite window, every instant on a grid of G s."""
    grid = draw(st.sampled_from([60, 900]))
    g = lambda lo, hi: draw(st.integers(lo // grid, hi // grid)) * grid  # noqa: E731
    window_start = T0 + WEEK + g(0, 2 * DAY)          # on or after the recurrence anchors
    duration = g(grid, (6 * 3600) if grid == 60 else 2 * DAY)
    conn = Connection(phases=draw(st.sampled_from([1, 3])),
                      volts=draw(st.sampled_from([230.0, 120.0])),
                      max_amps=draw(st.sampled_from([16.0, 32.0])))
    entries, used = [], set()
    for pid in range(1, draw(st.integers(1, 6)) + 1):
        purpose = draw(st.sampled_from([CPMAX, TXDEFAULT, TX]))
        cid = {CPMAX: 0, TXDEFAULT: draw(st.sampled_from([0, 1, 2])),
               TX: draw(st.sampled_from([1, 2]))}[purpose]
        stack = draw(st.integers(0, 3))
        if (purpose, cid, stack) in used:           # the charger would replace, not stack
            continue
        used.add((purpose, cid, stack))
        kind = draw(st.sampled_from(["Absolute", "Recurring", "Relative"]))
        unit = draw(st.sampled_from(["A", "W"]))
        starts = sorted(set([0] + draw(st.lists(st.integers(1, (2 * DAY) // grid), max_size=3))))
        periods = [(s * grid,
                    draw(st.integers(0, 40)) if unit == "A" else draw(st.integers(0, 300)) * 100,
                    draw(st.sampled_from([None, 1, 2, 3])))
                   for s in starts]
        kw = {"stack": stack, "kind": kind, "unit": unit}
        if kind == "Recurring":
            kw["recurrency"] = draw(st.sampled_from(["Daily", "Weekly"]))
            kw["start"] = T0 + g(0, WEEK - grid)
        elif kind == "Absolute" and draw(st.booleans()):
            kw["start"] = T0 + g(6 * DAY, 11 * DAY)
        if draw(st.booleans()):
            kw["duration"] = g(grid, 3 * DAY)
        if draw(st.booleans()):
            kw["valid_from"] = T0 + g(6 * DAY, 10 * DAY)
        if draw(st.booleans()):
            kw["valid_to"] = (kw.get("valid_from") or T0 + 6 * DAY) + g(grid, 3 * DAY)
        if purpose == TX:
            kw["tx_id"] = draw(st.sampled_from([None, 5, 6]))
        entries.append((cid, body(pid, purpose, periods, **kw), T0 + WEEK))
    tx_start = draw(st.sampled_from([None, window_start, window_start - g(grid, DAY)]))
    tx_id = draw(st.sampled_from([None, 5]))
    cid = draw(st.sampled_from([0, 1, 1, 1]))
    return grid, window_start, duration, conn, entries, tx_start, tx_id, cid


def value_at(periods, offset):
    """The composite period that covers `offset` seconds after its start."""
    found = None
    for period in periods:
        if period["startPeriod"] <= offset:
            found = period
    return found


@EXAMPLES
@given(scenarios())
def test_composite_equals_the_brute_force_reference_at_every_instant(scenario):
    grid, start, duration, conn, entries, tx_start, tx_id, cid = scenario
    profiles = [profile(c, b, installed) for c, b, installed in entries]
    amps_view = cp.composite(profiles, cid, start, duration, "A", conn, tx_start, tx_id)
    watts_view = cp.composite(profiles, cid, start, duration, "W", conn, tx_start, tx_id)
    rel_start = start if tx_start is None else tx_start   # Relative: as if charging began now
    for offset in range(0, duration, grid):
        t = start + offset
        amps, phases_ok = ref_limit(entries, cid, t, conn, rel_start, tx_id)
        expected = conn.max_amps if amps is None else min(amps, conn.max_amps)
        got = value_at(amps_view, offset)
        assert got["limit"] == pytest.approx(expected, abs=0.051), (offset, got, expected)
        phases = got.get("numberPhases", 3)
        assert phases in phases_ok | ({conn.phases} if amps is None or amps > conn.max_amps
                                      else set())
        watts = value_at(watts_view, offset)
        assert watts.get("numberPhases", 3) == phases
        assert watts["limit"] == pytest.approx(expected * conn.volts * phases, abs=0.051)
        # the same instant asked directly, as the enforcement does
        direct = cp.limit_at(profiles, cid, t, conn, rel_start, tx_id)
        if amps is None:
            assert direct.amps is None
        else:
            assert direct.amps == pytest.approx(amps, abs=1e-6)


#: A fraction of a second, in milliseconds as OCPP dateTimes carry them (a float fraction
#: near 1 added to today's epoch seconds may round up to the next second).
FRACTION = st.one_of(st.sampled_from([0.0, 0.4, 0.5, 0.6, 0.999]),
                     st.integers(0, 999).map(lambda ms: ms / 1000))
SIX = dict(min_size=6, max_size=6)      # one per profile a scenario may have


def _later_in_the_second(b: dict, fraction: float) -> dict:
    """`b` with its validFrom, validTo and startSchedule `fraction` s into their second."""
    out = json.loads(json.dumps(b))
    for holder, key in ((out, "validFrom"), (out, "validTo"),
                        (out["chargingSchedule"], "startSchedule")):
        if key in holder:
            holder[key] = iso(_t(holder[key]) + fraction)
    return out


@EXAMPLES
@given(scenario=scenarios(), asked=FRACTION, same_second=st.lists(st.booleans(), **SIX),
       installed_at=st.lists(FRACTION, **SIX), dated_at=st.lists(FRACTION, **SIX),
       tx_at=FRACTION)
@example(scenario=(60, T0 + WEEK, 400, Connection(max_amps=48.0), [
    (1, body(1, TXDEFAULT, [(0, 6), (60, 10), (120, 8)], duration=260), T0)], None, None, 1),
    asked=0.6, same_second=[True] * 6, installed_at=[0.0] * 6, dated_at=[0.0] * 6,
    tx_at=0.0)
def test_the_composite_never_depends_on_where_in_a_second_it_is_asked(
        scenario, asked, same_second, installed_at, dated_at, tx_at):
    """One rounding rule, down to the whole second, for the composite's start and for every
    instant of every profile: asked at any fraction of a second, with profiles installed
    earlier in that same second (or at any fraction of another), dates and a transaction
    start at any fraction of theirs, the composite is the one asked on whole seconds, and
    that is the reference's at every instant. The example is the conformance case: a
    profile of 6, 10 and 8 A installed at the start of the second asked 0.6 s into it."""
    grid, start, duration, conn, entries, tx_start, tx_id, cid = scenario
    whole, jittered = [], []
    for k, (c, b, installed) in enumerate(entries):
        if same_second[k]:
            installed, late = start, installed_at[k] * asked      # just before the request
        else:
            late = installed_at[k]
        whole.append((c, b, installed))
        jittered.append(profile(c, _later_in_the_second(b, dated_at[k]), installed + late))
    tx_late = None if tx_start is None else tx_start + tx_at
    got = cp.composite(jittered, cid, start + asked, duration, "A", conn, tx_late, tx_id)
    assert got == cp.composite([profile(c, b, i) for c, b, i in whole], cid, start, duration,
                               "A", conn, tx_start, tx_id)
    rel_start = start if tx_start is None else tx_start
    for offset in range(0, duration, grid):
        amps, _ = ref_limit(whole, cid, start + offset, conn, rel_start, tx_id)
        expected = conn.max_amps if amps is None else min(amps, conn.max_amps)
        assert value_at(got, offset)["limit"] == pytest.approx(expected, abs=0.051), offset


@EXAMPLES
@given(scenarios())
def test_composite_never_exceeds_the_ruling_charge_point_max_profile(scenario):
    grid, start, duration, conn, entries, tx_start, tx_id, cid = scenario
    profiles = [profile(c, b, installed) for c, b, installed in entries]
    caps = [e for e in entries if e[1]["chargingProfilePurpose"] == CPMAX]
    periods = cp.composite(profiles, cid, start, duration, "A", conn, tx_start, tx_id)
    rel_start = start if tx_start is None else tx_start
    for offset in range(0, duration, grid):
        cap, _ = ref_limit(caps, 0, start + offset, conn, rel_start)
        if cap is not None:
            assert value_at(periods, offset)["limit"] <= cap + 0.05


@EXAMPLES
@given(scenarios(), st.sampled_from(["A", "W"]))
def test_composite_periods_are_contiguous_sorted_and_minimal(scenario, unit):
    grid, start, duration, conn, entries, tx_start, tx_id, cid = scenario
    profiles = [profile(c, b, installed) for c, b, installed in entries]
    periods = cp.composite(profiles, cid, start, duration, unit, conn, tx_start, tx_id)
    starts = [p["startPeriod"] for p in periods]
    assert starts[0] == 0
    assert starts == sorted(set(starts))                     # strictly increasing
    assert starts[-1] < duration
    assert all(isinstance(s, int) for s in starts)
    for before, after in zip(periods, periods[1:]):          # no split without a change
        assert (before["limit"], before.get("numberPhases")) != \
            (after["limit"], after.get("numberPhases"))
    assert all(p.get("numberPhases") in (None, 1, 2) for p in periods)  # 3 is left out


@EXAMPLES
@given(scenarios(), st.integers(1, 6))
def test_a_schedule_cut_at_max_periods_is_the_beginning_of_the_whole_one(scenario, cap):
    """Cut at `cap` periods, the schedule is the whole one's first `cap` periods, and it
    reaches exactly to where the next would begin; computing it did no more work."""
    grid, start, duration, conn, entries, tx_start, tx_id, cid = scenario
    profiles = [profile(c, b, installed) for c, b, installed in entries]
    whole = cp.schedule(profiles, cid, start, duration, "A", conn, tx_start, tx_id)
    cut = cp.schedule(profiles, cid, start, duration, "A", conn, tx_start, tx_id,
                      max_periods=cap)
    assert whole.periods == cp.composite(profiles, cid, start, duration, "A", conn, tx_start,
                                         tx_id)
    assert whole.duration == duration
    assert cut.periods == whole.periods[:cap]
    if len(whole.periods) > cap:
        assert cut.duration == whole.periods[cap]["startPeriod"]
    else:
        assert cut.duration == duration
    assert cut.work.merges <= whole.work.merges


@EXAMPLES
@given(scenarios())
def test_a_schedule_asked_beyond_the_horizon_is_the_horizons(scenario):
    grid, start, duration, conn, entries, tx_start, tx_id, cid = scenario
    profiles = [profile(c, b, installed) for c, b, installed in entries]
    week = cp.schedule(profiles, cid, start, cp.COMPOSITE_HORIZON_S, "A", conn, tx_start,
                       tx_id)
    asked = cp.schedule(profiles, cid, start, 864_000_000, "A", conn, tx_start, tx_id)
    assert asked.periods == week.periods
    assert asked.duration == week.duration == cp.COMPOSITE_HORIZON_S
    assert asked.work == week.work


@EXAMPLES
@given(scenarios())
def test_no_limit_changes_before_next_change(scenario):
    """The enforcement timer fires at `next_change`: against the reference, no connector's
    limit changes at any instant between now and then."""
    grid, start, duration, conn, entries, tx_start, tx_id, cid = scenario
    profiles = [profile(c, b, installed) for c, b, installed in entries]
    starts = [tx_start, start - grid]
    due = cp.next_change(profiles, start, duration, starts)
    assert due is None or start < due < start + duration
    until = start + duration if due is None else due
    for c, rel in [(0, None)] + [(c, rel) for c in (1, 2) for rel in starts]:
        before = ref_limit(entries, c, start, conn, rel)[0]
        for t in range(int(start) + grid, int(until), grid):
            assert ref_limit(entries, c, t, conn, rel)[0] == before, (c, t - start, due)


# ============================================================================ cost bounds
#
# Every value the schema lets through, within the charger's limits (ChargeProfileMaxStackLevel,
# ChargingScheduleMaxPeriods, MaxChargingProfilesInstalled): the work is counted by the
# computation itself (`cp.Work`) and bounded by profiles x periods, never by a date, a
# duration or a startPeriod.

INT32 = 2**31 - 1
MAX_PROFILES, MAX_PERIODS = 16, 24
#: 1900-01-01 .. 2200-01-01
WHEN = st.integers(-2_208_988_800, 7_258_118_400)


@st.composite
def any_profiles(draw):
    out = []
    for pid in range(1, draw(st.integers(1, MAX_PROFILES)) + 1):
        purpose = draw(st.sampled_from([CPMAX, TXDEFAULT, TX]))
        cid = 0 if purpose == CPMAX else draw(st.sampled_from([0, 1, 2]))
        kind = draw(st.sampled_from(["Absolute", "Recurring", "Relative"]))
        gap = st.one_of(st.integers(1, 3600), st.integers(1, INT32 // MAX_PERIODS))
        gaps = draw(st.lists(gap, max_size=MAX_PERIODS - 1))
        periods = [(s, draw(st.integers(0, 80))) for s in itertools.accumulate([0] + gaps)]
        kw = {"stack": draw(st.integers(0, 8)), "kind": kind,
              "duration": draw(st.none() | st.integers(0, INT32)),
              "valid_from": draw(st.none() | WHEN), "valid_to": draw(st.none() | WHEN)}
        if kind == "Recurring":
            kw["recurrency"] = draw(st.sampled_from(["Daily", "Weekly"]))
        if kind == "Recurring" or (kind == "Absolute" and draw(st.booleans())):
            kw["start"] = draw(WHEN)
        out.append(profile(cid, body(pid, purpose, periods, **kw), installed=draw(WHEN)))
    return out


def _dense_daily():
    """The worst case for a composite: 16 daily profiles of 24 periods, no two edges at the
    same instant, and a cap at 0 A that hides every change (nothing ends the walk early)."""
    out = []
    for pid in range(1, 17):
        purpose, stack = (CPMAX, pid - 1) if pid <= 9 else (TXDEFAULT, pid - 10)
        periods = [(0, 0 if pid == 9 else 10)] + [
            (h * 3600 + pid * 60, 0 if pid == 9 else 10 + h) for h in range(1, 24)]
        out.append(profile(0, body(pid, purpose, periods, stack=stack, kind="Recurring",
                                   recurrency="Daily", start=T0)))
    return out


def _bound(profiles) -> int:
    """Instants a composite may compute: each profile's period starts, its duration's end
    and its start, once per repetition that meets the horizon (a Daily one: 9 of them)."""
    repetitions = cp.COMPOSITE_HORIZON_S // DAY + 2
    return sum((len(p.periods) + 2) * repetitions for p in profiles)


@settings(max_examples=200, deadline=None)
@given(profiles=any_profiles(), start=WHEN, duration=st.integers(0, 10**12),
       tx_start=st.none() | WHEN, cid=st.sampled_from([0, 1, 2]),
       cap=st.none() | st.integers(1, MAX_PERIODS))
@example(profiles=_dense_daily(), start=T0 + 10 * DAY + 1800, duration=864_000_000,
         tx_start=None, cid=1, cap=24)
def test_a_composite_costs_at_most_profiles_times_periods(profiles, start, duration, tx_start,
                                                         cid, cap):
    result = cp.schedule(profiles, cid, start, duration, "W", Connection(), tx_start, 5,
                         max_periods=cap)
    work = result.work
    assert work.candidates <= _bound(profiles) <= \
        MAX_PROFILES * (MAX_PERIODS + 2) * (cp.COMPOSITE_HORIZON_S // DAY + 2)
    edges = work.candidates + 2 * len(profiles)          # and validFrom, validTo
    assert work.merges <= 1 + edges
    assert work.evaluations <= len(profiles) + edges
    assert result.duration <= min(duration, cp.COMPOSITE_HORIZON_S)
    assert 1 <= len(result.periods) <= (cap or len(result.periods))
    assert result.periods[0]["startPeriod"] == 0
    assert all(p["startPeriod"] < result.duration for p in result.periods[1:])


def test_the_worst_composite_visits_every_edge_of_the_horizon_once():
    """The dense case above really is a walk to the horizon: every edge visited, one merge
    each, and the answer is the 0 A cap throughout."""
    profiles = _dense_daily()
    result = cp.schedule(profiles, 1, T0 + 10 * DAY + 1800, 864_000_000, "A", Connection(),
                         max_periods=24)
    assert result.periods == [{"startPeriod": 0, "limit": 0.0}]
    assert result.duration == cp.COMPOSITE_HORIZON_S
    # each distinct edge once: per day 23 of each profile's own and the midnight they share
    assert result.work.merges == 1 + 7 * (16 * 23 + 1)
    assert result.work.candidates <= _bound(profiles)


@settings(max_examples=200, deadline=None)
@given(profiles=any_profiles(), now=WHEN, horizon=st.integers(1, 10**12),
       tx_starts=st.lists(st.none() | WHEN, max_size=4))
def test_next_change_costs_at_most_profiles_times_periods(profiles, now, horizon, tx_starts):
    """Each profile's first edge after `now`: its periods of at most two repetitions, once
    per transaction start for a Relative profile and once for any other."""
    work = cp.Work()
    due = cp.next_change(profiles, now, horizon, tx_starts, work)
    asks = sum(len(set(tx_starts) | {None}) if p.kind == "Relative" else 1 for p in profiles)
    assert work.candidates <= asks * 2 * (MAX_PERIODS + 2)
    assert due is None or now < due < now + horizon


# ============================================================================ recurrence

@EXAMPLES
@given(hour=st.integers(0, 23), minute=st.integers(0, 59), switch_h=st.integers(1, 23),
       probe=st.lists(st.integers(0, 10 * DAY - 1), min_size=1, max_size=20))
def test_daily_recurrence_repeats_at_the_same_time_of_day_across_midnight(
        hour, minute, switch_h, probe):
    """Periods 0 -> 16 A and `switch_h` hours later -> 8 A, restarting every day at
    hh:mm: at any instant the limit depends only on the time since the last hh:mm."""
    anchor = T0 + hour * 3600 + minute * 60
    p = profile(1, body(1, TXDEFAULT, [(0, 16), (switch_h * 3600, 8)], kind="Recurring",
                        recurrency="Daily", start=anchor))
    conn = Connection()
    for x in probe + [DAY * d - hour * 3600 - minute * 60 for d in range(1, 10)]:  # midnights
        t = anchor + x
        since = (t - anchor) % DAY
        want = 16 if since < switch_h * 3600 else 8
        assert cp.limit_at([p], 1, t, conn).amps == want, (iso(t), since)
    # a composite over two midnights changes exactly at the daily instants
    begin = anchor + 3 * DAY + 3600                     # an hour into the fourth day
    got = cp.composite([p], 1, begin, 2 * DAY, "A", conn)
    switch, restart = switch_h * 3600 - 3600, DAY - 3600
    changes = sorted({s for s in (switch, restart, switch + DAY, restart + DAY)
                      if 0 < s < 2 * DAY})
    assert [q["startPeriod"] for q in got] == [0] + changes
    for q in got:
        since = (begin + q["startPeriod"] - anchor) % DAY
        assert q["limit"] == (16 if since < switch_h * 3600 else 8)


@EXAMPLES
@given(day=st.integers(0, 6), hour=st.integers(0, 23), length_h=st.integers(1, 6 * 24),
       probe=st.lists(st.integers(0, 5 * WEEK - 1), min_size=1, max_size=20))
def test_weekly_recurrence_repeats_on_the_same_weekday_across_the_week_boundary(
        day, hour, length_h, probe):
    """A window that opens on weekday `day` at `hour` (Sunday = 0, from the Sunday T0) and
    lasts `length_h` hours, every week: 6 A inside, 32 A outside."""
    anchor = T0 + day * DAY + hour * 3600
    p = profile(1, body(1, TXDEFAULT, [(0, 6), (length_h * 3600, 32)], kind="Recurring",
                        recurrency="Weekly", start=anchor))
    conn = Connection()
    sundays = [T0 + w * WEEK + DAY - 1 for w in range(5)] + \
        [T0 + w * WEEK + DAY for w in range(5)]              # Sunday 23:59:59 / Monday 00:00
    for t in [anchor + x for x in probe] + [s for s in sundays if s >= anchor]:
        since = (t - anchor) % WEEK
        want = 6 if since < length_h * 3600 else 32
        assert cp.limit_at([p], 1, t, conn).amps == want, (iso(t), since)
        weekday = datetime.fromtimestamp(t, timezone.utc).isoweekday() % 7  # Sunday 0
        in_window = (weekday - day) % 7 * DAY + (t % DAY) - hour * 3600
        assert (0 <= in_window % WEEK < length_h * 3600) == (want == 6)


@EXAMPLES
@given(tx_offset=st.integers(0, 3 * DAY), first=st.integers(1, 7200),
       probe=st.lists(st.integers(-3600, 4 * 3600), min_size=1, max_size=20))
def test_relative_schedule_runs_from_the_transaction_start(tx_offset, first, probe):
    """Relative: 10 A for `first` s after the transaction started, then 20 A, for 3 h;
    nothing before the transaction, nothing after the duration."""
    tx_start = T0 + tx_offset + 0.25              # a transaction starts at any instant
    p = profile(1, body(1, TX, [(0, 10), (first, 20)], kind="Relative", duration=3 * 3600))
    conn = Connection()
    for x in probe:
        got = cp.limit_at([p], 1, tx_start + x, conn, tx_start).amps
        want = None if x < 0 or x >= 3 * 3600 else (10 if x < first else 20)
        assert got == want, x
    assert cp.limit_at([p], 1, tx_start, conn, None).amps is None   # no transaction
    # composite asked 600 s into the transaction: the periods are shifted by 600 s
    got = cp.composite([p], 1, tx_start + 600, 4 * 3600, "A", conn, tx_start)
    want = [{"startPeriod": 0, "limit": 10.0 if first > 600 else 20.0}]
    if first > 600:
        want.append({"startPeriod": first - 600, "limit": 20.0})
    want.append({"startPeriod": 3 * 3600 - 600, "limit": 32.0})
    assert got == want


# ============================================================================ units

@EXAMPLES
@given(amps=st.integers(0, 800).map(lambda a: a / 10), phases=st.integers(1, 3),
       volts=st.sampled_from([110.0, 120.0, 127.0, 220.0, 230.0, 240.0]))
def test_amps_and_watts_round_trip(amps, phases, volts):
    watts = cp.to_unit(amps, "W", phases, volts)
    assert watts == pytest.approx(amps * volts * phases)
    assert cp.to_amps(watts, "W", phases, volts) == pytest.approx(amps, abs=1e-9)
    assert cp.to_amps(amps, "A", phases, volts) == cp.to_unit(amps, "A", phases, volts) == amps
    # through the composite: a limit in W reads back in A, and the other way round
    conn = Connection(phases=3, volts=volts, max_amps=80.0)
    in_w = profile(1, body(1, TXDEFAULT, [(0, round(watts, 1), phases)], unit="W"))
    got = cp.composite([in_w], 1, T0, 60, "A", conn)[0]
    assert got["limit"] == pytest.approx(amps, abs=0.051)
    assert got.get("numberPhases", 3) == phases
    in_a = profile(1, body(1, TXDEFAULT, [(0, amps, phases)], unit="A"))
    assert cp.composite([in_a], 1, T0, 60, "W", conn)[0]["limit"] == \
        pytest.approx(watts, abs=0.051)


@pytest.mark.parametrize("conn_phases,number_phases,watts,amps", [
    (1, None, 3680, 16.0),      # a single-phase connector: W / (230 V x 1)
    (3, None, 11040, 16.0),     # default numberPhases 3
    (3, 1, 3680, 16.0),         # the period says one phase
    (1, 3, 3680, 16.0),         # never more phases than the connector has
    (3, 2, 7360, 16.0),
])
def test_watts_use_the_fewer_of_the_periods_and_the_connectors_phases(
        conn_phases, number_phases, watts, amps):
    p = profile(1, body(1, TXDEFAULT, [(0, watts, number_phases)], unit="W"))
    conn = Connection(phases=conn_phases, volts=230.0, max_amps=32.0)
    lim = cp.limit_at([p], 1, T0, conn)
    assert lim.amps == pytest.approx(amps)
    assert lim.phases == min(number_phases or 3, conn_phases)


# ============================================================================ pinned examples

S = T0 + 10 * DAY + 0.0          # "now" of the OCTT-shaped examples


def octt(pid, purpose, stack, starts, limits, duration, valid=True, unit="A"):
    scale = 1000 if unit == "W" else 1
    return body(pid, purpose, [(s, lim * scale) for s, lim in zip(starts, limits)],
                stack=stack, start=S, duration=duration, unit=unit,
                valid_from=S if valid else None, valid_to=S + 401 if valid else None)


@pytest.mark.parametrize("x", [0, 5, 30])
def test_tc_066_combining_purposes(x):
    """OCTT TC_066 (and its 2.0.1 twin TC_K_41 with the 2025 errata): the TxProfile rules
    while it runs, the TxDefaultProfile after its 260 s, the 10 A cap throughout."""
    profiles = [profile(0, octt(1, CPMAX, 0, [0], [10], 86400, valid=False)),
                profile(1, octt(2, TXDEFAULT, 0, [0, 60, 120, 180, 260], [6, 10, 8, 15, 8], 300)),
                profile(1, octt(3, TX, 0, [0, 50, 140, 200, 240], [8, 11, 16, 6, 12], 260))]
    got = cp.composite(profiles, 1, S + x, 400, "A", Connection(), S)
    assert got == [{"startPeriod": 0, "limit": 8.0}, {"startPeriod": 50 - x, "limit": 10.0},
                   {"startPeriod": 200 - x, "limit": 6.0},
                   {"startPeriod": 240 - x, "limit": 10.0},
                   {"startPeriod": 260 - x, "limit": 8.0},
                   {"startPeriod": 300 - x, "limit": 10.0}]


@pytest.mark.parametrize("x", [0, 5, 49])
def test_tc_072_stacking(x):
    """OCTT TC_072: stack level 1 rules for its 150 s, then stack level 0 again."""
    profiles = [profile(1, octt(1, TXDEFAULT, 0, [0, 100, 200], [6, 8, 10], 400)),
                profile(1, octt(2, TXDEFAULT, 1, [0, 100], [7, 9], 150))]
    got = cp.composite(profiles, 1, S + x, 350, "A", Connection())
    assert got == [{"startPeriod": 0, "limit": 7.0}, {"startPeriod": 100 - x, "limit": 9.0},
                   {"startPeriod": 150 - x, "limit": 8.0},
                   {"startPeriod": 200 - x, "limit": 10.0}]


def test_tc_072_stacking_in_watts():
    """The same in W: limits x 1000 on three phases of 230 V."""
    profiles = [profile(1, octt(1, TXDEFAULT, 0, [0, 100, 200], [6, 8, 10], 400, unit="W")),
                profile(1, octt(2, TXDEFAULT, 1, [0, 100], [7, 9], 150, unit="W"))]
    got = cp.composite(profiles, 1, S, 350, "W", Connection())
    assert got == [{"startPeriod": 0, "limit": 7000.0}, {"startPeriod": 100, "limit": 9000.0},
                   {"startPeriod": 150, "limit": 8000.0},
                   {"startPeriod": 200, "limit": 10000.0}]


def test_nothing_installed_gives_the_connectors_rating():
    conn = Connection(phases=1, volts=230.0, max_amps=16.0)
    assert cp.composite([], 1, S, 600, "A", conn) == [
        {"startPeriod": 0, "limit": 16.0, "numberPhases": 1}]
    assert cp.composite([], 1, S, 600, "W", conn) == [
        {"startPeriod": 0, "limit": 3680.0, "numberPhases": 1}]
    assert cp.limit_at([], 1, S, conn).amps is None


def test_a_connectors_own_default_beats_connector_zeros():
    shared = profile(0, body(1, TXDEFAULT, [(0, 10)], stack=5, start=S))
    own = profile(1, body(2, TXDEFAULT, [(0, 20)], stack=0, start=S, duration=600))
    assert cp.composite([shared, own], 1, S, 1200, "A", Connection()) == [
        {"startPeriod": 0, "limit": 20.0}, {"startPeriod": 600, "limit": 10.0}]
    assert cp.composite([shared, own], 2, S, 1200, "A", Connection()) == [
        {"startPeriod": 0, "limit": 10.0}]


def test_tx_profile_overrides_a_lower_default_and_ignores_other_transactions():
    default = profile(1, body(1, TXDEFAULT, [(0, 6)], stack=8, start=S))
    mine = profile(1, body(2, TX, [(0, 20)], stack=0, start=S, tx_id=5))
    assert cp.limit_at([default, mine], 1, S, Connection(), S, 5).amps == 20
    assert cp.limit_at([default, mine], 1, S, Connection(), S, 6).amps == 6


def test_charge_point_max_caps_and_min_charging_rate_is_reported_in_amps():
    cap = profile(0, body(1, CPMAX, [(0, 12)], start=S))
    default = profile(1, body(2, TXDEFAULT, [(0, 6900)], unit="W", start=S, min_rate=4140))
    lim = cp.limit_at([cap, default], 1, S, Connection())
    assert lim.amps == pytest.approx(10.0) and lim.phases == 3
    assert lim.min_amps == pytest.approx(6.0)
    assert cp.limit_at([cap, default], 0, S, Connection()).amps == 12


def test_absolute_without_start_schedule_starts_at_valid_from_else_when_installed():
    from_valid = profile(1, body(1, TXDEFAULT, [(0, 10), (60, 20)], valid_from=S + 100),
                         installed=S)
    from_install = profile(1, body(2, TXDEFAULT, [(0, 10), (60, 20)]), installed=S)
    assert [cp.limit_at([from_valid], 1, S + d, Connection()).amps
            for d in (99, 100, 159, 160)] == [None, 10, 10, 20]
    assert [cp.limit_at([from_install], 1, S + d, Connection()).amps
            for d in (-1, 0, 59, 60)] == [None, 10, 10, 20]


def test_relative_default_without_a_transaction_starts_with_the_composite():
    p = profile(1, body(1, TXDEFAULT, [(0, 8), (300, 16)], kind="Relative"))
    assert cp.composite([p], 1, S + 1234, 600, "A", Connection()) == [
        {"startPeriod": 0, "limit": 8.0}, {"startPeriod": 300, "limit": 16.0}]


def test_next_change_finds_the_first_edge_after_now():
    p = profile(1, body(1, TXDEFAULT, [(0, 8), (300, 16)], start=S, duration=900,
                        valid_to=S + 600))
    assert cp.next_change([p], S, DAY, [None]) == S + 300
    assert cp.next_change([p], S + 300, DAY, [None]) == S + 600
    assert cp.next_change([p], S + 600, DAY, [None]) == S + 900
    assert cp.next_change([p], S + 900, DAY, [None]) is None


# ============================================================================ the documentation

DOC = Path(__file__).resolve().parents[1] / "docs" / "smart-charging.md"


def _doc_json(name):
    """The ```json block that follows the marker <!-- example: name --> in the page."""
    text = DOC.read_text()
    match = re.search(r"<!-- example: " + re.escape(name) + r" -->\s*```json\n(.*?)```",
                      text, re.S)
    assert match, f"docs/smart-charging.md has no example {name!r}"
    return json.loads(match.group(1))


def _doc_hours():
    """The hour-by-hour table: [(hh:mm, amps offered, watts)]."""
    text = DOC.read_text()
    block = text.split("<!-- example: hours -->", 1)[1].split("<!-- end -->", 1)[0]
    rows = []
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"\d\d:\d\d", cells[0]):
            rows.append((cells[0], float(cells[1]), float(cells[2])))
    return rows


def test_the_worked_example_in_the_documentation_is_what_the_charger_computes():
    conn = Connection(phases=3, volts=230.0, max_amps=32.0)
    request = _doc_json("request")
    installed = []
    for name in ("building-cap", "cheap-night", "session"):
        req = _doc_json(name)
        installed.append(profile(req["connectorId"], req["csChargingProfiles"]))
    answer = _doc_json("answer")
    start = _t(answer["scheduleStart"])
    tx_start = start                               # the session starts when it is asked
    tx_id = _doc_json("session")["csChargingProfiles"]["transactionId"]
    for unit in ("A", "W"):
        got = cp.composite(installed, request["connectorId"], start, request["duration"], unit,
                           conn, tx_start, tx_id)
        shown = answer if unit == "A" else _doc_json("answer-w")
        assert shown["chargingSchedule"]["chargingRateUnit"] == unit
        assert shown["chargingSchedule"]["duration"] == request["duration"]
        assert got == shown["chargingSchedule"]["chargingSchedulePeriod"], unit
    hours = _doc_hours()
    assert len(hours) == 24
    first = datetime.fromtimestamp(start, timezone.utc)
    for k, (clock, amps, watts) in enumerate(hours):
        t = start + k * 3600
        assert clock == datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M")
        assert first.strftime("%H:%M") == hours[0][0]
        lim = cp.limit_at(installed, 1, t, conn, tx_start, tx_id)
        offered = min(lim.amps, conn.max_amps)
        assert amps == pytest.approx(offered), clock
        assert watts == pytest.approx(offered * 230 * 3), clock


def test_the_documented_horizon_is_the_chargers():
    assert f"**seven days ({cp.COMPOSITE_HORIZON_S} s)**" in DOC.read_text()
    assert cp.COMPOSITE_HORIZON_S == 7 * DAY
