"""OpenEVSE over RAPI: the pure framing, and the pilot, relay and meter against a
simulated board answering on a real pseudo-terminal."""
from __future__ import annotations

import queue
import threading
import time
from functools import reduce

import pytest
from hypothesis import given, strategies as st

from hal import rapi
from hal.events import FaultCode, HardwareFault, PilotStateChanged
from hal.factory import BuildContext, parse_device
from hal.interfaces import MeterUnavailable, PilotState
from hal.openevse import (OpenEvseMeterSettings, OpenEvseRelaySettings, OpenEvseSettings)
from hal.settings import SettingsError, parse_table
from tests.hal.serial_sim import PtyDevice


def xor(text: str) -> int:
    return reduce(lambda a, c: a ^ ord(c), text, 0)


def line(text: str) -> bytes:
    """A board line with its XOR checksum, built here independently of hal.rapi."""
    return f"{text}^{xor(text):02X}\r".encode()


# =========================================================================== framing

def test_commands_carry_the_documented_checksums():
    assert rapi.encode_command("GS") == b"$GS^30\r"             # rapi_proc.h examples
    assert rapi.encode_command("GU") == b"$GU^36\r"
    assert rapi.encode_command("FE", checksum="additive") == b"$FE*AF\r"
    assert rapi.encode_command("FS", checksum="additive") == b"$FS*BD\r"
    assert rapi.encode_command("SC", 16, "V") == line("$SC 16 V")


@pytest.mark.parametrize("raw, expected", [
    (line("$OK 03 120 03 0140"), rapi.Message("OK", ("03", "120", "03", "0140"), True)),
    (b"$NK^21", rapi.Message("NK", (), True)),
    (b"$OK 1 0*5F", rapi.Message("OK", ("1", "0"), True)),          # legacy additive
    (b"$OK 3 0", rapi.Message("OK", ("3", "0"), False)),            # RAPI 1.x, no checksum
    (line("$OK 20 :0A"), rapi.Message("OK", ("20",), True, 0x0A)),  # RAPI 3 sequence id
    (line("$AT 02 02 32 0100"), rapi.Message("AT", ("02", "02", "32", "0100"), True)),
])
def test_parse_lines(raw, expected):
    assert rapi.parse_line(raw.rstrip(b"\r")) == expected


def test_additive_example_is_right():
    assert sum(b"$OK 1 0") & 0xFF == 0x5F
    assert xor("$NK") == 0x21


@pytest.mark.parametrize("raw", [b"$OK 03 0 03 0100^31", b"OK 1^00", b"$^00", b"$OK\x01^00",
                                 b"$OK 1^ZZ", b"$\xff\xfe"])
def test_bad_lines_are_rejected(raw):
    with pytest.raises(rapi.RapiError):
        rapi.parse_line(raw)


@pytest.mark.parametrize("token, state", [
    ("01", 1), ("03", 3), ("fe", 254), ("FF", 255), ("254", 254), ("255", 255),
    ("0a", 10), ("10", 10), ("0b", 11), ("11", 11), ("0e", 14), ("14", 14), ("0c", 12)])
def test_state_tokens_in_hex_and_old_decimal(token, state):
    assert rapi.parse_state(token) == state


def test_status_fields():
    s = rapi.status_from_gs(("fe", "0", "02", "0100"))
    assert (s.evse_state, s.pilot_state, s.ev_connected) == (254, 2, True)
    assert rapi.status_from_gs(("254", "0")).ev_connected is None
    at = rapi.status_from_at(("03", "03", "16", "0140"))
    assert (at.evse_state, at.current_capacity, at.vflags) == (3, 16, 0x140)
    assert rapi.energy_from_gu(("7200", "1500")) == (2.0, 1500.0)
    assert rapi.current_voltage_from_gg(("15500", "-1")) == (15.5, None)
    assert rapi.current_voltage_from_gg(("-1",)) == (None, None)


def test_splitter_resynchronises_on_dollar():
    sp = rapi.LineSplitter()
    assert sp.feed(b"noise$OK 1\x00$O") == []
    assert sp.feed(b"K 2^") + sp.feed(b"15\r\n") == [b"$OK 2^15"]


@given(st.binary(max_size=200), st.integers(0, 60))
def test_a_good_line_after_any_noise_is_recognised(noise, cut):
    sp = rapi.LineSplitter()
    good = line("$OK 03 7 03 0140")
    stream = noise + good
    lines = sp.feed(stream[:cut]) + sp.feed(stream[cut:])
    assert rapi.parse_line(lines[-1]) == rapi.Message("OK", ("03", "7", "03", "0140"), True)
    for other in lines[:-1]:                    # noise: either rejected or a valid line
        try:
            rapi.parse_line(other)
        except rapi.RapiError:
            pass


# =========================================================================== simulated board

class SimBoard:
    """An OpenEVSE board (RAPI 5 unless `legacy`): verifies command checksums, answers
    with XOR checksums, follows the vehicle on its pilot, sends $AT when its state
    changes. Knobs: faults, silence, $NK to everything, noise, corrupted answers."""

    def __init__(self) -> None:
        self.vehicle = "A"               # what the vehicle presents: A, B or C
        self.sleeping = False
        self.disabled = False
        self.fault: int | None = None
        self.capacity = 32
        self.min_amps, self.max_amps = 6, 32
        self.session_ws, self.total_wh = 0, 0
        self.milliamps, self.millivolts = 0, -1
        self.silent = False
        self.refuse_all = False
        self.noise = b""
        self.corrupt = 0
        self.legacy = False
        self.notify = True
        self.commands: list[str] = []
        self._buf = b""
        self._last_at = None
        self._cond = threading.Condition()

    # -- what the board reports
    def evse_state(self) -> int:
        if self.fault is not None:
            return self.fault
        if self.disabled:
            return 0xFF
        if self.sleeping:
            return 0xFE
        return {"A": 1, "B": 2, "C": 3}[self.vehicle]

    def vflags(self) -> int:
        flags = 0x0100 if self.vehicle != "A" else 0
        return flags | (0x0040 if self.evse_state() == 3 else 0)

    def at(self) -> bytes:
        pilot = {"A": 1, "B": 2, "C": 3}[self.vehicle]
        return line(f"$AT {self.evse_state():02x} {pilot:02x} {self.capacity} "
                    f"{self.vflags():04x}")

    def notify_if_changed(self) -> bytes:
        at = self.at()
        if self.legacy or not self.notify or at == self._last_at:
            return b""
        self._last_at = at
        return at

    def wait_command(self, prefix: str, timeout: float = 3.0) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: any(c.startswith(prefix) for c in self.commands), timeout)

    # -- the serial side
    def __call__(self, data: bytes) -> bytes:
        self._buf += data
        out = b""
        while b"\r" in self._buf:
            raw, self._buf = self._buf.split(b"\r", 1)
            raw = raw[raw.rfind(b"$"):] if b"$" in raw else b""
            if len(raw) < 4 or raw[-3:-2] not in (b"^", b"*"):
                continue
            body, mark, chk = raw[:-3].decode(), raw[-3:-2], int(raw[-2:], 16)
            want = xor(body) if mark == b"^" else sum(body.encode()) & 0xFF
            if chk != want:
                out += self._reply(False)
                continue
            with self._cond:
                self.commands.append(body[1:])
                self._cond.notify_all()
            if self.silent:
                continue
            out += self.noise + self._handle(body[1:].split()) + self.notify_if_changed()
        return out

    def _reply(self, ok: bool, *args) -> bytes:
        text = "$" + " ".join(["OK" if ok else "NK", *map(str, args)])
        if self.legacy:
            return text.encode() + b"\r"
        out = line(text)
        if self.corrupt:
            self.corrupt -= 1
            out = out[:-3] + (b"00" if out[-3:-1] != b"00" else b"11") + b"\r"
        return out

    def _handle(self, tokens: list[str]) -> bytes:
        cmd, args = tokens[0], tokens[1:]
        if self.refuse_all:
            return self._reply(False)
        if cmd == "SC":
            want = int(args[0])
            self.capacity = min(max(want, self.min_amps), self.max_amps)
            return self._reply(self.capacity == want, self.capacity)
        if cmd == "FE":
            self.sleeping = self.disabled = False
            return self._reply(True)
        if cmd == "FS":
            self.sleeping = True
            return self._reply(True)
        if cmd == "FD":
            self.disabled = True
            return self._reply(True)
        if cmd == "GS":
            if self.legacy:
                return self._reply(True, self.evse_state(), 0)
            pilot = {"A": 1, "B": 2, "C": 3}[self.vehicle]
            return self._reply(True, f"{self.evse_state():02x}", 0, f"{pilot:02x}",
                               f"{self.vflags():04x}")
        if cmd == "G0":
            return self._reply(True, 0 if self.vehicle == "A" else 1)
        if cmd == "GU":
            return self._reply(True, self.session_ws, self.total_wh)
        if cmd == "GG":
            return self._reply(True, self.milliamps, self.millivolts)
        return self._reply(False)

    def unplug_vehicle(self) -> None:
        """The EV leaves: the board closes the session into its total."""
        self.vehicle = "A"
        self.total_wh += self.session_ws // 3600


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A connector wired to a simulated board: pilot, relay and meter on one port."""

    def __init__(self, tmp_path, clock=None, timeout_ms: int = 150):
        self.clock = clock or FakeClock()
        self.events: queue.Queue = queue.Queue()
        self.link = tmp_path / "ttyEVSE"
        self.sim = SimBoard()
        self.device = PtyDevice(self.link, self.sim)
        self.ctx = BuildContext(connector_id=1, emit=self.events.put, clock=self.clock,
                                phases=1)
        common = {"type": "openevse", "port": str(self.link), "timeout_ms": timeout_ms}
        self.pilot = parse_device("pilot", common, "connectors[0].pilot").build(self.ctx)
        self.relay = parse_table(OpenEvseRelaySettings, {"port": str(self.link)},
                                 "connectors[0].contactor").build(self.ctx)
        self.meter = parse_table(OpenEvseMeterSettings, {"port": str(self.link),
                                                         "timeout_ms": timeout_ms},
                                 "connectors[0].meter").build(self.ctx)

    def poll(self, advance: float = 1.0) -> list:
        self.clock.now += advance
        self.pilot.poll(self.clock.now)
        return self.drain()

    def drain(self) -> list:
        out = []
        while not self.events.empty():
            out.append(self.events.get_nowait())
        return out

    def push(self, data: bytes) -> None:
        """An unsolicited line from the board (the port keeps it until the next poll)."""
        self.device.write(data)

    def close(self) -> None:
        for dev in (self.pilot, self.relay, self.meter):
            dev.close()
        self.device.close()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def changed(state: PilotState) -> PilotStateChanged:
    return PilotStateChanged(1, state)


def fault(code: FaultCode, active: bool) -> tuple:
    return (1, code, active)


def faults(events) -> list[tuple]:
    return [(e.connector_id, e.code, e.active) for e in events if isinstance(e, HardwareFault)]


# =========================================================================== pilot

def test_first_poll_withdraws_the_offer_and_reports_the_state(rig):
    assert rig.poll() == [changed(PilotState.A)]
    assert rig.sim.commands == ["FS", "GS"]
    assert rig.pilot.state() is PilotState.A
    assert rig.poll() == []                                  # unchanged: nothing new
    assert rig.sim.commands[-1] == "GS"


def test_plug_in_offer_charge_and_stop(rig):
    rig.poll()
    rig.sim.vehicle = "B"                                    # sleeping board, EV plugged
    assert rig.poll() == [changed(PilotState.B)]
    rig.pilot.set_max_current(15.9)
    rig.sim.commands.clear()
    assert rig.poll() == []
    assert rig.sim.commands == ["SC 15 V", "FE", "GS"]       # volatile, rounded down
    rig.sim.vehicle = "C"
    assert rig.poll() == [changed(PilotState.C)]
    assert rig.relay.feedback_closed() is True
    rig.pilot.set_max_current(None)
    rig.sim.commands.clear()
    rig.poll()
    assert rig.sim.commands == ["FS", "GS"]
    assert rig.relay.feedback_closed() is False
    rig.sim.vehicle = "B"
    assert rig.poll() == [changed(PilotState.B)]


def test_offer_below_six_amps_is_refused(rig):
    with pytest.raises(ValueError):
        rig.pilot.set_max_current(5.9)


def test_board_that_cannot_offer_as_little_stays_asleep(rig):
    rig.poll()
    rig.sim.min_amps = 10
    rig.pilot.set_max_current(6)
    rig.sim.commands.clear()
    rig.poll()
    assert rig.sim.commands == ["SC 6 V", "FS", "GS"]
    assert rig.sim.sleeping


def test_board_clamping_down_is_accepted(rig):
    rig.poll()
    rig.sim.max_amps = 16
    rig.pilot.set_max_current(32)
    rig.sim.commands.clear()
    rig.poll()
    assert rig.sim.commands == ["SC 32 V", "FE", "GS"]
    assert rig.sim.capacity == 16


@pytest.mark.parametrize("state, code", [
    (0x05, FaultCode.EV_COMMUNICATION_ERROR), (0x06, FaultCode.GROUND_FAILURE),
    (0x07, FaultCode.GROUND_FAILURE), (0x08, FaultCode.POWER_SWITCH_FAILURE),
    (0x09, FaultCode.GROUND_FAILURE), (0x0A, FaultCode.HIGH_TEMPERATURE),
    (0x0B, FaultCode.OVER_CURRENT_FAILURE), (0x0E, FaultCode.POWER_SWITCH_FAILURE),
    (0x0C, FaultCode.OTHER_ERROR)])
def test_board_fault_states_are_faults_cleared_when_normal(rig, state, code):
    rig.sim.vehicle = "B"
    rig.poll()
    rig.sim.fault = state
    events = rig.poll()
    assert faults(events) == [fault(code, True)]
    assert changed(PilotState.F) in events
    assert rig.poll() == []                                  # reported once
    rig.sim.fault = None
    events = rig.poll()
    assert faults(events) == [fault(code, False)]
    assert changed(PilotState.B) in events


def test_one_fault_turning_into_another(rig):
    rig.poll()
    rig.sim.fault = 0x06
    rig.poll()
    rig.sim.fault = 0x08
    assert faults(rig.poll()) == [fault(FaultCode.GROUND_FAILURE, False),
                                  fault(FaultCode.POWER_SWITCH_FAILURE, True)]


def test_silent_board_is_one_communication_fault_then_recovers(rig):
    rig.pilot.set_max_current(16)
    rig.poll()
    rig.sim.silent = True
    assert rig.poll() == [] and rig.poll() == []             # a hiccup is not a fault yet
    events = rig.poll()
    assert faults(events) == [fault(FaultCode.EV_COMMUNICATION_ERROR, True)]
    assert changed(PilotState.F) in events
    assert rig.poll() == []
    rig.sim.silent = False
    rig.sim.sleeping = True                                  # it restarted meanwhile
    rig.sim.commands.clear()
    events = rig.poll()
    assert faults(events) == [fault(FaultCode.EV_COMMUNICATION_ERROR, False)]
    assert changed(PilotState.A) in events
    assert rig.sim.commands[:2] == ["SC 16 V", "FE"]         # the offer is sent again
    assert not rig.sim.sleeping


def test_nk_to_everything_is_a_fault(rig):
    rig.poll()
    rig.sim.refuse_all = True
    for _ in range(2):
        assert rig.poll() == []
    assert faults(rig.poll()) == [fault(FaultCode.EV_COMMUNICATION_ERROR, True)]


def test_noise_and_notifications_around_answers_are_harmless(rig):
    rig.sim.noise = b"\x00\xff garbage $OK\r\n$AT zz\r$GS" + line("$WF 01")
    rig.sim.vehicle = "B"
    assert rig.poll() == [changed(PilotState.B)]
    rig.sim.vehicle = "C"
    rig.pilot.set_max_current(20)
    assert rig.poll() == [changed(PilotState.C)]
    assert rig.sim.capacity == 20


def test_corrupted_answer_is_dropped_and_the_next_poll_succeeds(rig):
    rig.poll()
    rig.sim.notify = False                                   # only $GS tells the news
    rig.sim.vehicle = "B"
    rig.sim.corrupt = 1
    assert rig.poll() == []                                  # that answer was not trusted
    assert rig.poll() == [changed(PilotState.B)]


def test_board_restart_notification_sends_the_offer_again(rig):
    rig.pilot.set_max_current(16)
    rig.poll()
    rig.sim.capacity = 32                                    # back to its EEPROM value
    rig.push(line("$AB 00 8.2.1"))
    rig.sim.commands.clear()
    rig.poll()                                               # reads the notification ...
    rig.poll()                                               # ... and acts on it
    assert "SC 16 V" in rig.sim.commands
    assert rig.sim.capacity == 16


def test_board_waking_on_its_own_is_put_back_to_sleep(rig):
    rig.poll()
    rig.sim.sleeping = False                                 # someone pressed its button
    rig.sim.vehicle = "B"
    rig.sim.commands.clear()
    rig.poll()
    rig.poll()
    assert "FS" in rig.sim.commands
    assert rig.sim.sleeping


def test_async_state_notification_is_applied(rig):
    rig.poll()
    rig.sim.vehicle = "B"
    rig.push(rig.sim.at())                                   # the board announces it
    rig.sim.vehicle = "A"                                    # and $GS later says A again
    events = rig.poll()
    assert events == [changed(PilotState.B), changed(PilotState.A)]


def test_legacy_board_without_checksums_or_vflags(rig):
    rig.sim.legacy = True
    rig.pilot.set_max_current(None)
    assert rig.poll() == [changed(PilotState.A)]
    rig.sim.vehicle = "B"
    rig.sim.commands.clear()
    assert rig.poll() == [changed(PilotState.B)]
    assert rig.sim.commands == ["GS", "G0"]                  # asleep: ask about the EV
    rig.sim.fault = 10                                       # decimal over temperature
    assert faults(rig.poll()) == [fault(FaultCode.HIGH_TEMPERATURE, True)]


def test_unplugged_adapter_is_a_fault_and_recovers(rig):
    rig.pilot.set_max_current(16)
    rig.poll()
    rig.device.vanish()
    events = rig.poll()
    assert faults(events) == [fault(FaultCode.EV_COMMUNICATION_ERROR, True)]
    assert rig.poll(advance=0.01) == []                     # within the backoff
    rig.sim = SimBoard()
    rig.sim.sleeping = True
    rig.device = PtyDevice(rig.link, rig.sim)
    events = rig.poll(advance=10)
    assert faults(events) == [fault(FaultCode.EV_COMMUNICATION_ERROR, False)]
    assert rig.sim.commands[:2] == ["SC 16 V", "FE"]


def test_thread_reports_initial_state_applies_offers_promptly_and_sleeps_on_close(tmp_path):
    r = Rig(tmp_path, clock=time.monotonic)
    try:
        r.pilot.start()
        assert r.events.get(timeout=3) == changed(PilotState.A)
        r.sim.commands.clear()
        r.pilot.set_max_current(16)                          # long before the next poll
        assert r.sim.wait_command("FE", timeout=0.5)
        started = time.monotonic()
        r.pilot.close()
        assert time.monotonic() - started < 1.0
        assert r.sim.commands[-1] == "FS"
        assert r.sim.sleeping
    finally:
        r.relay.close()
        r.meter.close()
        r.device.close()


def test_pilot_settings():
    s = parse_device("pilot", {"type": "openevse", "port": "/dev/ttyUSB0"}, "c.pilot")
    assert s == OpenEvseSettings(port="/dev/ttyUSB0", baudrate=115200, poll_interval_ms=1000,
                                 timeout_ms=500, checksum="xor")
    for key, value in [("timeout_ms", 5), ("poll_interval_ms", 10), ("checksum", "crc")]:
        with pytest.raises(SettingsError) as err:
            parse_device("pilot", {"type": "openevse", "port": "/dev/x", key: value}, "c.pilot")
        assert err.value.key == f"c.pilot.{key}"


def test_pilot_relay_and_meter_share_one_port(rig):
    assert len(rig.ctx.shared) == 1


def test_board_commands(rig):
    (board,) = rig.ctx.shared.values()
    rig.sim.vehicle = "B"
    board.disable()
    status = board.get_state()
    assert (status.evse_state, status.ev_connected) == (0xFF, True)
    board.enable()
    assert board.get_state().evse_state == 2
    assert board.set_current_capacity(40) == 32              # $NK 32: clamped
    rig.sim.milliamps = 6500
    assert board.get_current_voltage() == (6.5, None)
    rig.sim.session_ws, rig.sim.total_wh = 1800, 42
    assert board.get_energy() == (0.5, 42.0)
    assert rig.sim.commands == ["FD", "GS", "FE", "GS", "SC 40 V", "GG", "GU"]


# =========================================================================== meter

def test_meter_register_during_and_after_a_session(rig):
    rig.sim.total_wh = 1000
    rig.sim.vehicle = "C"
    rig.sim.session_ws = 3600 * 250 + 1800                  # 250.5 Wh so far
    rig.sim.milliamps, rig.sim.millivolts = 16_000, 231_500
    r = rig.meter.read()
    assert r.energy_import_wh == pytest.approx(1250.5)
    assert r.current_a == (16.0,) and r.voltage_v == (231.5,)
    rig.sim.unplug_vehicle()                                 # total becomes 1250 (whole Wh)
    rig.sim.millivolts = -1
    r = rig.meter.read()
    assert r.energy_import_wh == pytest.approx(1250.5)       # held, not going back
    assert r.voltage_v is None
    rig.sim.vehicle = "B"
    rig.sim.session_ws = 3600 * 10                           # next session: 10 Wh
    assert rig.meter.read().energy_import_wh == pytest.approx(1260)


def test_meter_unavailable_when_the_board_cannot_meter_or_is_silent(rig):
    rig.sim.refuse_all = True
    with pytest.raises(MeterUnavailable):
        rig.meter.read()
    rig.sim.refuse_all = False
    rig.sim.silent = True
    with pytest.raises(MeterUnavailable):
        rig.meter.read()
