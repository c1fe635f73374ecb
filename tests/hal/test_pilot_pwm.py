"""The pwm_adc pilot: sysfs PWM in a temporary directory laid out like /sys/class/pwm
(with a tiny stand-in for the kernel creating pwmN/ on export), and an MCP3008
emulated on gpiozero's mock SPI pins behind the reference CP level shifter."""
import gc
import queue
import threading
import weakref
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockSPIDevice, MockSPIInterfaceShared
from gpiozero.pins.spi import SPISoftwareBus
from hypothesis import given, strategies as st

from hal.events import CableDetected, FaultCode, HardwareFault, PilotStateChanged
from hal.factory import BuildContext, parse_device
from hal.interfaces import PilotState
from hal.pilot_pwm import PERIOD_NS, PwmAdcPilot, PwmAdcPilotSettings, write_plan
from hal.settings import SettingsError

VREF = 3.3


# --------------------------------------------------------------------------- hardware stand-ins

def level_shifter(cp_volts: float) -> float:
    """ADC input of the reference front end: CP -100k- node -22k- 3.3 V, node -33k- GND."""
    g = 1 / 100 + 1 / 22 + 1 / 33
    return (cp_volts / 100 + VREF / 22) / g


def pp_divider(ohms: float | None, pullup: float = 1000.0) -> float:
    """ADC input for a PP coding resistor pulled up to 3.3 V (None: no plug)."""
    return VREF if ohms is None else VREF * ohms / (ohms + pullup)


class MockMCP3008(MockSPIDevice):
    """MCP3008 slave side: start bit, single/diff bit, 3 channel bits, then a null
    bit and 10 result bits. Each channel plays a list of input voltages in turn,
    so alternating PWM plateaus can be emulated."""

    def __init__(self, *pins, **kw):
        super().__init__(*pins, **kw)
        self.inputs: dict[int, list[float]] = {ch: [0.0] for ch in range(8)}
        self.index = [0] * 8
        self.fail = False
        self.state = "idle"

    def set(self, channel: int, *volts: float) -> None:
        self.inputs[channel] = list(volts)
        self.index[channel] = 0

    def on_start(self):
        super().on_start()
        self.state = "idle"

    def on_bit(self):
        if self.fail:
            raise OSError(5, "Input/output error")
        if self.state == "idle":
            if self.rx_buf[-1]:
                self.state, self.rx_buf = "mode", []
        elif self.state == "mode":
            assert self.rx_buf[-1], "pilot must read single-ended"
            self.state, self.rx_buf = "channel", []
        elif self.state == "channel":
            if len(self.rx_buf) == 3:
                ch = self.rx_word()
                seq = self.inputs[ch]
                volts = seq[self.index[ch] % len(seq)]
                self.index[ch] += 1
                raw = round(min(max(volts, 0.0), VREF) / VREF * 1023)
                self.tx_word(raw, 12)              # null bits then 10 result bits
                self.state = "result"
        elif self.state == "result" and not self.tx_buf:
            self.state, self.rx_buf = "idle", []


class FakeKernel:
    """Creates pwmchipN/pwmM/ when M is written to export, as the kernel does."""

    def __init__(self, root: Path):
        self.root = root
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def add_chip(self, chip: int = 0) -> Path:
        d = self.root / f"pwmchip{chip}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "export").write_text("")
        return d

    def _run(self):
        while not self._stop.wait(0.001):
            for export in self.root.glob("pwmchip*/export"):
                text = export.read_text().strip()
                if text:
                    export.write_text("")
                    ch = export.parent / f"pwm{int(text)}"
                    tmp = export.parent / f".pwm{int(text)}"
                    tmp.mkdir(exist_ok=True)
                    for name in ("period", "duty_cycle", "enable"):
                        (tmp / name).write_text("0\n")
                    tmp.rename(ch)                 # appears complete, like sysfs

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


# --------------------------------------------------------------------------- fixtures

_open: list = []


@pytest.fixture
def adc():
    Device.ensure_pin_factory()
    factory = Device.pin_factory
    assert isinstance(factory, MockFactory)
    dev = MockMCP3008(11, 10, 9, 8)                  # SPI0 CE0: SCLK, MOSI, MISO, CE0
    yield dev
    while _open:                                     # pilots a failed test left open
        _open.pop().close()
    dev.close()
    factory.reset()


@pytest.fixture
def kernel(tmp_path):
    k = FakeKernel(tmp_path / "pwm")
    k.add_chip(0)
    yield k
    k.stop()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def events():
    return []


def make_pilot(kernel, clock, events, **kw) -> PwmAdcPilot:
    table = {"sysfs_root": str(kernel.root), "samples_per_poll": 8,
             "export_timeout_ms": 500, **kw}
    settings = parse_device("pilot", {"type": "pwm_adc", **table}, "connectors[0].pilot")
    pilot = settings.build(BuildContext(connector_id=1, emit=events.append, clock=clock))
    _open.append(pilot)
    return pilot


def sysfs(kernel, name, chip=0, channel=0) -> str:
    return (kernel.root / f"pwmchip{chip}" / f"pwm{channel}" / name).read_text().strip()


def set_cp(adc, *cp_volts, channel=0):
    adc.set(channel, *(level_shifter(v) for v in cp_volts))


def run(pilot, clock, seconds, step=0.02):
    """Poll every `step` for `seconds` of fake time."""
    for _ in range(round(seconds / step)):
        clock.advance(step)
        pilot.poll(clock())


def of_type(events, cls):
    return [e for e in events if isinstance(e, cls)]


def states(events):
    return [e.state for e in of_type(events, PilotStateChanged)]


def faults(events):
    return [(e.active, e.info) for e in of_type(events, HardwareFault)
            if e.code is FaultCode.EV_COMMUNICATION_ERROR]


# --------------------------------------------------------------------------- PWM

def test_export_then_period_duty_enable(kernel, clock, events, adc):
    pilot = make_pilot(kernel, clock, events)
    assert not (kernel.root / "pwmchip0" / "pwm0").exists()
    pilot.set_max_current(None)
    assert sysfs(kernel, "period") == "1000000"
    assert sysfs(kernel, "duty_cycle") == "1000000"   # 100 %: steady +12 V, not allowed
    assert sysfs(kernel, "enable") == "1"
    assert events == []
    pilot.close()


@pytest.mark.parametrize("amps,duty_ns", [
    (6, 100_000), (16, 266_667), (32, 533_333), (63, 892_000), (None, 1_000_000)])
def test_duty_cycle_for_current(kernel, clock, events, adc, amps, duty_ns):
    pilot = make_pilot(kernel, clock, events)
    pilot.set_max_current(amps)
    assert int(sysfs(kernel, "duty_cycle")) == duty_ns
    assert sysfs(kernel, "period") == "1000000"
    pilot.close()


@pytest.mark.parametrize("amps,duty_ns", [(16, 733_333), (None, 0)])
def test_inverting_driver(kernel, clock, events, adc, amps, duty_ns):
    pilot = make_pilot(kernel, clock, events, inverted=True)
    pilot.set_max_current(amps)
    assert int(sysfs(kernel, "duty_cycle")) == duty_ns
    pilot.close()


def test_other_channel_and_chip(kernel, clock, events, adc):
    kernel.add_chip(2)
    pilot = make_pilot(kernel, clock, events, pwm_chip=2, pwm_channel=1)
    pilot.set_max_current(32)
    assert sysfs(kernel, "duty_cycle", chip=2, channel=1) == "533333"
    pilot.close()


def test_channel_left_by_another_program(kernel, clock, events, adc):
    ch = kernel.root / "pwmchip0" / "pwm0"
    ch.mkdir()
    for name, value in (("period", 20_000_000), ("duty_cycle", 15_000_000), ("enable", 1)):
        (ch / name).write_text(f"{value}\n")
    pilot = make_pilot(kernel, clock, events)
    pilot.set_max_current(10)
    assert (sysfs(kernel, "period"), sysfs(kernel, "duty_cycle")) == ("1000000", "166667")
    pilot.close()


def test_below_six_amps_is_refused_and_not_allowed(kernel, clock, events, adc):
    pilot = make_pilot(kernel, clock, events)
    pilot.set_max_current(16)
    with pytest.raises(ValueError):
        pilot.set_max_current(5)
    assert sysfs(kernel, "duty_cycle") == "1000000"
    pilot.close()


def test_missing_pwm_chip_is_a_fault_then_recovers(kernel, clock, events, adc):
    set_cp(adc, 12.0)
    pilot = make_pilot(kernel, clock, events, pwm_chip=3)
    pilot.set_max_current(16)                        # must not raise
    assert faults(events) == [(True, "pilot PWM write failed")]
    assert pilot.fault_causes == {"pwm"}
    kernel.add_chip(3)                               # overlay loaded / driver back
    pilot.poll(clock())                              # retried on the next poll
    assert (kernel.root / "pwmchip3" / "pwm0").is_dir()
    assert sysfs(kernel, "duty_cycle", chip=3) == "266667"
    assert faults(events)[-1] == (False, "")
    pilot.close()


def test_write_failure_is_a_fault_not_a_crash(kernel, clock, events, adc):
    set_cp(adc, 12.0)
    pilot = make_pilot(kernel, clock, events)
    pilot.set_max_current(None)
    duty = kernel.root / "pwmchip0" / "pwm0" / "duty_cycle"
    duty.unlink()
    duty.mkdir()                                     # any write now fails with EISDIR
    pilot.set_max_current(32)
    assert [a for a, _ in faults(events)] == [True]
    assert pilot.fault_causes == {"pwm"}
    duty.rmdir()
    duty.write_text("1000000\n")
    pilot.poll(clock())
    assert sysfs(kernel, "duty_cycle") == "533333"
    assert [a for a, _ in faults(events)] == [True, False]
    pilot.close()


def test_export_that_never_appears_times_out(tmp_path, clock, events, adc, caplog):
    chip = tmp_path / "pwm" / "pwmchip0"
    chip.mkdir(parents=True)
    (chip / "export").write_text("")                 # no kernel to act on it
    settings = PwmAdcPilotSettings(sysfs_root=str(tmp_path / "pwm"), export_timeout_ms=50)
    pilot = PwmAdcPilot(settings, 1, events.append, clock)
    _open.append(pilot)
    pilot.set_max_current(None)
    assert (chip / "export").read_text() == "0\n"
    assert faults(events) == [(True, "pilot PWM write failed")]
    assert pilot.fault_causes == {"pwm"}
    assert "pwm0 did not appear after export" in caplog.text
    pilot.close()


def _kernel_accepts(steps, period, duty):
    for name, value in steps:
        if name == "duty_cycle":
            if value > period:
                return None
            duty = value
        else:
            if value < duty:
                return None
            period = value
    return period, duty


@given(cur_period=st.integers(0, 50_000_000), cur_frac=st.floats(0, 1),
       duty_frac=st.floats(0, 1), period=st.sampled_from([1_000_000, 20_000_000, 1000]))
def test_write_plan_is_always_accepted_by_the_kernel(cur_period, cur_frac, duty_frac, period):
    """The kernel refuses duty_cycle > period at every single write."""
    cur_duty = int(cur_period * cur_frac)
    duty = int(period * duty_frac)
    steps = write_plan(cur_period, cur_duty, period, duty)
    assert _kernel_accepts(steps, cur_period, cur_duty) == (period, duty)


@given(cur_period=st.integers(0, 50_000_000), cur_frac=st.floats(0, 1),
       duty_frac=st.floats(0, 1))
def test_write_plan_without_knowing_the_current_values(cur_period, cur_frac, duty_frac):
    cur_duty = int(cur_period * cur_frac)
    duty = int(PERIOD_NS * duty_frac)
    steps = write_plan(None, None, PERIOD_NS, duty)
    assert _kernel_accepts(steps, cur_period, cur_duty) == (PERIOD_NS, duty)


def test_write_plan_rejects_duty_above_period():
    with pytest.raises(ValueError):
        write_plan(0, 0, 1000, 1001)


# --------------------------------------------------------------------------- CP sampling

def test_start_reports_the_initial_state(kernel, clock, events, adc):
    set_cp(adc, 12.0)
    pilot = make_pilot(kernel, clock, events)
    assert pilot.state() is PilotState.A
    pilot.start()
    try:
        assert states(events) == [PilotState.A]
        assert sysfs(kernel, "duty_cycle") == "1000000"
    finally:
        pilot.close()


def test_plug_in_and_charge_sequence(kernel, clock, events, adc):
    set_cp(adc, 12.0)
    pilot = make_pilot(kernel, clock, events)
    pilot.poll(clock())
    set_cp(adc, 9.0)                                 # EV plugged in
    run(pilot, clock, 0.22)
    assert states(events) == [PilotState.A]          # not before 250 ms
    run(pilot, clock, 0.06)
    assert states(events) == [PilotState.A, PilotState.B]
    assert pilot.state() is PilotState.B
    pilot.set_max_current(16)
    set_cp(adc, 9.0, -12.0, -12.0, -12.0)            # PWM: high and low plateaus
    run(pilot, clock, 0.3)
    assert states(events)[-1] is PilotState.B
    set_cp(adc, 6.0, -12.0, -12.0, -12.0)            # EV asks for power
    run(pilot, clock, 0.3)
    assert states(events) == [PilotState.A, PilotState.B, PilotState.C]
    set_cp(adc, 9.0, -12.0)                          # EV stops drawing: B within 40 ms
    run(pilot, clock, 0.03, step=0.01)
    assert pilot.state() is PilotState.C
    run(pilot, clock, 0.02, step=0.01)
    assert pilot.state() is PilotState.B
    set_cp(adc, 3.0, -12.0)
    run(pilot, clock, 0.3)
    assert pilot.state() is PilotState.D
    set_cp(adc, 12.0, -12.0)                         # unplugged: A after only 25 ms
    run(pilot, clock, 0.02, step=0.01)
    assert pilot.state() is PilotState.D
    run(pilot, clock, 0.02, step=0.01)
    assert pilot.state() is PilotState.A
    assert states(events) == [PilotState.A, PilotState.B, PilotState.C, PilotState.B,
                              PilotState.D, PilotState.A]
    assert faults(events) == []
    pilot.close()


def test_glitch_shorter_than_hold_is_no_event(kernel, clock, events, adc):
    set_cp(adc, 9.0)
    pilot = make_pilot(kernel, clock, events)
    pilot.poll(clock())
    set_cp(adc, 6.0)
    run(pilot, clock, 0.2)
    set_cp(adc, 9.0)
    run(pilot, clock, 0.5)
    set_cp(adc, 6.0)
    run(pilot, clock, 0.1)
    set_cp(adc, 9.0)
    run(pilot, clock, 0.5)
    assert states(events) == [PilotState.B]
    pilot.close()


def test_glitch_while_charging_is_no_event(kernel, clock, events, adc):
    set_cp(adc, 6.0, -12.0)
    pilot = make_pilot(kernel, clock, events)
    pilot.set_max_current(16)
    pilot.poll(clock())
    set_cp(adc, 9.0, -12.0)
    run(pilot, clock, 0.03, step=0.01)               # shorter than hold_leaving_cd_ms
    set_cp(adc, 6.0, -12.0)
    run(pilot, clock, 0.5)
    assert states(events) == [PilotState.C]
    pilot.close()


def test_voltage_between_windows_is_a_fault(kernel, clock, events, adc):
    set_cp(adc, 9.0)
    pilot = make_pilot(kernel, clock, events)
    pilot.poll(clock())
    set_cp(adc, 7.5)                                 # between B and C
    run(pilot, clock, 0.2)
    assert faults(events) == []
    run(pilot, clock, 0.1)
    assert faults(events) == [(True, "pilot at 7.5 V matches no state")]
    assert pilot.state() is PilotState.B             # last valid state kept
    set_cp(adc, 9.0)
    run(pilot, clock, 0.3)
    assert faults(events)[-1] == (False, "")
    assert states(events) == [PilotState.B]
    pilot.close()


def test_short_to_pe_is_state_e(kernel, clock, events, adc):
    set_cp(adc, 9.0)
    pilot = make_pilot(kernel, clock, events)
    pilot.poll(clock())
    set_cp(adc, 0.0)
    run(pilot, clock, 0.3)
    assert pilot.state() is PilotState.E
    pilot.close()


def test_missing_diode_is_a_fault_while_pwm_runs(kernel, clock, events, adc):
    set_cp(adc, 9.0, -8.8)                           # no diode: low plateau only -8.8 V
    pilot = make_pilot(kernel, clock, events)
    pilot.poll(clock())
    run(pilot, clock, 0.5)
    assert faults(events) == []                      # 100 % duty: no low plateau to judge
    pilot.set_max_current(16)
    run(pilot, clock, 0.2)
    assert faults(events) == []
    run(pilot, clock, 0.1)
    assert faults(events) == [(True, "EV diode missing (low -8.8 V)")]
    set_cp(adc, 9.0, -12.0)                          # a proper EV
    run(pilot, clock, 0.3)
    assert faults(events)[-1] == (False, "")
    assert states(events) == [PilotState.B]
    pilot.close()


def test_sampling_catches_short_high_plateau(kernel, clock, events, adc):
    set_cp(adc, 12.0)
    pilot = make_pilot(kernel, clock, events, samples_per_poll=16)
    pilot.poll(clock())
    pilot.set_max_current(6)                         # 10 % duty: one sample in ten is high
    set_cp(adc, 6.0, *[-12.0] * 9)
    run(pilot, clock, 0.3)
    assert pilot.state() is PilotState.C
    assert faults(events) == []
    pilot.close()


def test_dead_adc_reading_zero_is_a_fault(kernel, clock, events, adc):
    set_cp(adc, 12.0)
    pilot = make_pilot(kernel, clock, events)
    pilot.poll(clock())
    adc.set(0, 0.0)                                  # MISO stuck low: -15 V
    run(pilot, clock, 0.3)
    assert [a for a, _ in faults(events)] == [True]
    adc.set(0, level_shifter(12.0))
    run(pilot, clock, 0.1)
    assert [a for a, _ in faults(events)] == [True, False]
    pilot.close()


def test_spi_error_is_a_fault_and_recovers(kernel, clock, events, adc):
    set_cp(adc, 12.0)
    adc.set(1, pp_divider(220))
    pilot = make_pilot(kernel, clock, events, adc_channel_pp=1)
    pilot.poll(clock())
    for _ in range(3):                               # the ADC is reopened after each error
        adc.fail = True
        pilot.poll(clock())
        assert faults(events)[-1] == \
            (True, "pilot ADC read failed")
        assert pilot.fault_causes == {"adc"}
        adc.fail = False
        run(pilot, clock, 0.1)
        assert faults(events)[-1] == (False, "")
    assert len(faults(events)) == 6
    set_cp(adc, 9.0)
    run(pilot, clock, 0.3)
    assert pilot.state() is PilotState.B
    assert pilot.cable_ampacity() == 32.0
    pilot.close()


# --------------------------------------------------------------------------- PP

@pytest.mark.parametrize("ohms,amps", [(1500, 13.0), (680, 20.0), (220, 32.0), (100, 63.0),
                                       (None, None)])
def test_cable_ampacity_from_pp(kernel, clock, events, adc, ohms, amps):
    set_cp(adc, 12.0)
    adc.set(1, pp_divider(ohms))
    pilot = make_pilot(kernel, clock, events, adc_channel_pp=1)
    pilot.poll(clock())
    assert pilot.cable_ampacity() == amps
    assert of_type(events, CableDetected) == [CableDetected(1, amps)]
    pilot.close()


def test_cable_change_is_debounced(kernel, clock, events, adc):
    set_cp(adc, 12.0)
    adc.set(1, pp_divider(None))
    pilot = make_pilot(kernel, clock, events, adc_channel_pp=1)
    pilot.poll(clock())
    adc.set(1, pp_divider(220))                      # plug inserted
    run(pilot, clock, 0.1)
    adc.set(1, pp_divider(None))                     # contact bounce
    run(pilot, clock, 0.04)
    adc.set(1, pp_divider(220))
    run(pilot, clock, 0.3)
    assert of_type(events, CableDetected) == [CableDetected(1, None), CableDetected(1, 32.0)]
    assert pilot.cable_ampacity() == 32.0
    pilot.close()


def test_pp_with_other_pullup(kernel, clock, events, adc):
    set_cp(adc, 12.0)
    adc.set(1, pp_divider(680, pullup=330.0))
    pilot = make_pilot(kernel, clock, events, adc_channel_pp=1, pp_pullup_ohms=330.0)
    pilot.poll(clock())
    assert pilot.cable_ampacity() == 20.0
    pilot.close()


# --------------------------------------------------------------------------- thread, close

def test_thread_samples_and_close_leaves_not_allowed(kernel, clock, adc):
    q: queue.Queue = queue.Queue()
    set_cp(adc, 12.0)
    settings = parse_device("pilot", {"type": "pwm_adc", "sysfs_root": str(kernel.root),
                                      "samples_per_poll": 4, "poll_interval_ms": 2},
                            "connectors[0].pilot")
    pilot = settings.build(BuildContext(connector_id=1, emit=q.put, clock=clock))
    _open.append(pilot)
    pilot.start()
    assert q.get(timeout=2) == PilotStateChanged(1, PilotState.A)
    pilot.set_max_current(32)
    set_cp(adc, 9.0, -12.0)
    seen = None
    for _ in range(400):                             # bounded: at most ~20 s
        clock.advance(0.05)
        try:
            seen = q.get(timeout=0.05)
            break
        except queue.Empty:
            pass
    assert seen == PilotStateChanged(1, PilotState.B)
    thread = pilot._thread
    adc.fail = True                                  # an SPI failure must not end the thread
    fault = q.get(timeout=5)
    assert isinstance(fault, HardwareFault) and fault.active
    adc.fail = False
    assert q.get(timeout=5) == HardwareFault(1, FaultCode.EV_COMMUNICATION_ERROR, False)
    assert thread.is_alive()
    pilot.close()
    assert not thread.is_alive()
    assert sysfs(kernel, "duty_cycle") == "1000000"
    assert sysfs(kernel, "enable") == "1"            # still driving steady +12 V


# --------------------------------------------------------------------------- settings

@pytest.mark.parametrize("table,key", [
    ({"adc_channel_cp": 8}, "adc_channel_cp"),
    ({"adc_channel_pp": 0}, "adc_channel_pp"),
    ({"samples_per_poll": 1}, "samples_per_poll"),
    ({"cp_scale": 0}, "cp_scale"),
    ({"poll_interval_ms": 0}, "poll_interval_ms"),
    ({"pp_pullup_ohms": -1}, "pp_pullup_ohms"),
    ({"pwm_channel": -1}, "pwm_channel"),
    ({"inverted": "yes"}, "inverted"),
    ({"cp_gain": 1.0}, "cp_gain"),
])
def test_settings_errors_name_the_key(table, key):
    with pytest.raises(SettingsError) as err:
        parse_device("pilot", {"type": "pwm_adc", **table}, "connectors[0].pilot")
    assert err.value.key == f"connectors[0].pilot.{key}"


def test_settings_defaults():
    s = parse_device("pilot", {"type": "pwm_adc"}, "p")
    assert (s.pwm_chip, s.pwm_channel, s.sysfs_root) == (0, 0, "/sys/class/pwm")
    assert (s.cp_scale, s.cp_offset) == (28.3, -15.0)
    assert s.adc_channel_pp is None and not s.inverted


def test_close_finalises_shared_spi_objects(kernel, clock, events, adc):
    """gpiozero's shared SPI objects live in reference cycles; one finalised late
    unregisters its successor, and reopening the ADC then fails "pin in use"."""
    set_cp(adc, 12.0)
    adc.set(1, pp_divider(220))
    pilot = make_pilot(kernel, clock, events, adc_channel_pp=1)
    gc.disable()                                     # only our own collection may run
    try:
        pilot.poll(clock())
        shared = [weakref.ref(o) for o in gc.get_objects()
                  if isinstance(o, (SPISoftwareBus, MockSPIInterfaceShared))]
        assert shared
        pilot.close()
        assert [r for r in shared if r() is not None] == []
    finally:
        gc.enable()
