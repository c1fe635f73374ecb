"""End-to-end harness: the real firmware loop, real sockets, a virtual or real clock.

`Firmware` runs `chargepoint.runtime.Runtime` in a thread against the loopback
CSMS (`chargepoint.csms.server.LocalCsms`), with the simulated hardware and a real
SQLite file. With a `VirtualClock`, `advance(seconds)` walks time from deadline
to deadline and lets the network settle in between, so hours of charging run in
milliseconds and deterministically.
"""
from __future__ import annotations

import copy
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

from chargepoint.clock import VirtualClock
from chargepoint.config import parse_settings
from chargepoint.runtime import Runtime

#: The instant the `station` fixture (tests/conftest.py) starts at: 2026-01-01T00:00:00Z.
STATION_NOW = 1_767_225_600.0

BASE_SETTINGS: dict[str, Any] = {
    "csms": {"charge_point_id": "CP-1", "reconnect_min_s": 0.05, "reconnect_max_s": 0.2,
             "response_timeout_s": 5},
    "identity": {"vendor": "TestVendor", "model": "TestModel", "serial_number": "SN-1"},
    "log": {"level": "debug"},
    "ocpp": {"WebSocketPingInterval": 0},
    "connectors": [{"id": 1, "fixed_cable": True, "meter": {"type": "sim"},
                    "contactor": {"type": "sim"}, "pilot": {"type": "sim"},
                    "indicator": {"type": "sim"}}],
    "readers": [{"type": "sim"}],
}


def merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def in_a_commit(thread: threading.Thread) -> bool:
    """`thread` (the firmware's loop) waits inside chargepoint/store.py: for the database's
    write lock, as a stalled card holds a commit."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_filename.endswith("chargepoint/store.py"):
            return True
        frame = frame.f_back
    return False


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Firmware:
    def __init__(self, tmp_path: Path, csms_url: str, overrides: Optional[dict] = None,
                 clock=None):
        data = merge(BASE_SETTINGS, overrides or {})
        data["csms"].setdefault("url", csms_url)
        data.setdefault("storage", {})["path"] = str(tmp_path / "chargepoint.db")
        data.setdefault("system", {})["sim_socket"] = str(tmp_path / "sim.sock")
        self.data = data
        self.settings = parse_settings(data, "<test>")
        self.clock = clock if clock is not None else VirtualClock()
        self.runtime: Optional[Runtime] = None
        self._thread: Optional[threading.Thread] = None
        self.outcome = None

    # -- life cycle
    def start(self) -> "Firmware":
        self.runtime = Runtime(self.settings, clock=self.clock)
        self._thread = threading.Thread(target=self._run, name="firmware", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        self.outcome = self.runtime.run()

    def stop(self) -> None:
        if self.runtime is not None and self._thread is not None:
            self.runtime.stop()
            self._thread.join(timeout=10)
            assert not self._thread.is_alive(), "firmware loop did not stop"
        self._thread = None

    def restart(self) -> "Firmware":
        self.stop()
        return self.start()

    def cut_power(self) -> None:
        """Stop as a power cut would: only what was committed to SQLite survives."""
        if self.runtime is not None and self._thread is not None:
            self.runtime.cut_power()
            self._thread.join(timeout=10)
            assert not self._thread.is_alive(), "firmware loop did not stop"
        self._thread = None

    @property
    def station(self):
        return self.runtime.station

    @property
    def sim(self):
        return self.runtime.hardware.simulator

    # -- virtual time
    def settle(self, timeout: float = 2.0) -> bool:
        """Wait until the loop is idle with nothing in flight (held for a few polls)."""
        streak = 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.runtime.quiescent():
                streak += 1
                if streak >= 3:
                    return True
            else:
                streak = 0
            time.sleep(0.005)
        return False

    def advance(self, seconds: float) -> None:
        """Move virtual time forward, firing every deadline on the way in order."""
        assert isinstance(self.clock, VirtualClock)
        target = self.clock.now() + seconds
        while True:
            self.settle()
            deadline = self.station.next_deadline()
            if deadline is None or deadline > target:
                break
            self.clock.set(max(deadline, self.clock.now()))
            self.runtime.wake()
        self.clock.set(target)
        self.runtime.wake()
        self.settle()


# -- settings and CSMS-side helpers shared by the end-to-end tests

def base_connector(**changes) -> dict:
    """The base settings' connector 1 (sim devices, fixed cable), with `changes`."""
    conn = copy.deepcopy(BASE_SETTINGS["connectors"][0])
    conn.update(changes)
    return conn


def socket_outlet(**changes) -> dict:
    """A connector without a fixed cable: the driver brings the cable, a lock holds it."""
    changes.setdefault("lock", {"type": "sim"})
    return base_connector(fixed_cable=False, **changes)


def statuses(csms, cid: int = 1, after: int = 0) -> list[str]:
    """The statuses the CSMS received for connector `cid`, in order."""
    return [r["status"] for r in csms.records("StatusNotification", after=after)
            if r["connectorId"] == cid]


def wait_status(csms, status: str, cid: int = 1, after: int = 0):
    return csms.wait_for("StatusNotification", lambda r: r["connectorId"] == cid
                         and r["status"] == status, after=after)



def booted(csms, firmware, overrides: Optional[dict] = None) -> "Firmware":
    """`firmware(overrides)` (the conftest factory) once `csms` has its connector's status
    and the loop has settled: ready to be asked something."""
    fw = firmware(overrides)
    csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1)
    fw.settle()
    return fw
