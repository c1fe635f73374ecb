"""Shared test setup. Hardware is mocked only at the pin level (gpiozero's MockFactory)."""
import os
import time
from datetime import datetime, timezone

os.environ.setdefault("GPIOZERO_PIN_FACTORY", "mock")

import pytest  # noqa: E402

from chargepoint.csms.server import LocalCsms  # noqa: E402
from chargepoint.clock import VirtualClock  # noqa: E402
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

    default_now = csms.now

    def make(overrides=None, clock=None, start=True):
        fw = Firmware(tmp_path, csms.url, overrides, clock)
        if csms.now is default_now and isinstance(fw.clock, VirtualClock):
            # The CSMS's clock runs with the charger's virtual time (from today), as a real
            # one runs with real time; otherwise every Heartbeat would move it backwards.
            shift = time.time() - fw.clock.now()
            csms.now = lambda: datetime.fromtimestamp(fw.clock.now() + shift, timezone.utc)
        started.append(fw)
        return fw.start() if start else fw

    yield make
    for fw in started:
        fw.stop()


@pytest.fixture
def station(tmp_path):
    """A bare Station core (one 32 A connector) on a real SQLite file, at STATION_NOW,
    for unit tests that feed it events directly; no loop, no link."""
    from chargepoint.model.connector import ConnectorInfo
    from chargepoint.ocpp_keys import OcppKeys
    from chargepoint.station import Station, StationConfig
    from chargepoint.store import Store

    store = Store(tmp_path / "cp.db")
    keys = OcppKeys(store, {}, {})
    st = Station(StationConfig("CP", {"chargePointVendor": "v", "chargePointModel": "m"},
                               [ConnectorInfo(1, max_current_a=32)]), keys, store, STATION_NOW)
    yield st
    store.close()



@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A folder of this test run that its pytest-xdist workers share, for what is made
    once per run (behind a lock file) rather than once per worker."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "shared"
        shared.mkdir(exist_ok=True)
        return shared
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="session")
def bundle_shelf(run_dir):
    """Release bundles of this checkout as other versions, each built once per run
    (tests/release_harness.py), by whichever worker asks first."""
    from tests.release_harness import BundleShelf  # only the release tests build bundles

    shelf = run_dir / "release-bundles"
    shelf.mkdir(exist_ok=True)
    return BundleShelf(shelf)


@pytest.fixture
def served(tmp_path):
    """The folder the loopback file servers serve, with an empty `files/` to upload into
    (a test module adds what it downloads by overriding this fixture with its own)."""
    root = tmp_path / "served"
    (root / "files").mkdir(parents=True)
    return root


@pytest.fixture
def http(served):
    """An HTTP server on loopback serving `served` (tests/file_servers.py)."""
    from chargepoint.csms.files import FileServer  # only the file transfer tests serve files
    with FileServer(served) as server:
        yield server


@pytest.fixture
def ftp(served):
    """An FTP server on loopback serving `served` (tests/file_servers.py)."""
    from tests.file_servers import FtpServer  # only the file transfer tests serve files
    with FtpServer(served) as server:
        yield server


@pytest.fixture
def chip(tmp_path, monkeypatch):
    """A GPIO chip file the user cannot open (0600), behind the `closedchip` pin factory
    gpiozero loads when asked (tests/closed_chip.py); yields its path."""
    from gpiozero import Device  # only the GPIO fault tests use it

    from tests.closed_chip import CHIP_ENV, install, make_chip  # as above

    path = make_chip(tmp_path / "gpiochip0")
    monkeypatch.syspath_prepend(str(install(tmp_path / "site")))
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "closedchip")
    monkeypatch.setenv(CHIP_ENV, str(path))
    before, Device.pin_factory = Device.pin_factory, None
    yield path
    if Device.pin_factory is not None:
        Device.pin_factory.close()
    Device.pin_factory = before
