"""Control pilot on a Raspberry Pi: 1 kHz hardware PWM through the kernel's sysfs
PWM interface, CP and PP read back through an MCP3008 ADC on SPI.

gpiozero's PWM on the default lgpio factory is software-timed and too jittery
for the pilot, hence sysfs (`dtoverlay=pwm,pin=18,func=2`). The ADC is not
synchronised with the PWM, so each poll takes many samples: the maximum is the
high plateau (the state), the minimum the low plateau (the EV's diode).

Failures never raise out of the sampling thread: a PWM write or ADC read that
fails becomes `HardwareFault(EV_COMMUNICATION_ERROR)` and is retried on the
next poll, clearing the fault when the hardware answers again.
"""
from __future__ import annotations

import gc
import logging
import math
import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from hal.debounce import Debouncer
from hal.events import CableDetected, FaultCode, HardwareFault, PilotStateChanged
from hal.gpio_reopen import ThrottledOpen, fault_texts
from hal.gpio_settings import GpioSettings
from hal.interfaces import (Clock, Emit, EVInterface, HardwareError, PilotState,
                            duty_cycle_for_current)
from hal.pilot_classify import (DEFAULT_CP_OFFSET, DEFAULT_CP_SCALE, ampacity_for_ohms,
                                classify_cp, cp_volts, diode_present, pp_ohms)

log = logging.getLogger(__name__)

PERIOD_NS = 1_000_000
"""1 kHz, as IEC 61851-1 requires."""

PP_SAMPLES = 4
"""PP is DC: a few samples and their median suffice."""


# --------------------------------------------------------------------------- sysfs PWM

def write_plan(cur_period: Optional[int], cur_duty: Optional[int],
               period: int, duty: int) -> list[tuple[str, int]]:
    """The writes that take a sysfs PWM channel to (period, duty).

    The kernel rejects (EINVAL) a duty_cycle above the current period and a
    period below the current duty_cycle, so the order depends on where the
    channel stands. Unknown current values: go through duty_cycle = 0, which
    every period accepts.
    """
    if not 0 <= duty <= period:
        raise ValueError(f"duty {duty} ns outside 0..{period} ns")
    if cur_period is None or cur_duty is None:
        return [("duty_cycle", 0), ("period", period), ("duty_cycle", duty)]
    if cur_period == period:
        return [] if cur_duty == duty else [("duty_cycle", duty)]
    if period >= cur_duty:
        steps = [("period", period)]
        return steps if duty == cur_duty else steps + [("duty_cycle", duty)]
    return [("duty_cycle", duty), ("period", period)]


class SysfsPwm:
    """One channel of /sys/class/pwm/pwmchipN: export, period, duty_cycle, enable.

    Raises HardwareError when the chip is missing (overlay not loaded), the
    channel does not appear after export, or a write fails.
    """

    def __init__(self, root: str | os.PathLike = "/sys/class/pwm", chip: int = 0,
                 channel: int = 0, export_timeout_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep,
                 monotonic: Callable[[], float] = time.monotonic):
        self.chip_dir = Path(root) / f"pwmchip{chip}"
        self.channel_dir = self.chip_dir / f"pwm{channel}"
        self.channel = channel
        self._export_timeout_s = export_timeout_s
        self._sleep = sleep
        self._monotonic = monotonic

    def ensure_exported(self) -> None:
        """Export the channel unless it is; wait (bounded) for the kernel to create it."""
        if self.channel_dir.is_dir():
            return
        if not self.chip_dir.is_dir():
            raise HardwareError(f"{self.chip_dir} does not exist (is dtoverlay=pwm loaded?)")
        try:
            (self.chip_dir / "export").write_text(f"{self.channel}\n")
        except OSError as exc:
            # EBUSY: exported meanwhile by someone else; the wait below settles it.
            if not self.channel_dir.is_dir():
                log.debug("export of %s failed: %s", self.channel_dir, exc)
        deadline = self._monotonic() + self._export_timeout_s
        while not (self.channel_dir / "period").exists():
            if self._monotonic() >= deadline:
                raise HardwareError(f"{self.channel_dir} did not appear after export")
            self._sleep(0.005)

    def _read_int(self, name: str) -> Optional[int]:
        try:
            return int((self.channel_dir / name).read_text().strip())
        except (OSError, ValueError):
            return None

    def _write(self, name: str, value: int) -> None:
        # udev may still be granting write permission right after export: retry briefly.
        deadline = self._monotonic() + self._export_timeout_s
        while True:
            try:
                (self.channel_dir / name).write_text(f"{value}\n")
                return
            except PermissionError as exc:
                if self._monotonic() >= deadline:
                    raise HardwareError(f"cannot write {self.channel_dir / name}: {exc}") from exc
                self._sleep(0.005)
            except OSError as exc:
                raise HardwareError(f"cannot write {value} to {self.channel_dir / name}: "
                                    f"{exc}") from exc

    def apply(self, period_ns: int, duty_ns: int) -> None:
        """Set period and duty cycle (in a kernel-valid order), then enable."""
        self.ensure_exported()
        steps = write_plan(self._read_int("period"), self._read_int("duty_cycle"),
                           period_ns, duty_ns)
        for name, value in steps:
            self._write(name, value)
        if self._read_int("enable") != 1:
            self._write("enable", 1)


# --------------------------------------------------------------------------- faults

class _FaultLatch:
    """Several causes share one fault code: active while any cause is."""

    def __init__(self, emit: Emit, connector_id: int, code: FaultCode):
        self._emit = emit
        self._connector_id = connector_id
        self._code = code
        self._causes: dict[str, str] = {}

    def set(self, cause: str, info: str) -> bool:
        """Mark `cause` active; True when it was not already (worth a log line)."""
        if cause in self._causes:
            return False
        self._causes[cause] = info
        # info is a short fixed text: it becomes StatusNotification.info
        # (at most 50 characters); the details go to the log.
        self._emit(HardwareFault(self._connector_id, self._code, True, info[:50]))
        return True

    def clear(self, cause: str) -> None:
        if self._causes.pop(cause, None) is not None and not self._causes:
            self._emit(HardwareFault(self._connector_id, self._code, False))

    @property
    def active(self) -> frozenset[str]:
        return frozenset(self._causes)


# --------------------------------------------------------------------------- pilot

@dataclass
class PwmAdcPilotSettings:
    """`[connectors.pilot] type = "pwm_adc"`: sysfs hardware PWM + MCP3008."""

    pwm_chip: int = 0
    pwm_channel: int = 0
    sysfs_root: str = "/sys/class/pwm"
    adc_channel_cp: int = 0
    adc_channel_pp: Optional[int] = None
    spi_port: int = 0
    spi_device: int = 0
    cp_scale: float = DEFAULT_CP_SCALE
    cp_offset: float = DEFAULT_CP_OFFSET
    samples_per_poll: int = 64
    poll_interval_ms: int = 20
    pp_pullup_ohms: float = 1000.0
    pp_pullup_volts: float = 3.3
    adc_vref_volts: float = 3.3
    inverted: bool = False
    hold_ms: int = 250
    hold_to_a_ms: int = 25
    hold_leaving_cd_ms: int = 40
    export_timeout_ms: int = 1000

    def __post_init__(self):
        for name in ("pwm_chip", "pwm_channel", "spi_port", "spi_device"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative")
        for name in ("adc_channel_cp", "adc_channel_pp"):
            ch = getattr(self, name)
            if ch is not None and not 0 <= ch <= 7:
                raise ValueError(f"{name}: the MCP3008 has channels 0..7, got {ch}")
        if self.adc_channel_pp == self.adc_channel_cp:
            raise ValueError("adc_channel_pp: must differ from adc_channel_cp")
        if not math.isfinite(self.cp_scale) or self.cp_scale == 0:
            raise ValueError("cp_scale: must be a non-zero number")
        if not math.isfinite(self.cp_offset):
            raise ValueError("cp_offset: must be a finite number")
        if not 2 <= self.samples_per_poll <= 10_000:
            raise ValueError("samples_per_poll: must be 2..10000 (the PWM needs many samples)")
        if not 1 <= self.poll_interval_ms <= 1000:
            raise ValueError("poll_interval_ms: must be 1..1000")
        for name in ("pp_pullup_ohms", "pp_pullup_volts", "adc_vref_volts"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be positive")
        for name in ("hold_ms", "hold_to_a_ms", "hold_leaving_cd_ms"):
            if not 0 <= getattr(self, name) <= 10_000:
                raise ValueError(f"{name}: must be 0..10000")
        if self.export_timeout_ms <= 0:
            raise ValueError("export_timeout_ms: must be positive")

    def build(self, ctx) -> "PwmAdcPilot":
        return PwmAdcPilot(self, ctx.connector_id, ctx.emit, ctx.clock, gpio=ctx.gpio)


class PwmAdcPilot(EVInterface):
    """Pilot of one connector: offers current by PWM duty, reports debounced states.

    `poll(now)` does one sampling round and is what tests call; `start()` runs
    it every `poll_interval_ms` on a daemon thread. The pilot stays at 100 %
    duty ("not allowed") until a current is offered and after `close()`.
    """

    def __init__(self, settings: PwmAdcPilotSettings, connector_id: int, emit: Emit,
                 clock: Clock, gpio: Optional[GpioSettings] = None):
        self._s = settings
        self._gpio = gpio or GpioSettings()
        #: The ADC's pin factory, tried again every `[gpio] retry_s` (not every poll) once
        #: its GPIO chip refused (hal/gpio_reopen.py).
        self._factory = ThrottledOpen(self._gpio.retry_s)
        self._cid = connector_id
        self._emit = emit
        self._clock = clock
        self._pwm = SysfsPwm(settings.sysfs_root, settings.pwm_chip, settings.pwm_channel,
                             export_timeout_s=settings.export_timeout_ms / 1000)
        self._adcs: dict[int, Any] = {}
        self._faults = _FaultLatch(emit, connector_id, FaultCode.EV_COMMUNICATION_ERROR)
        self._lock = threading.RLock()
        self._duty_ns = PERIOD_NS            # logical (before inversion): 100 % = not allowed
        self._pwm_ok = False
        self._state: Optional[PilotState] = None     # None until the first valid sample
        hold = settings.hold_ms / 1000
        # Entering a state takes hold_ms; leaving C or D (the EV stops drawing,
        # the contactor must open within 100 ms) and going to A are quick.
        leave = settings.hold_leaving_cd_ms / 1000
        self._state_db: Debouncer[Optional[PilotState]] = Debouncer(
            hold, {PilotState.A: settings.hold_to_a_ms / 1000},
            hold_from={PilotState.C: leave, PilotState.D: leave})
        self._diode_db: Debouncer[bool] = Debouncer(hold, initial=False)
        self._pp_db: Debouncer[Optional[float]] = Debouncer(hold)
        self._ampacity: Optional[float] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------ PWM

    def _mcp3008(self, channel: int):
        from gpiozero import MCP3008   # imported here: desktops never need gpiozero
        return MCP3008(channel=channel, port=self._s.spi_port, device=self._s.spi_device,
                       max_voltage=self._s.adc_vref_volts)

    def set_max_current(self, amps: Optional[float]) -> None:
        """Offer `amps` (>= 6 A) as PWM duty; None means 100 % duty: a steady
        +12 V, "charging not allowed". Below 6 A is a caller error (ValueError),
        and the pilot is set to "not allowed" before raising."""
        with self._lock:
            if amps is None:
                self._duty_ns = PERIOD_NS
            else:
                try:
                    percent = duty_cycle_for_current(amps)
                except ValueError:
                    self._duty_ns = PERIOD_NS
                    self._apply_pwm()
                    raise
                self._duty_ns = round(PERIOD_NS * percent / 100)
            self._apply_pwm()

    def _apply_pwm(self) -> None:
        duty = PERIOD_NS - self._duty_ns if self._s.inverted else self._duty_ns
        try:
            self._pwm.apply(PERIOD_NS, duty)
        except (HardwareError, OSError) as exc:
            self._pwm_ok = False
            if self._faults.set("pwm", "pilot PWM write failed"):
                log.warning("pilot PWM on connector %d: %s", self._cid, exc)
        else:
            self._pwm_ok = True
            self._faults.clear("pwm")

    def _pwm_running(self) -> bool:
        return self._pwm_ok and 0 < self._duty_ns < PERIOD_NS

    # ------------------------------------------------------------------ sampling

    def _adc(self, channel: int, now: float):
        adc = self._adcs.get(channel)
        if adc is None:
            from hal.gpio import ensure_pin_factory  # here: desktops never need gpiozero
            self._factory.open(now, lambda: ensure_pin_factory(self._gpio))
            adc = self._adcs[channel] = self._mcp3008(channel)
        return adc

    def _close_adcs(self) -> None:
        for adc in self._adcs.values():
            try:
                adc.close()
            except Exception:
                log.debug("closing ADC channel failed", exc_info=True)
        self._adcs.clear()
        # gpiozero's shared SPI objects sit in reference cycles, and when the
        # cycle collector finalises a closed one later, its __del__ unregisters
        # whichever SPI object holds the same key by then: the one we reopen.
        # Finalise them now, while nothing has replaced them.
        gc.collect()

    def poll(self, now: float) -> None:
        """One sampling round at time `now`: CP state, diode check, PP ampacity."""
        with self._lock:
            if not self._pwm_ok:
                self._apply_pwm()
            try:
                adc = self._adc(self._s.adc_channel_cp, now)
                cp = [adc.value for _ in range(self._s.samples_per_poll)]
                pp = None
                if self._s.adc_channel_pp is not None:
                    adc_pp = self._adc(self._s.adc_channel_pp, now)
                    pp = statistics.median(adc_pp.value for _ in range(PP_SAMPLES))
            except Exception as exc:      # SPI errors differ per pin factory
                self._close_adcs()        # reopened on the next poll
                if exc is self._factory.refused:
                    info, fix = fault_texts(exc)
                    if self._faults.set("chip", info):
                        log.error("pilot ADC on connector %d: %s (%s); the connector "
                                  "reports EVCommunicationError, tried again every %g s",
                                  self._cid, exc, fix, self._gpio.retry_s)
                    self._faults.clear("adc")
                elif self._faults.set("adc", "pilot ADC read failed"):
                    log.warning("pilot ADC on connector %d: %s", self._cid, exc)
                return
            self._faults.clear("chip")
            self._faults.clear("adc")
            self._evaluate_cp(cp, now)
            if pp is not None:
                self._evaluate_pp(pp, now)

    def _evaluate_cp(self, fractions: list[float], now: float) -> None:
        high = cp_volts(max(fractions), self._s.cp_scale, self._s.cp_offset)
        low = cp_volts(min(fractions), self._s.cp_scale, self._s.cp_offset)
        raw = classify_cp(high)
        if self._state_db.changed(raw, now):
            stable = self._state_db.value
            if stable is None:
                self._faults.set("cp", f"pilot at {high:.1f} V matches no state")
            else:
                self._faults.clear("cp")
                if stable != self._state:
                    self._state = stable
                    self._emit(PilotStateChanged(self._cid, stable))
        missing = (self._pwm_running() and raw is not None and raw.vehicle_connected
                   and not diode_present(low))
        if self._diode_db.changed(missing, now):
            if missing:
                self._faults.set("diode", f"EV diode missing (low {low:.1f} V)")
            else:
                self._faults.clear("diode")

    def _evaluate_pp(self, fraction: float, now: float) -> None:
        ohms = pp_ohms(fraction, self._s.pp_pullup_ohms, self._s.pp_pullup_volts,
                       self._s.adc_vref_volts)
        if self._pp_db.changed(ampacity_for_ohms(ohms), now):
            self._ampacity = self._pp_db.value
            self._emit(CableDetected(self._cid, self._ampacity))

    # ------------------------------------------------------------------ EVInterface

    def state(self) -> PilotState:
        """The debounced state (A until the first valid sample)."""
        return self._state if self._state is not None else PilotState.A

    def cable_ampacity(self) -> Optional[float]:
        return self._ampacity

    @property
    def fault_causes(self) -> frozenset[str]:
        """Active causes of the EV communication fault: pwm, adc, cp, diode, poll."""
        return self._faults.active

    def start(self) -> None:
        """Set the PWM, report the initial state and begin sampling on a thread."""
        with self._lock:
            if self._thread is not None:
                return
            self._apply_pwm()
            self._stop.clear()
            self._safe_poll()
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"pilot-{self._cid}")
            self._thread.start()

    def _run(self) -> None:
        interval = self._s.poll_interval_ms / 1000
        while not self._stop.wait(interval):
            self._safe_poll()

    def _safe_poll(self) -> None:
        try:
            self.poll(self._clock())
        except Exception:
            log.exception("pilot sampling on connector %d failed", self._cid)
            with self._lock:
                self._faults.set("poll", "pilot sampling failed")
        else:
            with self._lock:
                self._faults.clear("poll")

    def close(self) -> None:
        """Stop sampling, leave the pilot at 100 % duty ("not allowed"), release the ADC.

        The PWM channel stays exported and enabled: unexporting would stop the
        PWM, and a stopped output is -12 V or 0 V depending on the board."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=2)
        with self._lock:
            self._duty_ns = PERIOD_NS
            self._apply_pwm()
            self._close_adcs()
