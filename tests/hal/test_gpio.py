"""GPIO contactor, lock and indicator on gpiozero's mock pins with a fake clock."""
import queue
import threading
import time

import pytest
from gpiozero import Device, DigitalOutputDevice
from gpiozero.pins.mock import MockFactory

from hal.events import FaultCode, HardwareFault
from hal.factory import BuildContext, parse_device
from hal.gpio import (RGB_PATTERNS, GpioContactor, GpioContactorSettings, GpioIndicator,
                      GpioIndicatorSettings, GpioLock, GpioLockSettings, Pattern)
from hal.interfaces import IndicatorColour
from hal.settings import SettingsError

RELAY, MIRROR = 17, 27
LOCK_OUT, LOCK_A, LOCK_B, LOCK_FB = 22, 23, 24, 25
RED, GREEN, BLUE = 5, 6, 13


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.t

    def advance(self, dt: float) -> None:
        with self._lock:
            self.t += dt


@pytest.fixture
def pins():
    Device.ensure_pin_factory()
    factory = Device.pin_factory
    assert isinstance(factory, MockFactory)
    yield factory
    factory.reset()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def events():
    return []


def state(pins, n) -> bool:
    return bool(pins.pin(n).state)


def faults(events):
    return [(e.code, e.active, e.info) for e in events if isinstance(e, HardwareFault)]


# --------------------------------------------------------------------------- contactor

def contactor(pins, clock, events, **kw) -> GpioContactor:
    settings = GpioContactorSettings(**{"pin": RELAY, **kw})
    return GpioContactor(settings, 1, events.append, clock)


def test_contactor_drives_the_relay_pin(pins, clock, events):
    c = contactor(pins, clock, events)
    assert not state(pins, RELAY)                    # open at start
    c.set_closed(True)
    assert state(pins, RELAY) and c.commanded_closed
    c.set_closed(True)                               # idempotent
    c.set_closed(False)
    assert not state(pins, RELAY) and not c.commanded_closed
    assert c.feedback_closed() is None
    c.check(clock())                                 # no feedback: nothing to supervise
    assert events == []
    c.close()


def test_contactor_active_low_driver(pins, clock, events):
    c = contactor(pins, clock, events, active_high=False)
    assert state(pins, RELAY)                        # high = open on an active-low driver
    c.set_closed(True)
    assert not state(pins, RELAY)
    c.close()
    assert state(pins, RELAY)


def test_close_opens_the_contactor(pins, clock, events):
    c = contactor(pins, clock, events)
    c.set_closed(True)
    c.close()
    assert not state(pins, RELAY)
    assert not c.commanded_closed


def test_mirror_following_within_settle_time_is_no_fault(pins, clock, events):
    c = contactor(pins, clock, events, feedback_pin=MIRROR)
    mirror = pins.pin(MIRROR)
    c.set_closed(True)
    for _ in range(4):                               # 80 ms: mirror still open
        clock.advance(0.02)
        c.check(clock())
    mirror.drive_high()
    for _ in range(10):
        clock.advance(0.02)
        c.check(clock())
    assert c.feedback_closed() is True
    c.set_closed(False)
    clock.advance(0.05)
    mirror.drive_low()
    for _ in range(10):
        clock.advance(0.02)
        c.check(clock())
    assert events == [] and c.fault is None
    c.close()


def test_welded_contactor_detected_and_cleared(pins, clock, events):
    c = contactor(pins, clock, events, feedback_pin=MIRROR, feedback_settle_ms=100)
    c.set_closed(True)
    pins.pin(MIRROR).drive_high()
    clock.advance(0.05)
    c.check(clock())
    c.set_closed(False)                              # mirror stays closed: welded
    clock.advance(0.09)
    c.check(clock())
    assert events == []
    clock.advance(0.02)
    c.check(clock())
    assert faults(events) == [(FaultCode.POWER_SWITCH_FAILURE, True, "contactor welded")]
    assert events[0].connector_id == 1
    clock.advance(0.05)
    c.check(clock())
    assert len(events) == 1                          # reported once
    pins.pin(MIRROR).drive_low()                     # contact released
    clock.advance(0.01)
    c.check(clock())
    assert len(events) == 1                          # not before debounce_ms
    clock.advance(0.02)
    c.check(clock())
    assert faults(events)[-1] == (FaultCode.POWER_SWITCH_FAILURE, False, "")
    c.close()


def test_contactor_failing_to_close(pins, clock, events):
    c = contactor(pins, clock, events, feedback_pin=MIRROR, feedback_settle_ms=100)
    c.set_closed(True)
    for _ in range(4):
        clock.advance(0.02)
        c.check(clock())
    assert events == []
    clock.advance(0.03)
    c.check(clock())
    assert faults(events) == [(FaultCode.POWER_SWITCH_FAILURE, True,
                               "contactor failed to close")]
    c.set_closed(False)                              # agrees again with the open mirror
    c.check(clock())
    assert len(events) == 1                          # agreement must hold debounce_ms
    clock.advance(0.02)
    c.check(clock())
    assert faults(events)[-1] == (FaultCode.POWER_SWITCH_FAILURE, False, "")
    c.close()


def test_contactor_dropping_out_while_closed(pins, clock, events):
    c = contactor(pins, clock, events, feedback_pin=MIRROR)
    c.set_closed(True)
    pins.pin(MIRROR).drive_high()
    for _ in range(20):
        clock.advance(0.05)
        c.check(clock())
    pins.pin(MIRROR).drive_low()                     # coil supply lost
    for _ in range(2):
        clock.advance(0.05)
        c.check(clock())
    assert events == []                              # first seen at +50 ms, settles at +150
    for _ in range(2):
        clock.advance(0.05)
        c.check(clock())
    assert faults(events) == [(FaultCode.POWER_SWITCH_FAILURE, True,
                               "contactor failed to close")]
    c.close()


def test_mirror_bounce_shorter_than_debounce_is_ignored(pins, clock, events):
    c = contactor(pins, clock, events, feedback_pin=MIRROR, debounce_ms=20,
                  feedback_settle_ms=30)
    mirror = pins.pin(MIRROR)
    for _ in range(20):                              # 10 ms pulses of a bouncing contact
        mirror.drive_high()
        clock.advance(0.005)
        c.check(clock())
        clock.advance(0.005)
        mirror.drive_low()
        c.check(clock())
    assert events == []
    c.close()


def test_active_low_mirror_with_pull_up(pins, clock, events):
    c = contactor(pins, clock, events, feedback_pin=MIRROR, feedback_active_high=False,
                  feedback_pull="up")
    assert state(pins, MIRROR)                       # pulled up: contact open
    assert c.feedback_closed() is False
    pins.pin(MIRROR).drive_low()
    clock.advance(0.2)
    c.check(clock())
    clock.advance(0.2)
    c.check(clock())
    assert c.feedback_closed() is True
    assert faults(events) == [(FaultCode.POWER_SWITCH_FAILURE, True, "contactor welded")]
    c.close()


def test_supervisor_thread_reports_and_stops(pins, clock):
    q: queue.Queue = queue.Queue()
    table = {"type": "gpio", "pin": RELAY, "feedback_pin": MIRROR, "check_interval_ms": 5}
    settings = parse_device("contactor", table, "connectors[0].contactor")
    c = settings.build(BuildContext(connector_id=2, emit=q.put, clock=clock))
    pins.pin(MIRROR).drive_high()
    event = None
    for _ in range(200):                             # bounded: at most ~10 s
        clock.advance(0.05)                          # the thread samples the fake clock
        try:
            event = q.get(timeout=0.05)
            break
        except queue.Empty:
            pass
    assert event == HardwareFault(2, FaultCode.POWER_SWITCH_FAILURE, True, "contactor welded")
    thread = c._thread
    c.close()
    assert not thread.is_alive()
    assert not state(pins, RELAY)


def test_contactor_settings_validation():
    with pytest.raises(SettingsError, match="feedback_pin"):
        parse_device("contactor", {"type": "gpio", "pin": 17, "feedback_pin": 17}, "c")
    with pytest.raises(SettingsError, match="pin"):
        parse_device("contactor", {"type": "gpio", "pin": 40}, "c")
    with pytest.raises(SettingsError, match="debounce_ms"):
        parse_device("contactor", {"type": "gpio", "pin": 17, "feedback_pin": 27,
                                   "debounce_ms": 200}, "c")
    with pytest.raises(SettingsError, match="feedback_pull"):
        parse_device("contactor", {"type": "gpio", "pin": 17, "feedback_pull": "sideways"}, "c")
    with pytest.raises(SettingsError, match="c.pin"):
        parse_device("contactor", {"type": "gpio"}, "c")


# --------------------------------------------------------------------------- lock

class Actuator:
    """The lock mechanism: its position switch follows the drive after `travel_s`.

    It is also the test's `sleep`: sleeping moves the fake clock and the mechanism."""

    def __init__(self, pins, clock, travel_s=0.05, single=True, stuck=False):
        self.pins, self.clock, self.travel_s, self.single, self.stuck = \
            pins, clock, travel_s, single, stuck
        self.position = False            # locked?
        self.driven_for = 0.0
        self.direction = None
        self.slept = 0.0
        self.pulses: list[tuple[str, float]] = []

    def drive(self):
        if self.single:
            return bool(self.pins.pin(LOCK_OUT).state)
        a, b = self.pins.pin(LOCK_A).state, self.pins.pin(LOCK_B).state
        assert not (a and b), "both bridge halves driven"
        return True if a else False if b else None

    def sleep(self, dt):
        target = self.drive()
        if not self.single and target is not None:
            self.pulses.append(("lock" if target else "unlock", dt))
        self.clock.advance(dt)
        self.slept += dt
        if target is not None and target != self.position and not self.stuck:
            self.driven_for += dt
            if self.driven_for >= self.travel_s:
                self.position = target
                self.driven_for = 0.0
        fb = self.pins.pin(LOCK_FB)
        fb.drive_high() if self.position else fb.drive_low()


def lock(pins, clock, events, actuator, **kw) -> GpioLock:
    settings = GpioLockSettings(**kw)
    return GpioLock(settings, 1, events.append, clock, sleep=actuator.sleep)


def test_single_output_lock_without_feedback(pins, clock, events):
    act = Actuator(pins, clock)
    lk = lock(pins, clock, events, act, pin=LOCK_OUT)
    assert lk.set_locked(True) is True
    assert state(pins, LOCK_OUT)
    assert lk.is_locked() is None
    assert lk.set_locked(False) is True
    assert not state(pins, LOCK_OUT)
    assert act.slept == 0 and events == []
    lk.close()


def test_single_output_lock_confirmed_by_feedback(pins, clock, events):
    act = Actuator(pins, clock, travel_s=0.05)
    lk = lock(pins, clock, events, act, pin=LOCK_OUT, feedback_pin=LOCK_FB, debounce_ms=20)
    assert lk.set_locked(True) is True
    assert lk.is_locked() is True
    assert 0.07 <= act.slept < 0.2                   # travel + debounce, not the timeout
    assert lk.set_locked(False) is True
    assert lk.is_locked() is False
    assert events == []
    lk.close()


def test_stuck_lock_reports_after_timeout_and_recovers(pins, clock, events):
    act = Actuator(pins, clock, stuck=True)
    lk = lock(pins, clock, events, act, pin=LOCK_OUT, feedback_pin=LOCK_FB, timeout_ms=300)
    start = clock()
    assert lk.set_locked(True) is False
    assert 0.3 <= clock() - start < 0.35             # blocks no longer than the timeout
    assert faults(events) == [(FaultCode.CONNECTOR_LOCK_FAILURE, True,
                               "connector lock failed to lock")]
    act.stuck = False                                 # freed
    assert lk.set_locked(True) is True
    assert faults(events)[-1] == (FaultCode.CONNECTOR_LOCK_FAILURE, False, "")
    lk.close()


def test_motor_lock_pulses_one_direction(pins, clock, events):
    act = Actuator(pins, clock, travel_s=0.1, single=False)
    lk = lock(pins, clock, events, act, lock_pin=LOCK_A, unlock_pin=LOCK_B, pulse_ms=150,
              feedback_pin=LOCK_FB)
    assert lk.set_locked(True) is True
    assert act.pulses == [("lock", 0.15)]
    assert not state(pins, LOCK_A) and not state(pins, LOCK_B)     # motor off after pulse
    assert lk.is_locked() is True
    assert lk.set_locked(False) is True
    assert act.pulses == [("lock", 0.15), ("unlock", 0.15)]
    assert lk.is_locked() is False
    assert pins.pin(LOCK_A).states[-1].state is False
    assert events == []
    lk.close()


def test_motor_lock_failing_to_unlock(pins, clock, events):
    act = Actuator(pins, clock, travel_s=0.1, single=False)
    lk = lock(pins, clock, events, act, lock_pin=LOCK_A, unlock_pin=LOCK_B, pulse_ms=150,
              feedback_pin=LOCK_FB, timeout_ms=500)
    assert lk.set_locked(True)
    act.stuck = True
    assert lk.set_locked(False) is False
    assert faults(events) == [(FaultCode.CONNECTOR_LOCK_FAILURE, True,
                               "connector lock failed to unlock")]
    lk.close()


def test_lock_close_leaves_the_lock_as_is(pins, clock, events):
    act = Actuator(pins, clock, single=False)
    lk = lock(pins, clock, events, act, lock_pin=LOCK_A, unlock_pin=LOCK_B)
    lk.set_locked(True)
    unlock_states = len(pins.pin(LOCK_B).states)
    lk.close()
    assert len(pins.pin(LOCK_B).states) == unlock_states   # no unlock pulse
    assert act.position is True


def test_lock_settings_validation():
    with pytest.raises(SettingsError, match="pin"):
        parse_device("lock", {"type": "gpio"}, "l")
    with pytest.raises(SettingsError, match="pin"):
        parse_device("lock", {"type": "gpio", "pin": 22, "lock_pin": 23, "unlock_pin": 24}, "l")
    with pytest.raises(SettingsError, match="pin"):
        parse_device("lock", {"type": "gpio", "lock_pin": 23}, "l")
    with pytest.raises(SettingsError, match="unlock_pin"):
        parse_device("lock", {"type": "gpio", "lock_pin": 23, "unlock_pin": 23}, "l")
    with pytest.raises(SettingsError, match="timeout_ms"):
        parse_device("lock", {"type": "gpio", "lock_pin": 23, "unlock_pin": 24,
                              "feedback_pin": 25, "pulse_ms": 500, "timeout_ms": 200}, "l")
    ok = parse_device("lock", {"type": "gpio", "lock_pin": 23, "unlock_pin": 24}, "l")
    assert isinstance(ok, GpioLockSettings) and ok.pulse_ms == 200


# --------------------------------------------------------------------------- indicator

FAST = {c: (Pattern(p.rgb, on_s=0.01, off_s=0.01) if p.on_s else p)
        for c, p in RGB_PATTERNS.items()}


def wait_for(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def rgb(pins):
    return (state(pins, RED), state(pins, GREEN), state(pins, BLUE))


def test_rgb_colours(pins):
    ind = GpioIndicator(GpioIndicatorSettings(red_pin=RED, green_pin=GREEN, blue_pin=BLUE))
    expected = {
        IndicatorColour.AVAILABLE: (False, True, False),
        IndicatorColour.OCCUPIED: (False, False, True),
        IndicatorColour.FAULT: (True, False, False),
        IndicatorColour.OFFLINE: (True, True, False),
        IndicatorColour.OFF: (False, False, False),
    }
    for colour, lit in expected.items():
        ind.show(colour)
        assert rgb(pins) == lit, colour
        assert ind.shown is colour
    ind.close()


def test_rgb_active_low(pins):
    ind = GpioIndicator(GpioIndicatorSettings(red_pin=RED, green_pin=GREEN, blue_pin=BLUE,
                                              active_high=False))
    ind.show(IndicatorColour.FAULT)
    assert rgb(pins) == (False, True, True)
    ind.close()
    assert rgb(pins) == (True, True, True)           # all off


def test_charging_blinks_blue_until_another_colour(pins):
    ind = GpioIndicator(GpioIndicatorSettings(red_pin=RED, green_pin=GREEN, blue_pin=BLUE),
                        patterns=FAST)
    blue = pins.pin(BLUE)
    blue.clear_states()
    ind.show(IndicatorColour.CHARGING)
    assert wait_for(lambda: len(blue.states) >= 6)  # toggling on the background thread
    assert not state(pins, RED) and not state(pins, GREEN)
    ind.show(IndicatorColour.FAULT)
    assert rgb(pins) == (True, False, False)
    settled = len(blue.states)
    time.sleep(0.1)                                  # ten blink periods: none may happen
    assert len(blue.states) == settled and not state(pins, BLUE)
    ind.close()


def test_default_patterns_blink_only_while_charging():
    assert RGB_PATTERNS[IndicatorColour.CHARGING].on_s is not None
    assert RGB_PATTERNS[IndicatorColour.CHARGING].rgb == (0, 0, 1)
    assert all(p.on_s is None for c, p in RGB_PATTERNS.items() if c != IndicatorColour.CHARGING)


def test_single_led(pins):
    fast = {IndicatorColour.FAULT: Pattern((1, 1, 1), on_s=0.01, off_s=0.01),
            IndicatorColour.AVAILABLE: Pattern((1, 1, 1)),
            IndicatorColour.OFF: Pattern((0, 0, 0))}
    ind = GpioIndicator(GpioIndicatorSettings(pin=RED), patterns=fast)
    ind.show(IndicatorColour.AVAILABLE)
    assert state(pins, RED)
    led = pins.pin(RED)
    led.clear_states()
    ind.show(IndicatorColour.FAULT)
    assert wait_for(lambda: len(led.states) >= 6)
    ind.show(IndicatorColour.OFF)
    assert not state(pins, RED)
    ind.close()


def test_indicator_settings_validation():
    with pytest.raises(SettingsError, match="pin"):
        parse_device("indicator", {"type": "gpio", "red_pin": 5}, "i")
    with pytest.raises(SettingsError, match="pin"):
        parse_device("indicator", {"type": "gpio", "pin": 4, "red_pin": 5, "green_pin": 6,
                                   "blue_pin": 13}, "i")
    with pytest.raises(SettingsError, match="blue_pin"):
        parse_device("indicator", {"type": "gpio", "red_pin": 5, "green_pin": 6,
                                   "blue_pin": 6}, "i")


# --------------------------------------------------------------------------- pins taken

def test_a_pin_that_cannot_be_claimed_is_a_settings_error_naming_it(pins, clock, events):
    """A pin another device holds (lgpio: a line a kernel driver holds, or one the chip has
    not): the configuration's error, naming the setting and the pin, and the pins this
    device had already claimed are free again."""
    held = DigitalOutputDevice(MIRROR)
    try:
        with pytest.raises(SettingsError) as caught:
            contactor(pins, clock, events, feedback_pin=MIRROR)
        assert caught.value.key == "feedback_pin"
        assert caught.value.reason.startswith(f"GPIO{MIRROR} cannot be claimed: ")
        assert "in use" in caught.value.reason
        contactor(pins, clock, events).close()              # its relay pin was let go
        with pytest.raises(SettingsError, match=f"^red_pin/green_pin/blue_pin: GPIO{RED}, "
                                                f"GPIO{GREEN}, GPIO{MIRROR} cannot"):
            GpioIndicator(GpioIndicatorSettings(red_pin=RED, green_pin=GREEN, blue_pin=MIRROR))
        GpioIndicator(GpioIndicatorSettings(red_pin=RED, green_pin=GREEN,
                                            blue_pin=BLUE)).close()
        with pytest.raises(SettingsError, match="^unlock_pin: "):
            GpioLock(GpioLockSettings(lock_pin=RED, unlock_pin=MIRROR), 1, events.append,
                     clock)
        with pytest.raises(SettingsError, match="^pin: "):
            GpioIndicator(GpioIndicatorSettings(pin=MIRROR))
    finally:
        held.close()
