"""Contactor, connector lock and status LED on Raspberry Pi GPIO pins, via gpiozero.

Pins are BCM numbers. Feedback inputs (the contactor's mirror contact, the
lock's position switch) are debounced by `hal.debounce` rather than gpiozero's
`bounce_time`, and supervised against a clock, so every timing rule is testable
with gpiozero's mock pins and a fake clock. A contact that disagrees with the
command is reported as a `HardwareFault` and cleared when it agrees again;
nothing here raises out of a supervision loop.
"""
from __future__ import annotations

import contextlib
import glob
import grp
import importlib.util
import logging
import os
import pwd
import shutil
import sys
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Mapping, Optional

from gpiozero import LED, RGBLED, DigitalInputDevice, DigitalOutputDevice, Device
from gpiozero.exc import (BadPinFactory, GPIOZeroError, NativePinFactoryFallback,
                          PinFactoryFallback)

from hal.debounce import Debouncer
from hal.events import FaultCode, HardwareFault
from hal.gpio_reopen import open_or_stand_in
from hal.gpio_settings import (FIX_MISSING, FIX_PERMISSION, GpioChipUnavailable, GpioSettings,
                               GpioUnavailable, fix_for, max_pin)
from hal.interfaces import (Clock, ConnectorLock, Contactor, Emit, Indicator, IndicatorColour)
from hal.settings import SettingsError

log = logging.getLogger(__name__)

Pull = Literal["none", "up", "down"]


# --------------------------------------------------------------------------- pin factory

#: The GPIO character devices lgpio opens (gpiozero's default pin factory on a Pi).
GPIO_CHIPS = "/dev/gpiochip*"
#: How to install what gpiozero needs on a Raspberry Pi: the `[pi]` extra (lgpio).
PI_EXTRA = "pip install 'chargepoint[pi]'"
#: A udev rule giving the group gpio the GPIO chips (Raspberry Pi OS ships one like it).
GPIO_UDEV_RULE = 'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", GROUP="gpio", MODE="0660"'
#: gpiozero's default factories found the chips and lgpio, yet refused: no Pi's revision.
NOT_A_PI = ("gpiozero's pin factories look for a Raspberry Pi's revision and found none: on "
            "another board, drive a GPIO chip's lines with [gpio] pin_factory = "
            "\"lgpio-chip\" and chip = \"/dev/gpiochipN\" (docs/hardware.md)")


#: Loading a pin factory is not thread-safe in gpiozero; devices tried again share one.
_factory_lock = threading.Lock()


def ensure_pin_factory(settings: Optional[GpioSettings] = None) -> str:
    """Load the pin factory `settings` choose unless one is set (GPIOZERO_PIN_FACTORY,
    when set, wins, as in gpiozero).

    gpiozero alone tries four factories, warns about each failure and ends with
    BadPinFactory, which names no cause; here the failures become one GpioUnavailable
    naming the missing package or the GPIO chip that cannot be opened (a
    GpioChipUnavailable). Returns a warning when gpiozero fell back to its experimental
    native factory, else ""."""
    with _factory_lock:
        if Device.pin_factory is not None:
            return ""
        settings = settings or GpioSettings()
        with _lgpio_can_start():
            if settings.pin_factory == "lgpio-chip" \
                    and "GPIOZERO_PIN_FACTORY" not in os.environ:
                Device.pin_factory = _chip_factory(settings.chip)
                return ""
            return _default_pin_factory()


@contextlib.contextmanager
def _lgpio_can_start() -> Iterator[None]:
    """lgpio, when first imported, makes its notification FIFO in $LG_WD (else the working
    directory) and opens it from the working directory: `chargepoint check` run as the
    service's user from / could do neither, and a run by hand would leave it behind. The
    service has both in /run/chargepoint; any other first import happens in a private
    directory, left (and removed: the FIFO stays open) at once."""
    try:
        here = os.getcwd()
    except OSError:
        here = ""
    if "lgpio" in sys.modules or (here and os.environ.get("LG_WD") == here):
        yield
        return
    workdir = tempfile.mkdtemp(prefix="chargepoint-lgpio-")
    before = os.environ.get("LG_WD")
    os.environ["LG_WD"] = workdir
    os.chdir(workdir)
    try:
        yield
    finally:
        os.chdir(here or "/")
        if before is None:
            os.environ.pop("LG_WD", None)
        else:
            os.environ["LG_WD"] = before
        shutil.rmtree(workdir, ignore_errors=True)


def _chip_factory(chip: str):
    """gpiozero's lgpio pins on `chip`, on any board (hal/gpio_chip.py)."""
    try:
        from hal.gpio_chip import ChipFactory  # lazy: lgpio, only where chosen
    except ImportError:
        raise GpioUnavailable(f"[gpio] pin_factory = \"lgpio-chip\" needs the lgpio "
                              f"package: {PI_EXTRA}") from None
    try:
        return ChipFactory(chip)
    except Exception as exc:          # lgpio.error: "can not open gpiochip"
        problem = _chip_problem(chip)
        fix = (FIX_MISSING if not os.path.exists(chip) else FIX_PERMISSION if problem
               else "GpioChipUnavailable")
        raise GpioChipUnavailable("cannot open the GPIO chip: " + (problem or f"{chip}: {exc}"),
                                  chip, fix) from None


def _default_pin_factory() -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PinFactoryFallback)
        warnings.simplefilter("always", NativePinFactoryFallback)
        try:
            Device.ensure_pin_factory()
        except (BadPinFactory, ImportError, OSError, RuntimeError) as exc:
            requested = os.environ.get("GPIOZERO_PIN_FACTORY")
            if requested:
                reasons = [f"GPIOZERO_PIN_FACTORY={requested}: {exc}"]
                closed = exc.filename if isinstance(exc, OSError) and exc.filename else ""
                fix = fix_for(exc) if closed else ""
            else:
                reasons = pin_factory_problems() or [NOT_A_PI, *_fallbacks(caught)]
                closed, fix = _closed_chip_only(reasons), FIX_PERMISSION
            message = "no GPIO pin factory can be loaded: " + "; ".join(reasons)
            if closed:
                raise GpioChipUnavailable(message, closed, fix) from None
            raise GpioUnavailable(message) from None
    if any(issubclass(w.category, NativePinFactoryFallback) for w in caught):
        return ("gpiozero fell back to its experimental native pin factory (no hardware PWM "
                "or SPI): " + "; ".join(pin_factory_problems() or _fallbacks(caught)))
    return ""


def _fallbacks(caught: list) -> list[str]:
    """gpiozero's own words for each factory it could not load."""
    return [str(w.message) for w in caught if issubclass(w.category, PinFactoryFallback)]


def release_pin_factory() -> None:
    """Close the loaded pin factory (a check that loaded it only to see that it can)."""
    factory, Device.pin_factory = Device.pin_factory, None
    if factory is not None:
        factory.close()


def pin_factory_problems() -> list[str]:
    """What keeps gpiozero's default pin factory (lgpio) from loading here, each with
    its fix: the package missing, no GPIO chip, or chips this user cannot open."""
    found = []
    if importlib.util.find_spec("lgpio") is None:
        found.append(f"the lgpio package is not installed: {PI_EXTRA} (or, with a "
                     "virtual environment made with --system-site-packages, sudo apt install "
                     "python3-lgpio)")
    chips = sorted(glob.glob(GPIO_CHIPS))
    if not chips:
        found.append(f"there is no GPIO chip ({GPIO_CHIPS}): this is not a Raspberry Pi, "
                     "or its GPIO driver is not loaded")
    closed = [chip for chip in chips if not os.access(chip, os.R_OK | os.W_OK)]
    if closed:
        found.append(_closed_text(closed[0], len(closed) - 1))
    return found


def _closed_text(chip: str, more: int = 0) -> str:
    return (f"user {_user_name(os.geteuid())} cannot open {_describe(chip)}"
            f"{f' (nor {more} more)' if more else ''}: let the group gpio open the chips "
            f"with the udev rule '{GPIO_UDEV_RULE}' in /etc/udev/rules.d/60-gpiochip.rules "
            "(then sudo udevadm trigger), and run as a member of gpio (the service's "
            "SupplementaryGroups= has it)")


def _closed_chip_only(problems: list[str]) -> str:
    """The chip a user may not open, when that is all that keeps the factory from loading
    (the package is there, the chips are): else ""."""
    if len(problems) != 1 or " cannot open " not in problems[0]:
        return ""
    closed = [chip for chip in sorted(glob.glob(GPIO_CHIPS))
              if not os.access(chip, os.R_OK | os.W_OK)]
    return closed[0] if closed else ""


def _chip_problem(chip: str) -> str:
    """Why this user cannot open `chip`, with the fix; "" when it seems it could."""
    if not os.path.exists(chip):
        return (f"{chip} is not there: is its driver loaded, or its adapter plugged in? "
                f"(ls /dev/gpiochip*)")
    if not os.access(chip, os.R_OK | os.W_OK):
        return _closed_text(chip)
    return ""


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _describe(path: str) -> str:
    """`/dev/gpiochip0 (root:root, mode 0600)`."""
    try:
        st = os.stat(path)
    except OSError:
        return path
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{path} ({_user_name(st.st_uid)}:{group}, mode {st.st_mode & 0o7777:04o})"


@contextmanager
def _claiming(key: str, *pins: int) -> Iterator[None]:
    """Devices created on `pins` (the setting `key`): a pin gpiozero refuses (another
    device of this configuration has it) is a SettingsError naming it, the
    configuration's error (exit 78, not restarted), rather than a traceback and a restart
    every 5 s. What the chip refuses (lgpio's errors, the system's: a line another
    program holds) is left to the device's stand-in (hal/gpio_reopen.py)."""
    try:
        yield
    except GPIOZeroError as exc:
        numbers = ", ".join(f"GPIO{pin}" for pin in pins)
        raise SettingsError(key, f"{numbers} cannot be claimed: {exc} (a pin serves one "
                                 "device only)") from None


def _check_pins(**pins: Optional[int]) -> None:
    seen: dict[int, str] = {}
    top = max_pin()
    for name, pin in pins.items():
        if pin is None:
            continue
        if not 0 <= pin <= top:
            if top == 27:
                raise ValueError(f"{name}: BCM GPIO numbers are 0..27, got {pin}")
            raise ValueError(f"{name}: a GPIO chip's line numbers are 0..{top}, got {pin}")
        if pin in seen:
            raise ValueError(f"{name}: GPIO{pin} is already used as {seen[pin]}")
        seen[pin] = name


def _check_ms(name: str, value: int, low: int = 0, high: int = 60_000) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name}: must be {low}..{high} ms, got {value}")


class _FeedbackInput:
    """A position contact: raw reading with polarity, and a debounced reading."""

    def __init__(self, pin: int, active_high: bool, pull: Pull, debounce_s: float):
        pull_up = {"none": None, "up": True, "down": False}[pull]
        # gpiozero wants active_state only for floating inputs; polarity is applied
        # here from the raw level, so the pull resistor and the polarity are independent.
        with _claiming("feedback_pin", pin):
            self._dev = DigitalInputDevice(pin, pull_up=pull_up,
                                           active_state=True if pull_up is None else None)
        self._active_high = active_high
        self._db: Debouncer[bool] = Debouncer(debounce_s)

    def read(self) -> bool:
        """True when the contact reports active (contactor closed, lock locked)."""
        return bool(self._dev.pin.state) == self._active_high

    def sample(self, now: float) -> bool:
        """Feed one reading to the debouncer and return the debounced value."""
        self._db.changed(self.read(), now)
        return self._db.value

    def reset(self, now: float) -> None:
        """Restart debouncing from the present reading."""
        self._db.reset()
        self._db.changed(self.read(), now)

    def close(self) -> None:
        self._dev.close()


def _fault_info(text: str) -> str:
    return text[:50]          # OCPP StatusNotification.info is CiString50


# --------------------------------------------------------------------------- contactor

@dataclass
class GpioContactorSettings:
    """`[connectors.contactor] type = "gpio"`: relay driver pin plus optional mirror contact."""

    pin: int
    active_high: bool = True
    feedback_pin: Optional[int] = None
    feedback_active_high: bool = True
    feedback_pull: Pull = "none"
    feedback_settle_ms: int = 100
    debounce_ms: int = 20
    check_interval_ms: int = 50

    def __post_init__(self):
        _check_pins(pin=self.pin, feedback_pin=self.feedback_pin)
        _check_ms("feedback_settle_ms", self.feedback_settle_ms, 1, 10_000)
        _check_ms("debounce_ms", self.debounce_ms, 0, 1_000)
        _check_ms("check_interval_ms", self.check_interval_ms, 1, 1_000)
        if self.debounce_ms > self.feedback_settle_ms:
            raise ValueError("debounce_ms: must not exceed feedback_settle_ms")

    def build(self, ctx) -> Contactor:
        gpio = ctx.gpio or GpioSettings()
        return open_or_stand_in(
            "contactor", lambda: GpioContactor(self, ctx.connector_id, ctx.emit, ctx.clock,
                                               supervise_every_s=self.check_interval_ms / 1000,
                                               gpio=gpio),
            ctx.connector_id, ctx.emit, gpio.retry_s)


class GpioContactor(Contactor):
    """Drives the contactor coil's relay/driver; supervises the mirror contact if fitted.

    `check(now)` compares the mirror contact with the command: a disagreement
    lasting `feedback_settle_ms` is a POWER_SWITCH_FAILURE ("contactor welded"
    when commanded open, "contactor failed to close" when commanded closed); it
    clears once they have agreed for `debounce_ms`. With `supervise_every_s` a
    daemon thread calls it periodically; tests call it directly.
    """

    def __init__(self, settings: GpioContactorSettings, connector_id: int, emit: Emit,
                 clock: Clock, supervise_every_s: Optional[float] = None,
                 gpio: Optional[GpioSettings] = None):
        self._cid = connector_id
        self._emit = emit
        self._clock = clock
        self._lock = threading.RLock()
        ensure_pin_factory(gpio)
        with _claiming("pin", settings.pin):
            self._out = DigitalOutputDevice(settings.pin, active_high=settings.active_high,
                                            initial_value=False)
        self._commanded = False
        self._feedback: Optional[_FeedbackInput] = None
        if settings.feedback_pin is not None:
            try:
                self._feedback = _FeedbackInput(settings.feedback_pin,
                                                settings.feedback_active_high,
                                                settings.feedback_pull, 0.0)
            except Exception:
                self._out.close()
                raise
        # Disagreement must last the settle time to become a fault; agreement
        # must last the debounce time to clear one.
        self._agrees: Debouncer[bool] = Debouncer(
            0.0, {False: settings.feedback_settle_ms / 1000,
                  True: settings.debounce_ms / 1000}, initial=True)
        self._fault: Optional[str] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if self._feedback is not None:
            self._agrees.changed(self._feedback.read() == self._commanded, clock())
            if supervise_every_s:
                self._thread = threading.Thread(target=self._supervise,
                                                args=(supervise_every_s,), daemon=True,
                                                name=f"contactor-{connector_id}")
                self._thread.start()

    def set_closed(self, closed: bool) -> None:
        with self._lock:
            if closed == self._commanded:
                return
            self._out.value = closed
            self._commanded = closed
            if self._feedback is not None:
                # The settle time runs from the command, not from the next check.
                self._agrees.changed(self._feedback.read() == closed, self._clock())

    @property
    def commanded_closed(self) -> bool:
        return self._commanded

    def feedback_closed(self) -> Optional[bool]:
        """The mirror contact as read now, None without one."""
        return None if self._feedback is None else self._feedback.read()

    @property
    def fault(self) -> Optional[str]:
        """The active fault's text, None when the contactor behaves."""
        return self._fault

    def check(self, now: float) -> None:
        """Compare feedback with the command; emit a fault or its clearing."""
        if self._feedback is None:
            return
        with self._lock:
            if not self._agrees.changed(self._feedback.read() == self._commanded, now):
                return
            if self._agrees.value:
                if self._fault is not None:
                    self._fault = None
                    self._emit(HardwareFault(self._cid, FaultCode.POWER_SWITCH_FAILURE, False))
                return
            info = "contactor failed to close" if self._commanded else "contactor welded"
            self._fault = info
            log.error("connector %d: %s", self._cid, info)
            self._emit(HardwareFault(self._cid, FaultCode.POWER_SWITCH_FAILURE, True,
                                     _fault_info(info)))

    def _supervise(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.check(self._clock())
            except Exception:
                log.exception("contactor supervision on connector %d failed", self._cid)

    def close(self) -> None:
        """Stop supervising, open the contactor, release the pins."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        with self._lock:
            try:
                self._out.off()
                self._commanded = False
            finally:
                self._out.close()
                if self._feedback is not None:
                    self._feedback.close()


# --------------------------------------------------------------------------- lock

@dataclass
class GpioLockSettings:
    """`[connectors.lock] type = "gpio"`.

    Either `pin` (a solenoid/actuator held while the output is active: active =
    locked) or `lock_pin` + `unlock_pin` (a motor lock through an H-bridge,
    pulsed for `pulse_ms` in one direction).
    """

    pin: Optional[int] = None
    lock_pin: Optional[int] = None
    unlock_pin: Optional[int] = None
    active_high: bool = True
    pulse_ms: int = 200
    feedback_pin: Optional[int] = None
    feedback_active_high: bool = True
    feedback_pull: Pull = "none"
    timeout_ms: int = 1000
    debounce_ms: int = 20

    def __post_init__(self):
        motor = (self.lock_pin, self.unlock_pin)
        if self.pin is None and None in motor:
            raise ValueError("pin: give pin (single actuator) or lock_pin and unlock_pin "
                             "(motor lock)")
        if self.pin is not None and motor != (None, None):
            raise ValueError("pin: give either pin or lock_pin/unlock_pin, not both")
        _check_pins(pin=self.pin, lock_pin=self.lock_pin, unlock_pin=self.unlock_pin,
                    feedback_pin=self.feedback_pin)
        _check_ms("pulse_ms", self.pulse_ms, 10, 5_000)
        _check_ms("timeout_ms", self.timeout_ms, 10, 5_000)
        _check_ms("debounce_ms", self.debounce_ms, 0, 1_000)
        if self.lock_pin is not None and self.feedback_pin is not None \
                and self.timeout_ms < self.pulse_ms:
            raise ValueError("timeout_ms: must be at least pulse_ms")

    def build(self, ctx) -> ConnectorLock:
        gpio = ctx.gpio or GpioSettings()
        return open_or_stand_in(
            "lock", lambda: GpioLock(self, ctx.connector_id, ctx.emit, ctx.clock, gpio=gpio),
            ctx.connector_id, ctx.emit, gpio.retry_s)


class GpioLock(ConnectorLock):
    """Locks the plug; confirms by the feedback switch when one is fitted.

    `set_locked` blocks for at most `timeout_ms` (motor: the pulse plus the
    rest of the timeout). `sleep` is injectable so tests move a fake clock.
    """

    POLL_S = 0.01

    def __init__(self, settings: GpioLockSettings, connector_id: int, emit: Emit, clock: Clock,
                 sleep: Callable[[float], None] = time.sleep,
                 gpio: Optional[GpioSettings] = None):
        self._cid = connector_id
        self._emit = emit
        self._clock = clock
        self._sleep = sleep
        self._pulse_s = settings.pulse_ms / 1000
        self._timeout_s = settings.timeout_ms / 1000
        self._lock = threading.Lock()
        self._outputs: list = []
        ensure_pin_factory(gpio)
        try:
            if settings.pin is not None:
                with _claiming("pin", settings.pin):
                    self._hold = DigitalOutputDevice(settings.pin,
                                                     active_high=settings.active_high,
                                                     initial_value=None)
                self._outputs.append(self._hold)
                self._motor = None
            else:
                self._hold = None
                with _claiming("lock_pin", settings.lock_pin):
                    lock = DigitalOutputDevice(settings.lock_pin,
                                               active_high=settings.active_high,
                                               initial_value=False)
                self._outputs.append(lock)
                with _claiming("unlock_pin", settings.unlock_pin):
                    unlock = DigitalOutputDevice(settings.unlock_pin,
                                                 active_high=settings.active_high,
                                                 initial_value=False)
                self._outputs.append(unlock)
                self._motor = (lock, unlock)
            self._feedback = None
            if settings.feedback_pin is not None:
                self._feedback = _FeedbackInput(settings.feedback_pin,
                                                settings.feedback_active_high,
                                                settings.feedback_pull,
                                                settings.debounce_ms / 1000)
        except Exception:
            for out in self._outputs:
                out.close()
            raise
        self._fault: Optional[str] = None

    def _drive(self, locked: bool) -> None:
        if self._hold is not None:
            self._hold.value = locked
            return
        lock, unlock = self._motor
        on, other = (lock, unlock) if locked else (unlock, lock)
        other.off()                       # never drive both bridge halves
        on.on()
        try:
            self._sleep(self._pulse_s)
        finally:
            on.off()

    def set_locked(self, locked: bool) -> bool:
        """Move the lock; True when the feedback (if any) confirms within timeout_ms.
        Otherwise emits CONNECTOR_LOCK_FAILURE and returns False."""
        with self._lock:
            start = self._clock()
            if self._feedback is not None:
                self._feedback.reset(start)
            self._drive(locked)
            if self._feedback is None:
                return True
            while True:
                now = self._clock()
                if self._feedback.sample(now) == locked:
                    if self._fault is not None:
                        self._fault = None
                        self._emit(HardwareFault(self._cid, FaultCode.CONNECTOR_LOCK_FAILURE,
                                                 False))
                    return True
                if now - start >= self._timeout_s:
                    break
                self._sleep(self.POLL_S)
            info = "connector lock failed to lock" if locked else "connector lock failed to unlock"
            log.error("connector %d: %s", self._cid, info)
            self._fault = info
            self._emit(HardwareFault(self._cid, FaultCode.CONNECTOR_LOCK_FAILURE, True,
                                     _fault_info(info)))
            return False

    def is_locked(self) -> Optional[bool]:
        return None if self._feedback is None else self._feedback.read()

    def close(self) -> None:
        """Release the pins, leaving the lock where it is (a motor lock stays put;
        a held actuator follows the board's default once the pin is released)."""
        with self._lock:
            if self._motor is not None:
                for out in self._motor:
                    out.off()
            for out in self._outputs:
                out.close()
            if self._feedback is not None:
                self._feedback.close()


# --------------------------------------------------------------------------- indicator

@dataclass(frozen=True)
class Pattern:
    """A colour shown steadily (`on_s` None) or blinking `on_s`/`off_s` seconds."""

    rgb: tuple[float, float, float]
    on_s: Optional[float] = None
    off_s: float = 0.0


RGB_PATTERNS: Mapping[IndicatorColour, Pattern] = {
    IndicatorColour.OFF: Pattern((0, 0, 0)),
    IndicatorColour.AVAILABLE: Pattern((0, 1, 0)),
    IndicatorColour.OCCUPIED: Pattern((0, 0, 1)),
    IndicatorColour.CHARGING: Pattern((0, 0, 1), on_s=1.0, off_s=1.0),
    IndicatorColour.FAULT: Pattern((1, 0, 0)),
    IndicatorColour.OFFLINE: Pattern((1, 1, 0)),      # amber, as near as on/off LEDs get
}

#: One LED tells the states apart by rhythm.
MONO_PATTERNS: Mapping[IndicatorColour, Pattern] = {
    IndicatorColour.OFF: Pattern((0, 0, 0)),
    IndicatorColour.AVAILABLE: Pattern((1, 1, 1)),
    IndicatorColour.OCCUPIED: Pattern((1, 1, 1), on_s=1.8, off_s=0.2),
    IndicatorColour.CHARGING: Pattern((1, 1, 1), on_s=1.0, off_s=1.0),
    IndicatorColour.FAULT: Pattern((1, 1, 1), on_s=0.2, off_s=0.2),
    IndicatorColour.OFFLINE: Pattern((1, 1, 1), on_s=0.1, off_s=1.9),
}


@dataclass
class GpioIndicatorSettings:
    """`[connectors.indicator] type = "gpio"`: one LED (`pin`) or an RGB LED."""

    pin: Optional[int] = None
    red_pin: Optional[int] = None
    green_pin: Optional[int] = None
    blue_pin: Optional[int] = None
    active_high: bool = True

    def __post_init__(self):
        rgb = (self.red_pin, self.green_pin, self.blue_pin)
        if self.pin is None and None in rgb:
            raise ValueError("pin: give pin (one LED) or red_pin, green_pin and blue_pin")
        if self.pin is not None and rgb != (None, None, None):
            raise ValueError("pin: give either pin or red_pin/green_pin/blue_pin, not both")
        _check_pins(pin=self.pin, red_pin=self.red_pin, green_pin=self.green_pin,
                    blue_pin=self.blue_pin)

    def build(self, ctx) -> Indicator:
        gpio = ctx.gpio or GpioSettings()
        return open_or_stand_in("indicator", lambda: GpioIndicator(self, gpio=gpio),
                                ctx.connector_id, ctx.emit, gpio.retry_s)


class GpioIndicator(Indicator):
    """Shows an IndicatorColour as a colour or blink rhythm; blinking runs on
    gpiozero's background thread, so `show` returns at once."""

    def __init__(self, settings: GpioIndicatorSettings,
                 patterns: Optional[Mapping[IndicatorColour, Pattern]] = None,
                 gpio: Optional[GpioSettings] = None):
        ensure_pin_factory(gpio)
        if settings.pin is not None:
            with _claiming("pin", settings.pin):
                self._led = LED(settings.pin, active_high=settings.active_high,
                                initial_value=False)
            self._rgb = False
        else:
            # One gpiozero device for the three: which pin failed, lgpio does not say.
            with _claiming("red_pin/green_pin/blue_pin", settings.red_pin, settings.green_pin,
                           settings.blue_pin):
                self._led = RGBLED(settings.red_pin, settings.green_pin, settings.blue_pin,
                                   active_high=settings.active_high, pwm=False)
            self._rgb = True
        defaults = RGB_PATTERNS if self._rgb else MONO_PATTERNS
        self._patterns = {**defaults, **(patterns or {})}
        self._shown: Optional[IndicatorColour] = None

    @property
    def shown(self) -> Optional[IndicatorColour]:
        return self._shown

    def show(self, colour: IndicatorColour) -> None:
        if colour == self._shown:
            return          # keep a running blink in phase
        pattern = self._patterns[colour]
        if self._rgb:
            rgb = tuple(1 if c else 0 for c in pattern.rgb)
            if pattern.on_s is None:
                self._led.color = rgb
            else:
                self._led.blink(on_time=pattern.on_s, off_time=pattern.off_s,
                                on_color=rgb, off_color=(0, 0, 0), background=True)
        else:
            lit = any(pattern.rgb)
            if pattern.on_s is None or not lit:
                self._led.value = lit
            else:
                self._led.blink(on_time=pattern.on_s, off_time=pattern.off_s, background=True)
        self._shown = colour

    def close(self) -> None:
        try:
            self._led.off()
        finally:
            self._led.close()
