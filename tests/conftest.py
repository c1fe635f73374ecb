"""Shared test setup. Hardware is mocked only at the pin level (gpiozero's MockFactory)."""
import os

os.environ.setdefault("GPIOZERO_PIN_FACTORY", "mock")

import pytest  # noqa: E402

from chargepoint.csms.server import LocalCsms  # noqa: E402
from tests.harness import STATION_NOW, Firmware  # noqa: E402


@pytest.fixture
def csms():
    server = LocalCsms(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop(graceful=False)


@pytest.fixture
def firmware(tmp_path, csms):
    """Factory: `firmware(overrides=None, clock=None)` -> a started Firmware, stopped after."""
    started = []

    def make(overrides=None, clock=None, start=True):
        fw = Firmware(tmp_path, csms.url, overrides, clock)
        started.append(fw)
        return fw.start() if start else fw

    yield make
    for fw in started:
        fw.stop()


@pytest.fixture
def station(tmp_path):
    """A bare Station core (one 32 A connector) on a real SQLite file, at STATION_NOW,
    for unit tests that feed it events directly; no loop, no link."""
    from chargepoint.connector import ConnectorInfo
    from chargepoint.ocpp_keys import OcppKeys
    from chargepoint.station import Station, StationConfig
    from chargepoint.store import Store

    store = Store(tmp_path / "cp.db")
    keys = OcppKeys(store, {}, {})
    st = Station(StationConfig("CP", {"chargePointVendor": "v", "chargePointModel": "m"},
                               [ConnectorInfo(1, max_current_a=32)]), keys, store, STATION_NOW)
    yield st
    store.close()

