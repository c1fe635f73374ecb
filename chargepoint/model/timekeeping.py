"""Real time moved: what is scheduled by the time of day is armed again.

The clock-aligned samples, the reservations' expiry and the charging profiles' next
change follow real time; every other timer runs on the local (monotonic) clock and stays
as it is (chargepoint/model/clock.py).
"""
from __future__ import annotations

from chargepoint.model.clock import StationClock
from chargepoint.model.metering import Metering
from chargepoint.model.reservations import Reservations
from chargepoint.model.security_events import SecurityEvents
from chargepoint.model.smart_charging import SmartCharging


class TimeKeeping:
    def __init__(self, clock: StationClock, metering: Metering, reservations: Reservations,
                 smart: SmartCharging, security: SecurityEvents):
        self._clock = clock
        self._metering = metering
        self._reservations = reservations
        self._smart = smart
        self._security = security

    def set_csms_time(self, text: str) -> None:
        """Adopt the CSMS's clock (BootNotification / Heartbeat currentTime)."""
        if self._clock.set_csms_time(text):
            self._security.record("SettingSystemTime", f"set by the CSMS to {text}"[:255])
            self.moved()

    def moved(self) -> None:
        """Real time moved against local time (the clock became known, the CSMS corrected
        it, or a stepped system clock is followed)."""
        self._metering.schedule_aligned()
        self._reservations.rearm()
        self._smart.refresh()
