"""A GPIO contactor, lock or light whose chip cannot be opened: a fault, never a closed
contactor, and the real device once the chip opens. gpiozero loads the pin factory by name
(tests/closed_chip.py: mock pins behind a chip file whose mode says who may open it)."""
import pytest
from gpiozero import Device

from hal.events import FaultCode, HardwareFault, MeterSampled
from hal.factory import BuildContext, parse_device
from hal.gpio import GpioContactor, GpioIndicator, GpioLock, ensure_pin_factory
from hal.gpio_reopen import ReopeningContactor, ReopeningIndicator, ReopeningLock
from hal.gpio_settings import FIX_PERMISSION, GpioChipUnavailable, GpioSettings
from hal.interfaces import IndicatorColour
from hal.meter_poller import MeterPoller
from tests.harness import wait_until

RELAY, MIRROR, LOCK_OUT, RED, GREEN, BLUE = 17, 27, 22, 5, 6, 13
#: Tried again by hand here: the thread's interval is never reached.
SLOW = GpioSettings(retry_s=3600)


def build(kind: str, table: dict, events: list, gpio: GpioSettings = SLOW):
    settings = parse_device(kind, {"type": "gpio", **table}, f"connectors[id=1].{kind}")
    return settings.build(BuildContext(connector_id=1, emit=events.append, gpio=gpio))


def test_a_chip_that_cannot_be_opened_is_named_with_its_fix(chip):
    with pytest.raises(GpioChipUnavailable) as info:
        ensure_pin_factory()
    assert info.value.chip == str(chip) and info.value.fix == FIX_PERMISSION
    assert f"Permission denied: '{chip}'" in str(info.value)
    assert Device.pin_factory is None


def test_a_contactor_that_cannot_be_driven_is_a_fault_never_closed_until_its_chip_opens(chip):
    events = []
    contactor = build("contactor", {"pin": RELAY, "feedback_pin": MIRROR}, events)
    try:
        assert isinstance(contactor, ReopeningContactor)
        assert events == [HardwareFault(1, FaultCode.POWER_SWITCH_FAILURE, True,
                                        f"cannot open {chip}"[:50], FIX_PERMISSION)]
        contactor.set_closed(True)                     # refused: nothing to drive
        assert not contactor.commanded_closed and contactor.feedback_closed() is None
        assert contactor.fault == f"cannot open {chip}"[:50]
        assert not contactor.retry() and len(events) == 1      # still closed: no news

        chip.chmod(0o660)                              # the udev rule, applied later
        assert contactor.retry()
        assert events[-1] == HardwareFault(1, FaultCode.POWER_SWITCH_FAILURE, False)
        assert isinstance(contactor.device, GpioContactor)
        relay = Device.pin_factory.pin(RELAY)
        assert not relay.state and not any(s.state for s in relay.states), \
            "the relay was driven before the command"
        assert not contactor.commanded_closed
        contactor.set_closed(True)                     # now it is driven
        assert relay.state and contactor.commanded_closed
        assert contactor.retry() and len(events) == 2  # open stays open: no second clearing
    finally:
        contactor.close()
    assert not Device.pin_factory.pin(RELAY).state     # closing opens it


def test_a_lock_that_cannot_be_moved_says_so_until_its_chip_opens(chip):
    events = []
    lock = build("lock", {"pin": LOCK_OUT}, events)
    try:
        assert isinstance(lock, ReopeningLock)
        assert [(e.code, e.active) for e in events] == [(FaultCode.CONNECTOR_LOCK_FAILURE,
                                                         True)]
        assert lock.set_locked(True) is False and lock.is_locked() is None
        chip.chmod(0o660)
        assert lock.retry() and isinstance(lock.device, GpioLock)
        assert events[-1] == HardwareFault(1, FaultCode.CONNECTOR_LOCK_FAILURE, False)
        assert lock.set_locked(True) is True and Device.pin_factory.pin(LOCK_OUT).state
    finally:
        lock.close()


def test_a_light_that_cannot_be_lit_is_other_error_and_shows_what_was_asked_once_open(chip):
    events = []
    light = build("indicator", {"red_pin": RED, "green_pin": GREEN, "blue_pin": BLUE}, events)
    try:
        assert isinstance(light, ReopeningIndicator)
        [fault] = events
        assert (fault.code, fault.active, fault.info) == (FaultCode.OTHER_ERROR, True,
                                                          f"cannot open {chip}"[:50])
        light.show(IndicatorColour.FAULT)
        chip.chmod(0o660)
        assert light.retry() and isinstance(light.device, GpioIndicator)
        assert events[-1] == HardwareFault(1, FaultCode.OTHER_ERROR, False)
        pins = Device.pin_factory
        assert [bool(pins.pin(n).state) for n in (RED, GREEN, BLUE)] == [True, False, False]
    finally:
        light.close()


def test_the_retry_thread_opens_the_device_by_itself(chip):
    events = []
    contactor = build("contactor", {"pin": RELAY}, events, GpioSettings(retry_s=1))
    try:
        chip.chmod(0o660)
        assert wait_until(lambda: contactor.device is not None, timeout=10)
        assert wait_until(lambda: len(events) == 2, timeout=2)
        assert events[-1] == HardwareFault(1, FaultCode.POWER_SWITCH_FAILURE, False)
    finally:
        contactor.close()


def test_a_device_that_opens_at_once_is_the_device_itself(chip):
    chip.chmod(0o660)
    events = []
    contactor = build("contactor", {"pin": RELAY}, events)
    try:
        assert isinstance(contactor, GpioContactor) and events == []
    finally:
        contactor.close()


def test_an_s0_meter_whose_chip_cannot_be_opened_is_a_meter_failure_until_it_opens(chip,
                                                                                    tmp_path):
    """Read through the real poller: PowerMeterFailure naming the chip and the fix, then,
    once the chip opens and `retry_s` has passed, the saved count and new pulses."""
    (tmp_path / "s0.json").write_text('{"version": 1, "pulses": 5000, "pulses_per_kwh": 1000}')
    now = [100.0]
    events = []
    settings = parse_device("meter", {"type": "s0", "pin": 26,
                                      "state_file": str(tmp_path / "s0.json")},
                            "connectors[id=1].meter")
    meter = settings.build(BuildContext(connector_id=1, emit=events.append,
                                        clock=lambda: now[0], gpio=GpioSettings(retry_s=30)))
    poller = MeterPoller({1: meter}, events.append, clock=lambda: now[0])
    try:
        poller.poll_once()
        poller.poll_once()                              # still closed: no second fault
        assert events == [HardwareFault(1, FaultCode.POWER_METER_FAILURE, True,
                                        f"cannot open {chip} ({FIX_PERMISSION})"[:47] + "...")]
        chip.chmod(0o660)                               # the udev rule, applied later
        now[0] += 10
        poller.poll_once()
        assert len(events) == 1, "tried again before retry_s"
        now[0] += 20
        poller.poll_once()
        assert events[1] == HardwareFault(1, FaultCode.POWER_METER_FAILURE, False)
        assert isinstance(events[2], MeterSampled) and events[2].reading.energy_import_wh == 5000
        line = Device.pin_factory.pin(26)               # pull-up wiring: a pulse pulls it low
        line.drive_low()
        now[0] += 0.05
        line.drive_high()
        poller.poll_once()
        assert events[-1].reading.energy_import_wh == 5001
    finally:
        meter.close()


def test_a_pilot_whose_adc_chip_cannot_be_opened_is_an_ev_communication_error_until_it_opens(
        chip, tmp_path):
    """The pwm_adc pilot reads its MCP3008 through the pin factory: a chip it cannot open is
    EVCommunicationError naming the chip, tried again every retry_s (not every poll); once
    it opens, the ADC is read and the fault clears."""
    from tests.hal.test_pilot_pwm import FakeKernel, MockMCP3008, level_shifter  # its fakes

    kernel = FakeKernel(tmp_path / "pwm")
    kernel.add_chip(0)
    now = [1000.0]
    events = []
    settings = parse_device("pilot", {"type": "pwm_adc", "sysfs_root": str(kernel.root),
                                      "samples_per_poll": 8, "export_timeout_ms": 500},
                            "connectors[id=1].pilot")
    pilot = settings.build(BuildContext(connector_id=1, emit=events.append,
                                        clock=lambda: now[0], gpio=GpioSettings(retry_s=30)))
    adc = None
    try:
        pilot.poll(now[0])
        pilot.poll(now[0] + 0.02)
        faults = [e for e in events if isinstance(e, HardwareFault)]
        assert faults == [HardwareFault(1, FaultCode.EV_COMMUNICATION_ERROR, True,
                                        f"cannot open {chip}"[:50])]
        chip.chmod(0o660)                               # the udev rule, applied later
        now[0] += 10
        pilot.poll(now[0])
        assert Device.pin_factory is None, "the chip was tried again before retry_s"
        ensure_pin_factory()                            # as the pilot will, to wire the ADC
        adc = MockMCP3008(11, 10, 9, 8)
        adc.set(0, level_shifter(12.0), level_shifter(-12.0))    # state A
        now[0] += 20
        for _ in range(20):
            now[0] += 0.02
            pilot.poll(now[0])
        faults = [e for e in events if isinstance(e, HardwareFault)]
        assert faults[1:] == [HardwareFault(1, FaultCode.EV_COMMUNICATION_ERROR, False)]
    finally:
        pilot.close()
        if adc is not None:
            adc.close()
        kernel.stop()
