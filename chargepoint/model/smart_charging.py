"""Smart charging: the installed charging profiles, and the limit they put on the pilot.

Profiles are checked against the profile's rules and this charger's limits
(`ChargeProfileMaxStackLevel`, `ChargingScheduleMaxPeriods`,
`MaxChargingProfilesInstalled`, `ChargingScheduleAllowedChargingRateUnit`), stored in
SQLite (they survive restarts; a TxProfile ends with its transaction), and merged by
the pure functions of chargepoint/model/charging_profiles.py. This module owns the
`charging_profiles` table; SetChargingProfile, ClearChargingProfile and
GetCompositeSchedule are answered in chargepoint/handlers/smart_charging.py.

Enforcement: `limit_amps(connector)` is what `Connector.offered_current` obeys (never
above the rating or the cable). A timer fires at the next instant any limit can
change, and every change of profiles or transactions refreshes the outputs, so the
pilot follows within the same loop turn. A ChargePointMaxProfile caps the whole
charger: its current is shared equally between the connectors that are charging.
Below 6 A (or the schedule's minChargingRate) nothing is offered: SuspendedEVSE,
until the limit rises again.
"""
from __future__ import annotations

import json
import logging
from typing import Optional

from chargepoint.model import charging_profiles as cp
from chargepoint.model.clock import StationClock
from chargepoint.model.connector import Connector, Connectors
from chargepoint.model.meter_reads import READ_TIMEOUT_S
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.store import Store
from chargepoint.timers import Timers

log = logging.getLogger("chargepoint.smart_charging")

#: How far ahead the enforcement timer looks for the next change.
HORIZON_S = 8 * cp.DAY
MIN_PILOT_A = 6.0
_UNITS = {"A": "Current", "W": "Power"}


class SmartCharging:
    """The installed profiles and the limits they set. Loop thread only."""

    def __init__(self, keys: OcppKeys, store: Store, clock: StationClock, timers: Timers,
                 connectors: Connectors, response_timeout_s: float):
        self._keys = keys
        self._store = store
        self._clock = clock
        self._timers = timers
        self._connectors = connectors
        self._response_timeout_s = response_timeout_s
        self.profiles: list[cp.Profile] = []
        #: connector id -> (idTag, TxProfile, deadline) from a RemoteStartTransaction: bound
        #: to that idTag's transaction if it begins before the remote start can have lapsed.
        self.remote_start_profiles: dict[int, tuple[str, dict, float]] = {}
        for cid, body, installed in store.execute(
                "SELECT connector_id, body, installed FROM charging_profiles "
                "WHERE tx_local IS NULL ORDER BY profile_id").fetchall():
            self.profiles.append(cp.Profile.from_ocpp(cid, json.loads(body), installed))
        # A TxProfile ends with its transaction, and no transaction outlives a restart.
        store.execute("DELETE FROM charging_profiles WHERE tx_local IS NOT NULL")

    # -- facts for the merge
    def connection(self, conn: Connector) -> cp.Connection:
        return cp.Connection(conn.info.phases, conn.info.nominal_voltage_v,
                             conn.info.max_current_a)

    def _tx(self, conn: Connector) -> tuple[Optional[float], Optional[int]]:
        tx = conn.tx
        if tx is None:
            return None, None
        # Elapsed local time is what a Relative profile counts, whatever the clock did.
        return self._clock.utc(tx.started), tx.transaction_id

    def now(self) -> float:
        return self._clock.station_time()

    # -- enforcement
    def limit_amps(self, conn: Connector) -> Optional[float]:
        """Current the profiles allow on `conn` now (None: no limit; 0: nothing)."""
        if not self.profiles:
            return None
        tx_start, tx_id = self._tx(conn)
        lim = cp.limit_at([p for p in self.profiles if p.purpose != "ChargePointMaxProfile"],
                          conn.id, self.now(), self.connection(conn), tx_start, tx_id)
        amps = lim.amps
        charger = cp.limit_at([p for p in self.profiles if p.purpose == "ChargePointMaxProfile"],
                              0, self.now(), self.connection(conn), tx_start, tx_id)
        if charger.amps is not None:
            sharing = max(1, sum(1 for c in self._connectors.values()
                                 if c.id != 0 and c.tx is not None and not c.tx.stopping))
            share = charger.amps / sharing
            amps = share if amps is None else min(amps, share)
        if amps is None:
            return None
        floor = max(MIN_PILOT_A, lim.min_amps or 0.0)
        return amps if amps >= floor else 0.0

    def refresh(self) -> None:
        """Re-apply every connector's limit and arm the timer for the next change."""
        for conn in self._connectors.outlets():
            conn.changed()
        if not self.profiles:
            self._timers.cancel("smart-charging")
            return
        starts = [self._tx(c)[0] for c in self._connectors.values()]
        nxt = cp.next_change(self.profiles, self.now(), HORIZON_S, starts)
        if nxt is None:                 # nothing within the horizon: look again at its end
            nxt = self.now() + HORIZON_S
        self._timers.set("smart-charging", self._clock.to_local(nxt), self.refresh)

    # -- changes
    def install(self, profile: cp.Profile, tx_local: Optional[int] = None) -> None:
        replaced = [p for p in self.profiles if p.profile_id == profile.profile_id or (
            p.stack_level == profile.stack_level and p.purpose == profile.purpose
            and p.connector_id == profile.connector_id)]
        with self._store.transaction():
            for old in replaced:
                self._store.execute("DELETE FROM charging_profiles WHERE profile_id=?",
                                      (old.profile_id,))
            self._store.execute(
                "INSERT INTO charging_profiles(profile_id, connector_id, body, installed, "
                "tx_local) VALUES(?, ?, ?, ?, ?)",
                (profile.profile_id, profile.connector_id,
                 json.dumps(profile.raw, separators=(",", ":")), profile.installed, tx_local))
            self._store.on_commit(lambda: self._replace(replaced, [profile]))

    def _replace(self, old: list[cp.Profile], new: list[cp.Profile]) -> None:
        """The profiles in memory follow a committed change (never a failed one)."""
        self.profiles = [p for p in self.profiles if p not in old] + new
        self.refresh()

    def clear(self, doomed: list[cp.Profile]) -> None:
        if not doomed:
            return
        with self._store.transaction():
            for p in doomed:
                self._store.execute("DELETE FROM charging_profiles WHERE profile_id=?",
                                      (p.profile_id,))
            self._store.on_commit(lambda: self._replace(doomed, []))

    def transaction_ended(self, conn: Connector) -> None:
        self.clear([p for p in self.profiles
                    if p.purpose == "TxProfile" and p.connector_id == conn.id])
        self.refresh()

    def transaction_started(self, conn: Connector) -> None:
        entry = self.remote_start_profiles.pop(conn.id, None)
        if entry is not None and conn.tx is not None and conn.tx.id_tag == entry[0] \
                and self._clock.now <= entry[2]:
            body = {**entry[1]}
            if conn.tx.transaction_id is not None:
                body["transactionId"] = conn.tx.transaction_id
            self.install(cp.Profile.from_ocpp(conn.id, body, self.now()), conn.tx.local_id)
        else:
            self.refresh()

    # -- checks
    def why_invalid(self, cid: int, body: dict, running: bool = True) -> Optional[str]:
        """Why `body` cannot be installed on `cid` (None: it can). `running=False` leaves out
        the running-transaction rule, for a TxProfile that comes with a remote start."""
        purpose = body["chargingProfilePurpose"]
        sched = body["chargingSchedule"]
        periods = sched["chargingSchedulePeriod"]
        if purpose == "ChargePointMaxProfile" and cid != 0:
            return "a ChargePointMaxProfile belongs on connector 0"
        if purpose == "TxProfile" and running:
            conn = self._connectors.get(cid)
            if cid == 0 or conn is None or conn.tx is None or conn.tx.stopping:
                return "a TxProfile needs a running transaction on its connector"
            wanted = body.get("transactionId")
            if wanted is not None and wanted != conn.tx.transaction_id:
                return f"transactionId {wanted} is not the connector's transaction"
        if body["stackLevel"] < 0:
            return "a negative stackLevel"
        if body["stackLevel"] > self._keys.int("ChargeProfileMaxStackLevel"):
            return f"stackLevel above ChargeProfileMaxStackLevel ({self._keys.int('ChargeProfileMaxStackLevel')})"
        if not periods:
            return "no chargingSchedulePeriod"
        if len(periods) > self._keys.int("ChargingScheduleMaxPeriods"):
            return f"more periods than ChargingScheduleMaxPeriods ({self._keys.int('ChargingScheduleMaxPeriods')})"
        if _UNITS[sched["chargingRateUnit"]] not in self._keys.list("ChargingScheduleAllowedChargingRateUnit"):
            return f"unit {sched['chargingRateUnit']} is not allowed"
        starts = [p["startPeriod"] for p in periods]
        if starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
            return "periods must start at 0 and increase"
        if any(p["limit"] < 0 for p in periods):
            return "a negative limit"
        if any(p.get("numberPhases") not in (None, 1, 2, 3) for p in periods):
            return "numberPhases must be 1, 2 or 3"
        if sched.get("duration") is not None and sched["duration"] < 0:
            return "a negative duration"
        if body["chargingProfileKind"] == "Recurring" and (
                not body.get("recurrencyKind") or sched.get("startSchedule") is None):
            return "a Recurring profile needs recurrencyKind and startSchedule"
        try:
            cp.parse_time(body.get("validFrom"))
            cp.parse_time(body.get("validTo"))
            cp.parse_time(sched.get("startSchedule"))
        except ValueError as exc:
            return f"unreadable date: {exc}"
        kept = [p for p in self.profiles if not (p.profile_id == body["chargingProfileId"] or (
            p.stack_level == body["stackLevel"] and p.purpose == purpose
            and p.connector_id == cid))]
        if len(kept) >= self._keys.int("MaxChargingProfilesInstalled"):
            return "MaxChargingProfilesInstalled reached"
        return None

    def remote_start_profile(self, connector_id: int, id_tag: str, body: dict) -> bool:
        """RemoteStartTransaction's TxProfile: checked now, installed when the transaction
        starts (`transaction_started`). False: the request is to be rejected."""
        if body.get("transactionId") is not None:
            return False               # there is no transaction yet to match
        why = self.why_invalid(connector_id, body, running=False)
        if why:
            log.warning("RemoteStartTransaction's TxProfile %s rejected: %s",
                        body["chargingProfileId"], why)
            return False
        # Authorization, then ConnectionTimeOut for the plug, then the meter's start
        # reading: a session that begins later is not the one this remote start asked for.
        lapse = (self._response_timeout_s + self._keys.int("ConnectionTimeOut")
                 + READ_TIMEOUT_S)
        self.remote_start_profiles[connector_id] = (id_tag, body, self._clock.now + lapse)
        return True

    def matching(self, pid: Optional[int], cid: Optional[int], purpose: Optional[str],
                 level: Optional[int]) -> list[cp.Profile]:
        """The profiles a ClearChargingProfile with these criteria removes."""
        return [p for p in self.profiles
                if (pid is None or p.profile_id == pid)
                and (pid is not None or ((cid is None or p.connector_id == cid)
                                         and (purpose is None or p.purpose == purpose)
                                         and (level is None or p.stack_level == level)))]

    def composite(self, cid: int, duration: int, unit: str) -> tuple[float, cp.Schedule]:
        """GetCompositeSchedule of known connector `cid`: (start, result).

        At most ChargingScheduleMaxPeriods periods, as in any ChargingSchedule (OCPP 1.6,
        9.4), and at most COMPOSITE_HORIZON_S ahead: the work stays bounded whatever the
        duration asked, and the result's `duration` says how far it reaches."""
        start = cp.whole_second(self._clock.station_time())     # as every profile's start
        connectors = self._connectors
        if cid == 0:
            info = cp.Connection(max(c.info.phases for c in connectors.values()),
                                 connectors[1].info.nominal_voltage_v if 1 in connectors
                                 else 230.0,
                                 sum(c.info.max_current_a for c in connectors.outlets()))
            tx_start, tx_id = None, None
        else:
            info = self.connection(connectors[cid])
            tx_start, tx_id = self._tx(connectors[cid])
        return start, cp.schedule(self.profiles, cid, start, duration, unit, info, tx_start,
                                  tx_id, max_periods=self._keys.int("ChargingScheduleMaxPeriods"))
