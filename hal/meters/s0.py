"""An S0 pulse-output meter (IEC 62053-31) on a GPIO pin, via gpiozero.

The meter closes its opto-transistor once per fixed quantum of energy (typically 1 Wh at
1000 imp/kWh). We count pulses, derive power from the spacing of the last two, and keep
the count in a small state file so a restart continues the register instead of resetting it.

Pulse validation is ours, on our clock: gpiozero's mock ignores `bounce_time`, and the
standard's rule (pulse and pause both at least ~30 ms) is judged at the edges, so no
periodic sampling is needed. The state file is written from `read()` and `close()`, never
from the edge callback, so a slow SD card cannot delay pulse timing.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from gpiozero import DigitalInputDevice

from hal.gpio import ensure_pin_factory
from hal.gpio_reopen import ThrottledOpen, fault_texts
from hal.gpio_settings import GpioSettings
from hal.interfaces import Clock, EnergyMeter, MeterReading, MeterUnavailable

log = logging.getLogger(__name__)

#: Below this, "no pulse for a while" is reported as 0 W rather than as a shrinking guess;
#: it is far below any charging power (6 A × 230 V = 1380 W).
IDLE_POWER_W = 50.0

STATE_VERSION = 1

#: Clock readings are floats: a 30 ms pulse measured as 500.03 - 500.0 must count.
_EPSILON = 1e-9


@dataclass
class S0MeterSettings:
    """`[connectors.meter]` with `type = "s0"`."""

    pin: int                          # BCM GPIO number
    pulses_per_kwh: int = 1000
    pull_up: bool = True              # True: S0- to GND, S0+ to the pin, pulse pulls it low
    #: Where the pulse count survives restarts. "" = $STATE_DIRECTORY/s0-connector-<id>.json
    #: under systemd, else var/s0-connector-<id>.json in the working directory.
    state_file: str = ""
    min_pulse_ms: int = 30            # shorter pulses or pauses are noise
    persist_interval_s: float = 60.0  # write the count at most this often...
    persist_pulses: int = 100         # ...or sooner once this many pulses are unsaved

    def __post_init__(self) -> None:
        if not 0 <= self.pin <= 27:
            raise ValueError(f"pin: BCM GPIO numbers are 0..27, got {self.pin}")
        if not 1 <= self.pulses_per_kwh <= 100_000:
            raise ValueError(f"pulses_per_kwh: must be 1..100000, got {self.pulses_per_kwh}")
        if not 1 <= self.min_pulse_ms <= 1000:
            raise ValueError(f"min_pulse_ms: must be 1..1000 ms, got {self.min_pulse_ms}")
        if not 1 <= self.persist_interval_s <= 3600:
            raise ValueError(f"persist_interval_s: must be 1..3600 s, "
                             f"got {self.persist_interval_s}")
        if not 1 <= self.persist_pulses <= 1_000_000:
            raise ValueError(f"persist_pulses: must be 1..1000000, got {self.persist_pulses}")

    def state_path(self, connector_id: int) -> Path:
        if self.state_file:
            return Path(self.state_file).expanduser()
        name = f"s0-connector-{connector_id}.json"
        state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        return Path(state_dir) / name if state_dir else Path("var") / name

    def build(self, ctx) -> "S0Meter":
        return S0Meter(self, self.state_path(ctx.connector_id), ctx.clock, gpio=ctx.gpio)


class S0Meter(EnergyMeter):
    """Counts S0 pulses; energy = pulses × 1000 / pulses_per_kwh Wh.

    A GPIO chip that cannot be opened yet (hal/gpio_reopen.py) does not stop the firmware:
    `read()` raises MeterUnavailable naming the chip and the fix, so the connector reports
    PowerMeterFailure, and the pin is tried again every `[gpio] retry_s` from `read()`;
    the saved count carries on once it opens (pulses while it was closed are not seen)."""

    measurands = frozenset({"Energy.Active.Import.Register", "Power.Active.Import"})

    def __init__(self, settings: S0MeterSettings, state_path: Path, clock: Clock,
                 gpio: Optional[GpioSettings] = None):
        self._settings = settings
        self._path = state_path
        self._clock = clock
        self._wh_per_pulse = 1000.0 / settings.pulses_per_kwh
        self._min_s = settings.min_pulse_ms / 1000.0
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._pulses = self._load()
        self._saved_pulses = self._pulses
        self._saved_at = clock()
        self._save_failing = False
        self._started = clock()
        self._pulse_times: deque[float] = deque(maxlen=2)   # leading edges of counted pulses
        self._active_since: Optional[float] = None
        self._counted = False
        self._released_at: Optional[float] = None
        self._closed = False
        self._gpio = gpio or GpioSettings()
        self._open_lock = threading.Lock()
        self._device: Optional[DigitalInputDevice] = None
        self._opener = ThrottledOpen(self._gpio.retry_s)
        self._open(clock())

    def _new_device(self) -> DigitalInputDevice:
        ensure_pin_factory(self._gpio)
        return DigitalInputDevice(self._settings.pin, pull_up=self._settings.pull_up)

    def _open(self, now: float) -> None:
        """Open the pin; a chip that cannot be opened now is remembered (and tried again
        every `retry_s`), anything else (a pin another device holds, no pin factory at
        all) raises."""
        refused_before = self._opener.refused
        try:
            device = self._opener.open(now, self._new_device)
        except Exception as exc:
            if exc is not self._opener.refused:
                raise
            if refused_before is None:
                log.error("S0 meter on GPIO %d: %s (%s); the connector reports "
                          "PowerMeterFailure, tried again every %g s", self._settings.pin,
                          exc, fault_texts(exc)[1], self._gpio.retry_s)
            return
        with self._lock:
            if device.is_active:
                self._active_since = self._clock()
        device.when_activated = self._on_activated
        device.when_deactivated = self._on_deactivated
        self._device = device
        if refused_before is not None:
            log.info("S0 meter on GPIO %d: the pin is open; counting", self._settings.pin)

    # ----------------------------------------------------------------- pulses
    def _on_activated(self) -> None:
        now = self._clock()
        with self._lock:
            if self._active_since is not None and self._released_at is not None \
                    and now - self._released_at < self._min_s - _EPSILON:
                return          # a dropout shorter than a legal pause: the same pulse goes on
            self._active_since = now
            self._counted = False

    def _on_deactivated(self) -> None:
        now = self._clock()
        with self._lock:
            self._released_at = now
            if self._active_since is None or self._counted:
                return
            if now - self._active_since >= self._min_s - _EPSILON:
                self._counted = True
                self._pulses += 1
                self._pulse_times.append(self._active_since)

    # ----------------------------------------------------------------- reading
    def read(self) -> MeterReading:
        now = self._clock()
        if self._device is None:
            with self._open_lock:
                if self._device is None and not self._closed:
                    self._open(now)
            if self._device is None:
                raise MeterUnavailable("{} ({})".format(*fault_texts(self._opener.refused)))
        with self._lock:
            pulses = self._pulses
            power = self._power(now)
            due = pulses != self._saved_pulses and (
                now - self._saved_at >= self._settings.persist_interval_s
                or pulses - self._saved_pulses >= self._settings.persist_pulses)
        if due:
            self._save(pulses, now)
        return MeterReading(time=now, energy_import_wh=pulses * self._wh_per_pulse,
                            power_w=power)

    def _power(self, now: float) -> Optional[float]:
        """From the last interval; once pulses stop, no more than the time since the last
        one allows, and 0 when that bound falls below IDLE_POWER_W. None: not known yet."""
        quantum = 3600.0 * self._wh_per_pulse          # W × s per pulse
        since = now - (self._pulse_times[-1] if self._pulse_times else self._started)
        if since > 0 and quantum / since < IDLE_POWER_W:
            return 0.0
        if len(self._pulse_times) < 2:
            return None
        interval = self._pulse_times[1] - self._pulse_times[0]
        span = max(interval, since)
        return round(quantum / span, 3) if span > 0 else None

    # ----------------------------------------------------------------- persistence
    def _load(self) -> int:
        path = self._path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            log.warning("S0 meter: no saved pulse count at %s, starting from 0", path)
            return 0
        except OSError as exc:
            log.warning("S0 meter: cannot read %s (%s), starting from 0", path, exc)
            return 0
        try:
            state = json.loads(raw.decode("utf-8"))
            pulses, ppk = state["pulses"], state["pulses_per_kwh"]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (pulses, ppk)) \
                    or pulses < 0 or ppk <= 0:
                raise ValueError("bad values")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("S0 meter: %s is corrupt (%s), starting from 0; kept as %s.corrupt",
                        path, exc, path.name)
            try:
                os.replace(path, path.with_name(path.name + ".corrupt"))
            except OSError:
                pass
            return 0
        if ppk != self._settings.pulses_per_kwh:
            converted = round(pulses * self._settings.pulses_per_kwh / ppk)
            log.warning("S0 meter: saved count was at %d imp/kWh, now %d: %d -> %d pulses "
                        "(energy kept)", ppk, self._settings.pulses_per_kwh, pulses, converted)
            return converted
        return pulses

    def _save(self, pulses: int, now: float) -> None:
        """Atomically: temp file, fsync, rename, fsync the directory (as chargepoint/durable.py
        does; written here because `hal` imports nothing of `chargepoint`)."""
        data = json.dumps({"version": STATE_VERSION, "pulses": pulses,
                           "pulses_per_kwh": self._settings.pulses_per_kwh}).encode()
        path = self._path
        tmp = path.with_name(path.name + ".tmp")
        with self._save_lock:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, data)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
                dir_fd = os.open(path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            except OSError as exc:
                if not self._save_failing:
                    log.warning("S0 meter: cannot save the pulse count to %s: %s", path, exc)
                self._save_failing = True
                return
            if self._save_failing:
                log.info("S0 meter: pulse count saved to %s again", path)
            self._save_failing = False
            with self._lock:
                self._saved_pulses = pulses
                self._saved_at = now

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._open_lock:
            if self._device is not None:
                self._device.close()
        with self._lock:
            pulses, dirty = self._pulses, self._pulses != self._saved_pulses
        if dirty:
            self._save(pulses, self._clock())
