"""The loop's turn accounting: every turn timed, the worst kept, and the time from a hardware
event being queued to the contactor it opened."""
from chargepoint.turns import Stamped, TurnAccounting
from hal.events import PilotStateChanged
from hal.interfaces import PilotState
from hal.sim_control import format_status, send_command
from tests.harness import wait_until


class Clock:
    def __init__(self):
        self.t = 10.0

    def __call__(self):
        return self.t


def test_the_worst_turn_is_kept_not_the_last_or_the_mean():
    clock = Clock()
    turns = TurnAccounting(clock)
    for length in (0.001, 0.250, 0.002):
        turns.unwrap(None)
        clock.t += length
        turns.end()
    assert turns.turns == 3
    assert round(turns.worst_turn_s, 6) == 0.25


def test_contactor_latency_runs_from_the_queued_hardware_event_to_the_open_contactor():
    clock = Clock()
    turns = TurnAccounting(clock)
    event = PilotStateChanged(1, PilotState.A)
    stamped = Stamped(event, queued_at=clock.t)
    clock.t += 0.040                                 # waited in the queue
    assert turns.unwrap(stamped) is event
    clock.t += 0.005
    turns.contactor_opened()
    turns.contactor_opened()                         # a second connector: same event
    turns.end()
    assert turns.contactor_opens == 1
    assert round(turns.worst_open_s, 6) == 0.045
    snap = turns.snapshot()
    assert snap["worst_contactor_open_ms"] == snap["last_contactor_open_ms"] == 45.0
    assert snap["turns"] == 1 and snap["worst_turn_ms"] == 5.0


def test_an_open_contactor_not_caused_by_hardware_is_not_counted():
    clock = Clock()
    turns = TurnAccounting(clock)
    turns.unwrap(None)                               # a timer, a CSMS RemoteStop...
    turns.contactor_opened()
    turns.end()
    turns.unwrap(Stamped(PilotStateChanged(1, PilotState.B), clock.t))
    turns.end()                                      # a hardware event that opens nothing
    turns.unwrap(None)
    turns.contactor_opened()
    turns.end()
    assert turns.contactor_opens == 0 and turns.last_open_s is None


def test_the_running_firmware_reports_its_turns_in_the_simulators_status(csms, firmware):
    """Unplugging a charging EV opens the contactor; `status` on the sim control socket
    then carries the firmware's figures for that opening."""
    fw = firmware()
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    fw.settle()
    sock = fw.settings.system.sim_socket
    send_command(sock, "plug", ["1"])
    send_command(sock, "tap", ["04A1B2C3"])
    assert wait_until(lambda: fw.sim.status()["connectors"]["1"]["contactor"] == "closed", 10)
    before = send_command(sock, "status", [])["result"]["loop"]
    assert before["contactor_opens"] == 0 and before["turns"] > 0
    send_command(sock, "unplug", ["1"])
    assert wait_until(lambda: send_command(sock, "status", [])["result"]["loop"]
                      ["contactor_opens"] == 1, 10)
    after = send_command(sock, "status", [])["result"]
    assert after["connectors"]["1"]["contactor"] == "open"
    loop = after["loop"]
    assert 0 < loop["last_contactor_open_ms"] == loop["worst_contactor_open_ms"]
    assert loop["worst_turn_ms"] > 0 and loop["turns"] > before["turns"]
    assert "firmware loop: " in format_status(after)          # `chargepoint sim status`
