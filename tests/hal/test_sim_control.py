"""The simulator's control socket, over a real Unix socket."""
from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
from types import SimpleNamespace

import pytest

from hal.events import (CableDetected, FaultCode, HardwareFault, PilotStateChanged,
                        TagPresented)
from hal.factory import build_hardware
from hal.interfaces import PilotState
from hal.sim import (SimContactorSettings, SimIndicatorSettings, SimLockSettings,
                     SimMeterSettings, SimPilotSettings, SimReaderSettings)
from hal.sim_control import (MAX_LINE, SimControlServer, SimNotRunning, client_main,
                             default_socket_path, send_command)


class FakeClock:
    def __init__(self):
        self.t = 500.0

    def __call__(self):
        return self.t


def _hardware(connectors: int, events: list, clock):
    specs = [SimpleNamespace(id=i, phases=3, nominal_voltage_v=230.0, max_current_a=32.0,
                             meter=SimMeterSettings(), contactor=SimContactorSettings(),
                             pilot=SimPilotSettings(), lock=SimLockSettings(),
                             indicator=SimIndicatorSettings())
             for i in range(1, connectors + 1)]
    hw = build_hardware(specs, [SimReaderSettings()], emit=events.append, clock=clock)
    hw.start()
    events.clear()
    return hw


@pytest.fixture
def sock_dir(tmp_path):
    """tmp_path, unless it is too long for a Unix socket address."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
        return
    short = tempfile.mkdtemp(prefix="cpsim-")
    yield short
    for name in os.listdir(short):
        os.unlink(os.path.join(short, name))
    os.rmdir(short)


def _rig(sock_dir, connectors=2):
    rig = SimpleNamespace(events=[], clock=FakeClock(), woken=[])
    rig.hw = _hardware(connectors, rig.events, rig.clock)
    rig.sim = rig.hw.simulator
    rig.path = os.path.join(str(sock_dir), "sim.sock")
    rig.server = SimControlServer(
        rig.sim, rig.path,
        on_command=lambda: rig.woken.append(rig.sim.status()["connectors"]["1"]["plugged"]))
    rig.server.start()
    return rig


@pytest.fixture
def rig(sock_dir):
    rig = _rig(sock_dir)
    yield rig
    rig.server.close()


@pytest.fixture
def rig1(sock_dir):
    rig = _rig(sock_dir, connectors=1)
    yield rig
    rig.server.close()


def _raw(path: str, data: bytes) -> list[dict]:
    """Send raw bytes, half-close, and parse every reply line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    return [json.loads(line) for line in received.splitlines()]


def test_socket_is_private(rig):
    assert stat.S_ISSOCK(os.stat(rig.path).st_mode)
    assert stat.S_IMODE(os.stat(rig.path).st_mode) == 0o600


def test_every_command_through_send_command(rig):
    reply = send_command(rig.path, "plug", ["1"])
    assert reply["ok"] is True and reply["result"]["pilot"] == "B"
    assert rig.events == [CableDetected(1, 32.0), PilotStateChanged(1, PilotState.B)]
    assert rig.woken == [True]                        # after the change, not before
    rig.hw.connectors[1].pilot.set_max_current(16)
    rig.events.clear()

    assert send_command(rig.path, "ev-suspend", [1])["result"]["ev_suspended"] is True
    assert send_command(rig.path, "ev-resume", ["1"])["result"]["pilot"] == "C"
    assert rig.events == [PilotStateChanged(1, PilotState.B), PilotStateChanged(1, PilotState.C)]
    rig.events.clear()

    assert send_command(rig.path, "tap", ["DEADBEEF"]) == \
        {"ok": True, "result": {"id_tag": "DEADBEEF"}}
    assert rig.events == [TagPresented("DEADBEEF", reader="sim")]
    rig.events.clear()

    assert send_command(rig.path, "fault", ["ground", "2"])["result"]["faults"] == ["ground"]
    assert send_command(rig.path, "clear-fault", ["ground", "2"])["result"]["faults"] == []
    assert rig.events == [HardwareFault(2, FaultCode.GROUND_FAILURE, True, "ground fault (simulated)"),
                          HardwareFault(2, FaultCode.GROUND_FAILURE, False, "ground fault (simulated)")]

    status = send_command(rig.path, "status", [])["result"]
    assert status["connectors"]["1"]["pilot"] == "C"
    assert status["connectors"]["2"]["pilot"] == "A"

    assert send_command(rig.path, "unplug", ["1"])["result"]["pilot"] == "A"
    assert len(rig.woken) == 8


def test_connector_may_be_left_out_with_one_connector(rig1):
    assert send_command(rig1.path, "plug", [])["result"]["connector_id"] == 1
    assert send_command(rig1.path, "fault", ["temperature"])["result"]["faults"] == ["temperature"]
    assert send_command(rig1.path, "unplug", ["ev"])["result"]["cable_in_socket"] is True


def test_unplug_at_the_ev_side_then_the_socket(rig, capsys):
    """The EV end first (allowed while locked), then the cable out of the socket."""
    send_command(rig.path, "plug", ["1"])
    rig.hw.connectors[1].lock.set_locked(True)
    rig.events.clear()
    reply = send_command(rig.path, "unplug", ["1", "ev"])
    assert reply["ok"] is True
    assert reply["result"]["plugged"] is False and reply["result"]["cable_in_socket"] is True
    assert rig.events == [PilotStateChanged(1, PilotState.A)]
    reply = send_command(rig.path, "unplug", ["1", "socket"])
    assert reply["ok"] is False and "locked" in reply["error"]
    rig.hw.connectors[1].lock.set_locked(False)
    rig.events.clear()
    assert client_main(["unplug", "1", "socket"], rig.path) == 0
    assert capsys.readouterr().out == "connector 1: pilot A, no EV, contactor open\n"
    assert rig.events == [CableDetected(1, None)]


def test_client_main_shows_a_cable_left_in_the_socket(rig, capsys):
    assert client_main(["plug", "2"], rig.path) == 0
    assert client_main(["unplug", "2", "ev"], rig.path) == 0
    assert capsys.readouterr().out.splitlines()[-1] == \
        "connector 2: pilot A, no EV, cable in the socket, contactor open"


@pytest.mark.parametrize("cmd,args,error", [
    ("fly", [], "unknown command 'fly'"),
    ("plug", ["9"], "no simulated connector 9"),
    ("plug", ["one"], "connector id is a number"),
    ("plug", [], "which connector?"),
    ("plug", ["1", "2"], "usage: plug [N]"),
    ("tap", [], "usage: tap IDTAG"),
    ("tap", ["A B"], "id tag"),
    ("fault", ["smoke", "1"], "unknown fault 'smoke'"),
    ("fault", ["meter", "0"], "not to the whole charger"),
    ("unplug", ["1"], "no EV is plugged in"),
    ("unplug", ["1", "socket"], "no cable is in the socket"),
    ("unplug", ["1", "top"], "usage: unplug [N] [ev|socket]"),
    ("unplug", ["1", "2", "ev"], "usage: unplug [N] [ev|socket]"),
    ("status", ["x"], "usage: status"),
    ("clock-step", [], "usage: clock-step SECONDS"),
    ("clock-step", ["soon"], "a clock step is a number of seconds"),
    ("clock-step", ["60"], "this charger's clock cannot be stepped"),
])
def test_bad_commands_get_a_clear_error(rig, cmd, args, error):
    reply = send_command(rig.path, cmd, args)
    assert reply["ok"] is False and error in reply["error"]
    assert rig.woken == [] and rig.events == []


def test_clock_step_steps_the_system_clock_given_by_the_runtime(rig):
    steps = []
    rig.sim.step_system_clock = steps.append
    assert send_command(rig.path, "clock-step", ["-3600"]) == \
        {"ok": True, "result": {"stepped_s": -3600.0}}
    assert steps == [-3600.0]
    assert send_command(rig.path, "clock-step", ["1e12"])["ok"] is False
    assert steps == [-3600.0]


def test_bad_requests_are_answered_and_the_server_lives_on(rig):
    replies = _raw(rig.path, b'not json\n[1, 2]\n{"cmd": "plug", "args": "1"}\n'
                             b'{"cmd": 5}\n\n{"cmd": "status"}')
    assert [r["ok"] for r in replies] == [False, False, False, False, True]
    assert "not JSON" in replies[0]["error"]
    assert '"cmd"' in replies[1]["error"]
    assert "'args' must be a list" in replies[2]["error"]
    assert "'cmd' must be a string" in replies[3]["error"]
    assert _raw(rig.path, b"\xff\xfe\n")[0]["ok"] is False


def test_huge_line_is_refused(rig):
    replies = _raw(rig.path, b'{"cmd": "tap", "args": ["' + b"A" * (MAX_LINE + 10) + b'"]}\n')
    assert replies == [{"ok": False, "error": f"request too long (over {MAX_LINE} bytes)"}]
    assert send_command(rig.path, "status", [])["ok"] is True


def test_on_command_failure_does_not_break_the_reply(sock_dir, rig):
    rig.server.on_command = lambda: 1 / 0
    assert send_command(rig.path, "plug", ["2"])["ok"] is True
    assert send_command(rig.path, "status", [])["result"]["connectors"]["2"]["plugged"] is True


def test_client_main_prints_results(rig, capsys):
    assert client_main(["plug", "1"], rig.path) == 0
    assert capsys.readouterr().out == \
        "connector 1: pilot B, EV plugged in, contactor open, battery 20 %\n"
    assert client_main(["tap", "04AABB"], rig.path) == 0
    assert capsys.readouterr().out == "card 04AABB presented\n"
    for argv in (["ev-suspend", "1"], ["ev-resume", "1"], ["fault", "lock", "1"],
                 ["clear-fault", "lock", "1"]):
        assert client_main(argv, rig.path) == 0
        assert capsys.readouterr().out.startswith("connector 1: pilot B")
    assert client_main(["fault", "temperature", "0"], rig.path) == 0
    assert capsys.readouterr().out == "charger faults: temperature\n"
    rig.hw.connectors[1].pilot.set_max_current(16)
    rig.hw.connectors[1].contactor.set_closed(True)
    rig.clock.t += 1800
    assert client_main(["status"], rig.path) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["conn", "pilot", "offered", "contactor", "lock", "cable",
                                "power", "energy", "soc", "light", "faults"]
    assert lines[1].split() == ["1", "C", "16.0", "A", "closed", "unlocked", "in", "socket",
                                "11.04", "kW", "5.520", "kWh", "29", "%", "-", "-"]
    assert lines[2].split() == ["2", "A", "-", "open", "unlocked", "out", "0.00", "kW",
                                "0.000", "kWh", "-", "-", "-"]
    assert lines[3] == "charger faults: temperature"
    assert client_main(["unplug", "1"], rig.path) == 0
    assert capsys.readouterr().out.startswith("connector 1: pilot A, no EV")


def test_client_main_reports_errors(rig, capsys):
    assert client_main(["plug", "9"], rig.path) == 1
    assert "no simulated connector 9" in capsys.readouterr().err
    assert client_main(["jump"], rig.path) == 1
    assert "unknown command 'jump'" in capsys.readouterr().err
    assert client_main([], rig.path) == 1
    assert "usage: chargepoint sim" in capsys.readouterr().err
    assert client_main(["--help"], rig.path) == 0
    assert "clear-fault" in capsys.readouterr().out


def test_absent_socket_is_a_clear_error(sock_dir, capsys):
    path = os.path.join(str(sock_dir), "nothing.sock")
    with pytest.raises(SimNotRunning):
        send_command(path, "status", [])
    assert client_main(["status"], path) == 1
    assert capsys.readouterr().err == (
        f"no simulated charger is running at {path} "
        f"(start it with `chargepoint run` or `chargepoint demo`)\n")


def test_stale_socket_is_replaced_and_a_live_one_is_not(sock_dir):
    path = os.path.join(str(sock_dir), "sim.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)                                   # what a crashed firmware leaves
    dead.close()
    events: list = []
    sim = _hardware(1, events, FakeClock()).simulator
    with SimControlServer(sim, path):
        assert send_command(path, "status", [])["ok"] is True
        with pytest.raises(FileExistsError, match="already serving"):
            SimControlServer(sim, path).start()
        assert send_command(path, "status", [])["ok"] is True
    assert not os.path.exists(path)                   # close() removes it
    with pytest.raises(SimNotRunning):
        send_command(path, "status", [])


def test_refuses_to_remove_a_file_that_is_not_a_socket(sock_dir):
    path = os.path.join(str(sock_dir), "sim.sock")
    with open(path, "w") as f:
        f.write("keep me")
    sim = _hardware(1, [], FakeClock()).simulator
    with pytest.raises(FileExistsError, match="not a socket"):
        SimControlServer(sim, path).start()
    assert open(path).read() == "keep me"


def test_creates_a_private_directory(sock_dir):
    path = os.path.join(str(sock_dir), "run", "chargepoint", "sim.sock")
    sim = _hardware(1, [], FakeClock()).simulator
    with SimControlServer(sim, path):
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        assert send_command(path, "plug", [])["ok"] is True
    os.rmdir(os.path.dirname(path))
    os.rmdir(os.path.dirname(os.path.dirname(path)))


def test_refuses_a_directory_others_can_write(sock_dir):
    directory = os.path.join(str(sock_dir), "open")
    os.mkdir(directory)
    os.chmod(directory, 0o777)
    sim = _hardware(1, [], FakeClock()).simulator
    with pytest.raises(PermissionError, match="writable by others"):
        SimControlServer(sim, os.path.join(directory, "sim.sock")).start()
    os.rmdir(directory)


def test_default_socket_path(monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert default_socket_path() == "/run/user/1000/chargepoint/sim.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_socket_path() == f"/tmp/chargepoint-{os.getuid()}/sim.sock"
