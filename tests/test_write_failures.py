"""Write failures: memory never runs ahead of disk, and a session survives a failing disk.

The state machine drives the real Station core on a real SQLite file through sessions,
samples, deliveries and power cuts while the disk under SQLite fails at any write
(tests/failing_disk.py), and checks after every step that what memory holds is what the
disk holds, and at the end that every transaction got exactly one StopTransaction,
billed with the reading taken at its stop.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import tempfile
import time
from types import SimpleNamespace
from collections import deque
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as hs
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from chargepoint import actions as act
from chargepoint import events as ev
from chargepoint.protocol import ocppj
from chargepoint.model.connector import ConnectorInfo
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.station import Station, StationConfig
from chargepoint.store import Store
from hal import events as he
from hal.interfaces import MeterReading, PilotState
from tests.failing_disk import FULL, IO_ERROR, FailingDisk
from tests.harness import STATION_NOW, wait_until

TAG = "TAG1"


class Csms:
    """Answers every CALL at once, as a Central System that recognises a repeated
    unique id (the same transactionId for the same StartTransaction)."""

    def __init__(self):
        self.received: list[tuple[str, str, dict]] = []
        self.tids: dict[str, int] = {}

    def answer(self, uid: str, action: str, payload: dict) -> dict:
        self.received.append((action, uid, payload))
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": "2026-01-01T00:00:00Z",
                    "interval": 300}
        if action == "Heartbeat":
            return {"currentTime": "2026-01-01T00:00:00Z"}
        if action == "Authorize":
            return {"idTagInfo": {"status": "Accepted"}}
        if action == "StartTransaction":
            tid = self.tids.setdefault(uid, len(self.tids) + 1)
            return {"transactionId": tid, "idTagInfo": {"status": "Accepted"}}
        return {}

    def messages(self, action: str) -> dict[str, dict]:
        """Distinct messages of `action` by unique id (repeats are one message)."""
        return {uid: p for a, uid, p in self.received if a == action}


class Rig:
    """One charger: the core, its disk, a meter that moves, a CSMS that answers."""

    def __init__(self, path: Path):
        self.path = path
        self.now = STATION_NOW
        self.meter = 1000.0
        self.plugged = False
        self.csms = Csms()
        #: meterStart of a transaction -> the reading its stop took (what must be billed).
        self.expected_stop: dict[int, int] = {}
        self._stop_for: int | None = None
        self.boot()

    def boot(self) -> None:
        self.store = Store(self.path)
        keys = OcppKeys(self.store, {"MeterValueSampleInterval": "10"}, {})
        self.station = Station(StationConfig("CP", {"chargePointVendor": "v",
                                                    "chargePointModel": "m"},
                                             [ConnectorInfo(1, max_current_a=32)]),
                               keys, self.store, self.now)
        self.disk = FailingDisk.install(self.store)
        self.feed(he.PilotStateChanged(1, PilotState.C if self.plugged else PilotState.A))
        self.feed(ev.Connected())

    def power_cut(self, clean: bool = False) -> None:
        if clean:                                  # SIGTERM: transactions end with Reboot
            self.station.shutdown(self.now)
        full, self.disk.full = self.disk.full, False
        self.store.close()
        self._stop_for = None
        self.boot()
        self.disk.full = full

    def feed(self, event) -> None:
        events = deque([event])
        while events:
            for action in self.station.handle(events.popleft(), self.now):
                if isinstance(action, act.ReadMeter):
                    self.meter += 1.0         # a meter that always moves: readings differ
                    if self._stop_for is not None:
                        self.expected_stop[self._stop_for] = round(self.meter)
                        self._stop_for = None
                    events.append(he.MeterSampled(action.connector_id,
                                                  MeterReading(self.now, self.meter)))
                elif isinstance(action, act.SendFrame):
                    frame = ocppj.parse_frame(action.text)
                    if isinstance(frame, ocppj.Call):
                        answer = self.csms.answer(frame.unique_id, frame.action, frame.payload)
                        events.append(ev.FrameReceived(
                            ocppj.encode_result(frame.unique_id, answer)))

    def stopping(self) -> bool:
        """The next event stops a running transaction: its reading is the one to bill."""
        tx = self.station.services.connectors[1].tx
        if tx is not None and not tx.stopping:
            self._stop_for = tx.meter_start_wh
            return True
        return False

    def close(self) -> None:
        self.store.close()


def check_memory_is_disk(st: Station) -> None:
    store = st.services.store
    rows = store.execute("SELECT seq, unique_id, action, payload, tx_local FROM outbox "
                         "ORDER BY seq").fetchall()
    pending_deletion = set(st.services.outbox._delivered)
    memory = [(i.seq, i.unique_id, i.action, i.text, i.tx_local) for i in st.services.outbox._items]
    assert memory == [r for r in rows if r[0] not in pending_deletion]
    assert len(st.services.outbox) == len(memory)
    kinds = {"StartTransaction": 0, "MeterValues": 1, "StopTransaction": 2}
    last: dict[int, int] = {}
    for _, _, action, _, tx_local in rows:             # queued in production order
        if tx_local is not None:
            assert kinds[action] >= last.get(tx_local, 0), rows
            assert not (action == "StopTransaction" and last.get(tx_local) == 2), rows
            last[tx_local] = kinds[action]
    txs = {local: (bool(stopped), tid) for local, stopped, tid in store.execute(
        "SELECT local_id, stopped, transaction_id FROM transactions").fetchall()}
    assert set(st.services.transactions.ledger.by_local) == set(txs)
    assert st.services.transactions.ledger.stopped == {local for local, (stopped, _) in txs.items() if stopped}
    for local, (_, tid) in txs.items():
        assert st.services.transactions.ledger.by_local[local].transaction_id == tid
    for conn in st.services.connectors.values():
        if conn.tx is not None:
            assert conn.tx.local_id in st.services.transactions.ledger.by_local
            assert conn.tx.local_id not in st.services.transactions.ledger.stopped
            stopped_row = store.execute("SELECT stopped FROM transactions WHERE local_id=?",
                                        (conn.tx.local_id,)).fetchone()
            assert stopped_row == (0,)


class WriteFailures(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="write-failures-"))
        self.rig = Rig(self.dir / "cp.db")

    # `fail`: the write that many writes into the step fails (None: none does)
    FAIL = hs.none() | hs.integers(0, 6)

    @rule(fail=FAIL)
    def plug(self, fail):
        self.rig.disk.fail_in = fail
        self.rig.plugged = True
        self.rig.feed(he.PilotStateChanged(1, PilotState.C))

    @rule(fail=FAIL)
    def unplug(self, fail):
        self.rig.disk.fail_in = fail
        self.rig.plugged = False
        self.rig.stopping()
        self.rig.feed(he.PilotStateChanged(1, PilotState.A))

    @rule(fail=FAIL)
    def plug_and_tap(self, fail):
        self.plug(None)
        self.tap(fail)

    @rule(fail=FAIL)
    def tap(self, fail):
        self.rig.disk.fail_in = fail
        self.rig.stopping()
        self.rig.feed(he.TagPresented(TAG))

    @rule(seconds=hs.sampled_from([1, 5, 10, 61, 400]), fail=FAIL)
    def wait(self, seconds, fail):
        self.rig.disk.fail_in = fail
        self.rig.now += seconds
        self.rig.feed(ev.Tick())

    @rule()
    def disk_full(self):
        self.rig.disk.full = True

    @rule()
    def disk_freed(self):
        self.rig.disk.full = False

    @rule()
    def power_cut(self):
        self.rig.power_cut()

    @rule(fail=FAIL)
    def clean_restart(self, fail):
        self.rig.disk.fail_in = fail
        self.rig.power_cut(clean=True)

    @invariant()
    def memory_is_disk(self):
        check_memory_is_disk(self.rig.station)

    @invariant()
    def never_two_stops(self):
        starts = self.rig.csms.messages("StartTransaction")
        stops = [p["transactionId"] for p in self.rig.csms.messages("StopTransaction").values()]
        assert len(stops) == len(set(stops)), self.rig.csms.received
        assert set(stops) <= set(self.rig.csms.tids[uid] for uid in starts)

    def teardown(self):
        try:
            rig = self.rig
            rig.disk.full, rig.disk.fail_in = False, None
            rig.plugged = False
            rig.stopping()
            rig.feed(he.PilotStateChanged(1, PilotState.A))
            for _ in range(6):                  # the longest backoff, then the queue drains
                rig.now += 301
                rig.feed(ev.Tick())
            st = rig.station
            check_memory_is_disk(st)
            assert len(st.services.outbox) == 0, list(st.services.outbox)
            assert st.services.connectors[1].tx is None
            assert not st.services.write_faults.failing
            starts = rig.csms.messages("StartTransaction")
            stops = {p["transactionId"]: p for p in rig.csms.messages("StopTransaction").values()}
            assert sorted(stops) == sorted(rig.csms.tids[uid] for uid in starts)
            for uid, start in starts.items():
                stop = stops[rig.csms.tids[uid]]
                if stop["reason"] not in ("PowerLoss", "Reboot"):
                    assert stop["meterStop"] == rig.expected_stop[start["meterStart"]], stop
            # A new session starts once the disk works.
            rig.feed(he.PilotStateChanged(1, PilotState.C))
            rig.feed(he.TagPresented(TAG))
            assert st.services.connectors[1].tx is not None
        finally:
            self.rig.close()
            shutil.rmtree(self.dir, ignore_errors=True)


WriteFailures.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_write_failures_state_machine = WriteFailures.TestCase


# -------------------------------------------------------------------- end to end
@pytest.mark.parametrize("error", [FULL, IO_ERROR], ids=["ENOSPC", "EIO"])
def test_disk_full_mid_session_bills_the_stop_once_storage_works(csms, firmware, caplog,
                                                                 error):
    """The disk fills up during a session and the driver stops it meanwhile: charging ends
    at once, the StopTransaction waits in memory with the reading taken at the stop, and
    reaches the CSMS exactly once when the disk takes writes again; then the next session
    starts as usual. The failure is logged once, without a traceback."""
    from tests.test_offline import boot, start_online, stopped, tx_messages

    caplog.set_level(logging.INFO)
    fw = boot(csms, firmware, {"MeterValueSampleInterval": 10})
    start = start_online(csms, fw)
    fw.advance(30)
    disk = FailingDisk.install(fw.station.services.store)
    disk.error = error
    disk.full = True
    fw.advance(30)                                 # samples fail: not produced, not sent
    assert disk.failed > 0
    energy_at_stop = fw.sim.status()["connectors"]["1"]["energy_wh"]
    mark = len(csms.received)
    fw.sim.tap("TAG1")
    fw.settle()
    assert fw.sim.status()["connectors"]["1"]["contactor"] == "open"
    fw.advance(120)                                # retried with backoff, still full
    assert tx_messages(csms, after=mark) == []
    assert fw.station.services.write_faults.failing
    disk.full = False
    fw.advance(320)                                # the longest backoff at most
    stopped(fw)
    (stop,) = csms.records("StopTransaction")
    assert stop["transactionId"] == start.reply["transactionId"]
    assert stop["meterStop"] == round(energy_at_stop)
    assert stop["reason"] == "Local"
    assert not fw.station.services.write_faults.failing
    # The next session starts as usual.
    mark = len(csms.received)
    fw.sim.tap("TAG2")
    csms.wait_for("StartTransaction", lambda r: r["idTag"] == "TAG2", after=mark)
    assert wait_until(lambda: fw.station.services.connectors[1].tx is not None)
    ours = [r for r in caplog.records if r.name.startswith("chargepoint")]
    errors = [r for r in ours if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and fw.settings.storage.path in errors[0].getMessage()
    assert error in errors[0].getMessage()
    assert not [r for r in ours if r.exc_info], "a traceback was logged"
    # The CSMS was told on connector 0, once, and told again when it cleared.
    zero = [(r["errorCode"], r.get("vendorErrorCode"), r.get("info"))
            for r in csms.records("StatusNotification") if r["connectorId"] == 0]
    faults = [z for z in zero if z[0] != "NoError"]
    assert faults == [("InternalError", "StorageWriteFailed",
                       f"storage write failed: {error}")], zero
    assert zero[-1][0] == "NoError"


# -------------------------------------------------------------------- Store.on_commit
def test_changes_in_memory_wait_for_the_outermost_commit(tmp_path):
    """`on_commit` runs after the outermost commit, in order; a failed COMMIT runs none,
    rolls back, and leaves the store usable for the next transaction."""
    import sqlite3

    store = Store(tmp_path / "s.db")
    disk = FailingDisk.install(store)
    seen = []
    with store.transaction():
        store.set_state("a", 1)
        store.on_commit(lambda: seen.append("outer"))
        with store.transaction():
            store.on_commit(lambda: seen.append("inner"))
        assert seen == []                          # the inner end is not a commit
    assert seen == ["outer", "inner"]
    disk.fail_in = 1                               # the INSERT goes through, COMMIT fails
    with pytest.raises(sqlite3.OperationalError):
        with store.transaction():
            store.set_state("b", 2)
            store.on_commit(lambda: seen.append("lost"))
    assert seen == ["outer", "inner"] and store.get_state("b") is None
    assert not store._db.in_transaction
    with store.transaction():
        store.set_state("c", 3)
        store.on_commit(lambda: seen.append("again"))
    assert seen[-1] == "again" and store.get_state("c") == 3
    with pytest.raises(RuntimeError):
        store.on_commit(lambda: None)
    store.close()


# -------------------------------------------------------------------- what is a disk fault
def test_storage_faults_are_told_from_bugs(tmp_path):
    """A read-only database or a full disk is a storage fault (logged once, retried); an
    error in the SQL is a bug and keeps its traceback."""
    import sqlite3

    from chargepoint.model.write_faults import is_storage_fault

    path = tmp_path / "ro.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    readonly = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        readonly.execute("INSERT INTO t VALUES (1)")
    except sqlite3.OperationalError as exc:
        assert is_storage_fault(exc), exc
    else:
        raise AssertionError("a read-only database took a write")
    try:
        readonly.execute("SELECT * FROM no_such_table")
    except sqlite3.OperationalError as exc:
        assert not is_storage_fault(exc), exc
    readonly.close()
    assert is_storage_fault(sqlite3.OperationalError("database or disk is full"))
    assert is_storage_fault(sqlite3.OperationalError("disk I/O error"))
    assert not is_storage_fault(ValueError("database or disk is full"))


# -------------------------------------------------------------------- keys and the cache
def test_a_key_change_that_cannot_be_stored_is_refused_and_not_applied(station, caplog):
    """ChangeConfiguration on a full disk: a CALLERROR, the old value in memory and on
    disk, one ERROR and no traceback; the same change is accepted once the disk works."""
    disk = FailingDisk.install(station.services.store)
    station.handle(ev.Connected(), STATION_NOW)
    disk.full = True
    call = ocppj.encode_call("k1", "ChangeConfiguration",
                             {"key": "HeartbeatInterval", "value": "123"})
    frames = [a.text for a in station.handle(ev.FrameReceived(call), STATION_NOW)
              if isinstance(a, act.SendFrame)]
    answer = ocppj.parse_frame(frames[0])
    assert isinstance(answer, ocppj.CallError) and answer.code == "InternalError"
    assert station.services.keys.raw("HeartbeatInterval") != "123"
    assert station.services.store.load_config().get("HeartbeatInterval") != "123"
    assert station.services.write_faults.failing
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and not errors[0].exc_info
    assert "database or disk is full" in errors[0].getMessage()
    disk.full = False
    call = ocppj.encode_call("k2", "ChangeConfiguration",
                             {"key": "HeartbeatInterval", "value": "123"})
    frames = [a.text for a in station.handle(ev.FrameReceived(call), STATION_NOW)
              if isinstance(a, act.SendFrame)]
    assert ocppj.parse_frame(frames[0]).payload == {"status": "Accepted"}
    assert station.services.keys.raw("HeartbeatInterval") == "123"
    assert station.services.store.load_config()["HeartbeatInterval"] == "123"


# -------------------------------------------------------------------- the real process
@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs, mounted for the test and removed after (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem of `directory` to the last block; returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 512):                # then the last partial block
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def stop_while_nothing_can_be_written(proc, csms) -> tuple[int, float]:
    """The driver taps out while the card takes no write: the contactor opens at once, and
    no StopTransaction goes out that the disk does not hold. (How many frames the CSMS had
    before the tap, the meter's energy at the stop.)"""
    mark = len(csms.received)
    proc.sim("tap", "TAG1")
    assert wait_until(lambda: proc.sim("status")["connectors"]["1"]["contactor"] == "open",
                      timeout=10), proc.tail()
    time.sleep(0.5)                                # the stop's reading has been taken
    energy_at_stop = proc.sim("status")["connectors"]["1"]["energy_wh"]
    time.sleep(2)                                  # still failing: nothing may go out
    assert csms.records("StopTransaction") == []
    assert proc.proc.poll() is None, proc.tail()
    return mark, energy_at_stop


def test_the_real_process_on_a_full_filesystem_bills_the_stop_once_space_is_freed(
        csms, tmp_path, small_tmpfs):
    """ENOSPC under the real firmware mid-session (its database on a 2 MiB tmpfs filled to
    the last block): the process stays up, the driver's stop opens the contactor, and once
    space is freed exactly one StopTransaction arrives with the meter's reading at the stop;
    the next session starts; one ERROR in the log and no traceback."""
    from bench._common import FirmwareProcess

    proc = FirmwareProcess(tmp_path / "fw", csms.url, ocpp={"MeterValueSampleInterval": 1,
                                                             "ClockAlignedDataInterval": 0})
    db = small_tmpfs / "cp.db"
    proc.config.write_text(proc.config.read_text().replace(str(proc.db), str(db)))
    proc.start()
    try:
        start = proc.charge(csms)
        csms.wait_for("MeterValues", timeout=10)
        filler = fill(small_tmpfs)
        assert wait_until(lambda: "database or disk is full" in proc.log.read_text(),
                          timeout=10), proc.tail()
        mark, energy_at_stop = stop_while_nothing_can_be_written(proc, csms)
        filler.unlink()
        stop = csms.wait_for("StopTransaction", timeout=30, after=mark)
        assert stop["transactionId"] == start.reply["transactionId"]
        # Real time: the meter may be read a few ms before the contactor opens (at most a
        # fraction of a Wh); the last reading stored before the disk filled is seconds old.
        assert abs(stop["meterStop"] - energy_at_stop) <= 1
        mark = len(csms.received)
        proc.sim("tap", "TAG2")
        csms.wait_for("StartTransaction", lambda r: r["idTag"] == "TAG2", timeout=10,
                      after=mark)
    finally:
        assert proc.stop() == 0
    first = start.reply["transactionId"]
    assert [r["transactionId"] for r in csms.records("StopTransaction")].count(first) == 1
    log = proc.log.read_text()
    assert "Traceback" not in log, log
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and str(db) in errors[0], log


@pytest.fixture
def ext4_volume(tmp_path):
    """A 32 MiB ext4 on a loop device, mounted for the test; `remount()` mounts the image
    again (its journal replayed), as after the controller restarts (root only)."""
    if os.geteuid() != 0 or not shutil.which("mkfs.ext4"):
        pytest.skip("a loop-mounted ext4 needs root and mkfs.ext4")
    image, mnt = tmp_path / "ext4.img", tmp_path / "ext4"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(32 * 2 ** 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True)
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)],
                             capture_output=True, text=True)
    if made.returncode or mounted.returncode:
        pytest.skip(f"cannot mount an ext4 image here: {made.stderr}{mounted.stderr}".strip())

    def remount() -> None:
        # Unmounted for real (not lazily) before the image is mounted again: a lazy unmount
        # still held by the killed process's last references let a loaded machine mount the
        # shut-down filesystem a second time.
        assert wait_until(lambda: subprocess.run(["umount", str(mnt)],
                                                 capture_output=True).returncode == 0,
                          timeout=20), f"{mnt} stays busy"
        subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)

    try:
        yield SimpleNamespace(path=mnt, remount=remount)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


#: ioctl(EXT4_IOC_SHUTDOWN, EXT4_GOING_FLAGS_NOLOGFLUSH): every later I/O on the filesystem
#: fails with EIO, as a card that died under the charger.
EXT4_IOC_SHUTDOWN, NOLOGFLUSH = 0x8004587D, 2


def test_the_real_process_on_a_card_that_dies_mid_session_bills_the_session_once(
        csms, tmp_path, ext4_volume):
    """EIO from the kernel under the real firmware mid-session (its ext4 shut down): the
    process stays up, the driver's stop opens the contactor, nothing is sent that the disk
    does not hold. The card never comes back in this life of the process: at the next start
    (the power cut, the filesystem mounted again) the session is closed exactly once, with
    reason PowerLoss at the last reading the disk kept, and the next session starts."""
    import fcntl
    import struct

    from bench._common import FirmwareProcess

    def process() -> FirmwareProcess:
        fw = FirmwareProcess(tmp_path / "fw", csms.url, ocpp={"MeterValueSampleInterval": 1,
                                                              "ClockAlignedDataInterval": 0})
        fw.config.write_text(fw.config.read_text().replace(str(fw.db),
                                                           str(ext4_volume.path / "cp.db")))
        return fw

    proc = process().start()
    try:
        start = proc.charge(csms)
        assert wait_until(lambda: len(csms.records("MeterValues")) >= 2, timeout=10)
        fd = os.open(ext4_volume.path, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", NOLOGFLUSH))
        finally:
            os.close(fd)
        assert wait_until(lambda: "disk I/O error" in proc.log.read_text(), timeout=10), \
            proc.tail()
        _, energy_at_stop = stop_while_nothing_can_be_written(proc, csms)
        assert wait_until(lambda: [r for r in csms.records("StatusNotification")
                                   if r["connectorId"] == 0
                                   and r.get("vendorErrorCode") == "StorageWriteFailed"])
        log = proc.log.read_text()
    finally:
        proc.kill()                                  # the power is cut
    assert "Traceback" not in log, log
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "disk I/O error" in errors[0], log
    sent = [r["meterValue"][0]["sampledValue"] for r in csms.records("MeterValues")]
    ext4_volume.remount()
    mark = len(csms.received)
    again = process().start()
    try:
        stop = csms.wait_for("StopTransaction", timeout=30, after=mark)
        assert stop["transactionId"] == start.reply["transactionId"]
        assert stop["reason"] == "PowerLoss"
        registers = [float(v["value"]) for values in sent for v in values
                     if v.get("measurand", "Energy.Active.Import.Register")
                     == "Energy.Active.Import.Register"]
        assert round(max(registers)) <= stop["meterStop"] <= energy_at_stop
        mark = len(csms.received)
        again.sim("plug", "1")
        again.sim("tap", "TAG2")
        csms.wait_for("StartTransaction", lambda r: r["idTag"] == "TAG2", timeout=10,
                      after=mark)
    finally:
        assert again.stop() == 0
    first = start.reply["transactionId"]
    assert [r["transactionId"] for r in csms.records("StopTransaction")].count(first) == 1


def test_the_real_process_past_its_file_size_limit_bills_the_stop_once_it_is_lifted(
        csms, tmp_path):
    """`ulimit -f` reached mid-session (RLIMIT_FSIZE set on the running firmware just above
    its write-ahead log's size: the next commits fail with EFBIG): the process stays up, the
    driver's stop opens the contactor, nothing goes out; once the limit is lifted exactly one
    StopTransaction arrives with the meter's reading at the stop."""
    import resource

    from bench._common import FirmwareProcess

    proc = FirmwareProcess(tmp_path / "fw", csms.url, ocpp={"MeterValueSampleInterval": 1,
                                                             "ClockAlignedDataInterval": 0})
    proc.start()
    try:
        start = proc.charge(csms)
        assert wait_until(lambda: len(csms.records("MeterValues")) >= 2, timeout=10)
        wal = proc.db.with_name(proc.db.name + "-wal")
        limit = max(wal.stat().st_size, proc.db.stat().st_size) + 2048
        assert proc.log.stat().st_size < limit // 4, "the log would reach the limit first"
        unlimited = resource.RLIM_INFINITY          # the hard limit, to lift it again
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, unlimited))
        assert wait_until(lambda: " ERROR " in proc.log.read_text(), timeout=10), proc.tail()
        mark, energy_at_stop = stop_while_nothing_can_be_written(proc, csms)
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (unlimited, unlimited))
        stop = csms.wait_for("StopTransaction", timeout=30, after=mark)
        assert stop["transactionId"] == start.reply["transactionId"]
        assert abs(stop["meterStop"] - energy_at_stop) <= 1
    finally:
        assert proc.stop() == 0
    first = start.reply["transactionId"]
    assert [r["transactionId"] for r in csms.records("StopTransaction")].count(first) == 1
    log = proc.log.read_text()
    assert "Traceback" not in log, log
    assert len([line for line in log.splitlines() if " ERROR " in line]) == 1, log
