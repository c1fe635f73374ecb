"""Start-up faults fail fast with one clear line each: the configuration (every problem at
once), its TLS files, the database's place, the GPIO, serial ports; `chargepoint check`
finds the same without starting anything; where state lives; how the process ends.

The real `chargepoint` process runs against real files; cases about another user's
permissions run it as `nobody` (they need root, which this machine and CI have).
"""
from __future__ import annotations

import grp
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from chargepoint import preflight
from chargepoint.config import DEFAULT_STATE_DIR, ConfigError, load_settings
from chargepoint.instance_lock import EXIT_IN_USE, InstanceLock

ROOT = Path(__file__).resolve().parents[1]
GOOD = (ROOT / "config.toml").read_text()
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (other users)")
has_lgpio = importlib.util.find_spec("lgpio") is not None


def write_config(directory: Path, db: Path | None = None, edit=lambda t: t) -> Path:
    text = edit(GOOD)
    if db is not None:
        text = text.replace("[storage]", f'[storage]\npath = "{db}"')
    text = text.replace("[system]", f'[system]\nsim_socket = "{directory / "sim.sock"}"')
    path = directory / "config.toml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def chargepoint(*args: str, user: pwd.struct_passwd | None = None, env=None,
                timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m chargepoint ARGS` to its end, as `user` if given."""
    kw = {}
    if user is not None:
        kw = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    return subprocess.run([sys.executable, "-m", "chargepoint", *args], cwd="/",
                          env=env or dict(os.environ), capture_output=True, text=True,
                          timeout=timeout, **kw)


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


@pytest.fixture
def nobody():
    return pwd.getpwnam("nobody")


@pytest.fixture
def shared_dir():
    """A directory under /tmp that `nobody` can reach (pytest's tmp_path is root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="chargepoint-startup-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- the file
def test_every_problem_of_the_file_is_reported_at_once(tmp_path):
    path = write_config(tmp_path, tmp_path / "cp.db", lambda t: t
                        .replace("[csms]", "[csms]\ncolour = 'red'")
                        .replace("reconnect_max_s = 300", "reconnect_max_s = -3")
                        .replace("phases = 3", "phases = 2")
                        .replace("HeartbeatInterval = 300", "HeartbeatInterval = 0")
                        + "\n[extras]\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert sorted(key for key, _ in info.value.problems) == sorted([
        "extras", "csms.colour", "csms.reconnect_max_s", "connectors[id=1].phases",
        "ocpp.HeartbeatInterval"])
    proc = chargepoint("run", "--config", str(path))
    assert proc.returncode == 78
    for key, reason in info.value.problems:
        assert len(lines_with(proc.stderr, f"{path}: {key}: {reason}")) == 1, proc.stderr
    assert "not starting: 5 problems" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_value_is_reported_once_and_the_rest_of_its_table_still_checked(tmp_path):
    """A required key with a bad value is not reported missing as well; the keys after it
    in the same table are checked all the same."""
    path = write_config(tmp_path, tmp_path / "cp.db", lambda t: t.replace(
        '[connectors.contactor]\ntype = "sim"',
        '[connectors.contactor]\ntype = "gpio"\npin = 99\ndebounce_ms = -1\ncolour = 1'))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.problems == [
        ("connectors[id=1].contactor.colour", "unknown key (known keys: active_high, "
         "check_interval_ms, debounce_ms, feedback_active_high, feedback_pin, feedback_pull, "
         "feedback_settle_ms, pin)"),
        ("connectors[id=1].contactor.pin", "BCM GPIO numbers are 0..27, got 99")]
    # debounce_ms = -1 is found once the pin is right
    path.write_text(path.read_text().replace("pin = 99", "pin = 17"))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert [k for k, _ in info.value.problems] == ["connectors[id=1].contactor.colour",
                                                   "connectors[id=1].contactor.debounce_ms"]


def test_connectors_are_named_by_their_id_not_their_place_in_the_file(tmp_path):
    two = GOOD[GOOD.index("[[connectors]]"):GOOD.index("[[readers]]")]
    path = write_config(tmp_path, tmp_path / "cp.db", lambda t: t.replace(
        "[[connectors]]\nid = 1", two.replace("id = 1", "id = 2").replace(
            "phases = 3", "phases = 4") + "[[connectors]]\nid = 1", 1))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.problems == [("connectors[id=2].phases", "must be 1 or 3, got 4")]
    path.write_text(path.read_text().replace("id = 2\n", "", 1))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert ("connectors[table 1].id", "required key is missing") in info.value.problems


# --------------------------------------------------------------------------- TLS files
@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def tls(tmp_path: Path, ca, **files) -> Path:
    """A profile 3 configuration whose TLS files are sound unless `files` says otherwise
    (key -> bytes to write, or None for a file that does not exist)."""
    client = ca.issue_cert("CP-1")
    content = {"ca_file": ca.cert_pem.bytes(), "client_cert": client.cert_chain_pems[0].bytes(),
               "client_key": client.private_key_pem.bytes()}
    content.update(files)
    lines = []
    for key, data in content.items():
        target = tmp_path / f"{key}.pem"
        if data is not None:
            target.write_bytes(data)
        lines.append(f'{key} = "{target}"')
    return write_config(tmp_path, tmp_path / "cp.db", lambda t: t.replace(
        'url = "ws://127.0.0.1:9000/ocpp"', 'url = "wss://127.0.0.1:9000/ocpp"').replace(
        "security_profile = 0", "security_profile = 3\n" + "\n".join(lines)))


def test_sound_tls_files_are_accepted(tmp_path, ca):
    settings = load_settings(tls(tmp_path, ca))
    assert settings.csms.client_key == str(tmp_path / "client_key.pem")


def _encrypted(key_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(b"secret"))


@pytest.mark.parametrize("key,make,reason", [
    ("ca_file", lambda ca: None, "cannot read {path}: No such file or directory"),
    ("ca_file", lambda ca: ca.private_key_pem.bytes(),
     "{path} holds EC PRIVATE KEY, not the CSMS's CA certificate"),
    ("ca_file", lambda ca: x509.load_pem_x509_certificate(ca.cert_pem.bytes()).public_bytes(
        serialization.Encoding.DER), "{path} is a DER certificate; the charger reads PEM"),
    ("ca_file", lambda ca: ca.cert_pem.bytes().replace(b"MII", b"MIX", 1),
     "{path} holds a certificate that does not parse"),
    ("client_cert", lambda ca: None, "cannot read {path}: No such file or directory"),
    ("client_cert", lambda ca: b"", "{path} holds no PEM block, not the client certificate"),
    ("client_key", lambda ca: None, "cannot read {path}: No such file or directory"),
    ("client_key", lambda ca: ca.cert_pem.bytes(),
     "{path} holds CERTIFICATE, not a private key"),
    ("client_key", lambda ca: _encrypted(ca.issue_cert("CP-1").private_key_pem.bytes()),
     "{path} is protected by a passphrase"),
    ("client_key", lambda ca: ca.issue_cert("CP-2").private_key_pem.bytes(),
     "{path} is not the key of the certificate in client_cert"),
])
def test_a_bad_tls_file_stops_the_start_naming_the_key_and_the_file(tmp_path, ca, key, make,
                                                                    reason):
    path = tls(tmp_path, ca, **{key: make(ca)})
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    [(found, why)] = info.value.problems
    assert found == f"csms.{key}"
    assert why.startswith(reason.format(path=tmp_path / f"{key}.pem")), why


def test_every_bad_tls_file_is_named_and_the_run_ends_at_once(tmp_path, ca):
    """Before, the charger started and retried `FileNotFoundError` at every reconnection."""
    path = tls(tmp_path, ca, ca_file=None, client_key=ca.issue_cert("X").private_key_pem.bytes())
    proc = chargepoint("run", "--config", str(path))
    assert proc.returncode == 78, proc.stderr
    assert len(lines_with(proc.stderr, f"csms.ca_file: cannot read {tmp_path}/ca_file.pem")) == 1
    assert len(lines_with(proc.stderr, "csms.client_key: ")) == 1
    assert "connecting" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cp.db").exists()


@needs_root
def test_a_tls_file_the_user_cannot_read_names_the_user(shared_dir, ca, nobody):
    path = tls(shared_dir, ca)
    (shared_dir / "client_key.pem").chmod(0o600)
    proc = chargepoint("check", "--config", str(path), "--user", "nobody")
    assert proc.returncode == 78
    assert lines_with(proc.stdout, f"csms.client_key: cannot read {shared_dir}/client_key.pem: "
                                   "Permission denied (as user nobody)"), proc.stdout


# --------------------------------------------------------------------------- the database's place
@needs_root
@pytest.mark.parametrize("case", ["directory of root", "missing, parent of root",
                                  "file of root", "parent not searchable"])
def test_a_database_place_the_user_may_not_write_stops_the_start(shared_dir, nobody, case):
    """Permissions are a configuration error (exit 78, no restart): nothing but an operator
    changes them. A read-only filesystem is a disk fault and runs in memory instead
    (tests/test_storage_faults.py)."""
    state = shared_dir / "state"
    state.mkdir(mode=0o755)
    db = state / "cp.db"
    expected = [f"user nobody cannot write in {state} (root:root, mode 0755)",
                f"sudo chown -R nobody:{_group(nobody)} {state}"]
    if case == "missing, parent of root":
        db = state / "sub" / "cp.db"
        expected = [f"cannot create {state / 'sub'}: user nobody cannot write in {state} "
                    "(root:root, mode 0755)", f"sudo install -d -o nobody -g {_group(nobody)} "
                                              f"-m 0750 {state / 'sub'}"]
    elif case == "file of root":
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        db.write_bytes(b"")
        db.chmod(0o600)
        expected = [f"user nobody cannot read and write {db} (root:root, mode 0600) (made by "
                    f"a run as root?)", f"sudo chown nobody:{_group(nobody)} {db}*"]
    elif case == "parent not searchable":
        state.chmod(0o700)
        db = state / "sub" / "cp.db"
        expected = [f"user nobody cannot reach {state / 'sub'}: {state} (root:root, mode "
                    "0700) does not let it through"]
    config = write_config(shared_dir, db)
    before = sorted(state.rglob("*"))
    proc = chargepoint("run", "--config", str(config), user=nobody)
    assert proc.returncode == 78, proc.stderr
    [line] = lines_with(proc.stderr, str(db))
    for text in expected:
        assert text in line, line
    assert "Traceback" not in proc.stderr and "in-memory" not in proc.stderr
    assert sorted(state.rglob("*")) == before                # nothing made or taken


def _group(user: pwd.struct_passwd) -> str:
    return grp.getgrgid(user.pw_gid).gr_name


@needs_root
def test_a_read_only_place_is_a_warning_the_firmware_starts_on(shared_dir, nobody):
    state = shared_dir / "state"
    state.mkdir()
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    subprocess.run(["mount", "--bind", str(state), str(state)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(state)], check=True)
        proc = chargepoint("check", "--config", str(write_config(shared_dir, state / "cp.db")),
                           "--user", "nobody")
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
    assert proc.returncode == 0, proc.stdout
    [line] = lines_with(proc.stdout, "warning:")
    assert f"{state} is on a read-only filesystem: the firmware starts on an in-memory" in line
    assert "the firmware would start" in proc.stdout


@needs_root
def test_root_refuses_to_run_over_state_that_belongs_to_another_user(shared_dir, nobody):
    state = shared_dir / "state"
    state.mkdir()
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    config = write_config(shared_dir)
    proc = chargepoint("run", "--config", str(config), "--state-dir", str(state))
    assert proc.returncode == 78, proc.stderr
    [line] = lines_with(proc.stderr, "refusing to run as root")
    assert f"{state}: refusing to run as root: it belongs to user nobody" in line
    assert f"sudo -u nobody chargepoint run --config {config}" in line
    assert list(state.iterdir()) == []                 # nothing made there as root
    check = chargepoint("check", "--config", str(config), "--state-dir", str(state),
                        "--user", "root")
    assert check.returncode == 78 and lines_with(check.stdout, "refusing to run as root")


# --------------------------------------------------------------------------- where state lives
def test_the_database_defaults_to_the_state_directory_the_service_uses(tmp_path, monkeypatch):
    config = write_config(tmp_path)
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    assert load_settings(config).storage.path == f"{DEFAULT_STATE_DIR}/chargepoint.db"
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/svc:{tmp_path}/other")
    assert load_settings(config).storage.path == f"{tmp_path}/svc/chargepoint.db"
    chosen = load_settings(config, state_dir=str(tmp_path / "mine"))
    assert chosen.storage.path == f"{tmp_path}/mine/chargepoint.db"
    assert chosen.state_dir == str(tmp_path / "mine")
    # An explicit path wins; a relative one is relative to the file, as documented.
    config.write_text(config.read_text().replace("[storage]", '[storage]\npath = "db/x.db"'))
    assert load_settings(config, state_dir="/elsewhere").storage.path == f"{tmp_path}/db/x.db"


def test_an_s0_meters_count_lives_in_the_state_directory_too(tmp_path):
    config = write_config(tmp_path, edit=lambda t: t.replace(
        '[connectors.meter]\ntype = "sim"', '[connectors.meter]\ntype = "s0"\npin = 5'))
    settings = load_settings(config, state_dir=str(tmp_path / "state"))
    assert settings.connectors[0].meter.state_path(1) == tmp_path / "state" / "s0-connector-1.json"


def test_run_with_state_dir_keeps_its_database_there(tmp_path, csms):
    config = write_config(tmp_path, edit=lambda t: t.replace(
        'url = "ws://127.0.0.1:9000/ocpp"', f'url = "{csms.url}"'))
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "chargepoint", "run", "--config",
                             str(config), "--state-dir", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        csms.wait_for("BootNotification", timeout=20)
        assert (state / "chargepoint.db").exists()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"database {state / 'chargepoint.db'}" in out


# --------------------------------------------------------------------------- chargepoint check
def test_check_of_a_sound_setup_exits_0_and_makes_nothing(tmp_path):
    state = tmp_path / "state"
    proc = chargepoint("check", "--config", str(write_config(tmp_path)), "--state-dir",
                       str(state), "--user", pwd.getpwuid(os.geteuid()).pw_name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == \
        f"the firmware would start (database {state / 'chargepoint.db'})"
    assert not state.exists()


@pytest.mark.parametrize("value,warned", [("ACME-2.1", True), ("ACME-{version}", False)])
def test_check_warns_of_a_firmware_version_that_every_release_would_report(tmp_path, value,
                                                                             warned):
    config = write_config(tmp_path, tmp_path / "cp.db", lambda t: t.replace(
        "[identity]", f'[identity]\nfirmware_version = "{value}"'))
    proc = chargepoint("check", "--config", str(config))
    assert proc.returncode == 0, proc.stdout
    found = lines_with(proc.stdout, f"warning: {config}: identity.firmware_version: "
                                    "'ACME-2.1' is what BootNotification reports whichever "
                                    "release runs")
    if warned:
        [line] = found
        assert 'write {version} where the release\'s number belongs (e.g. "ACME-{version}")' \
            in line
    else:
        assert not found, proc.stdout


def test_check_lists_every_problem_and_exits_78(tmp_path):
    config = write_config(tmp_path, tmp_path / "cp.db", lambda t: t.replace(
        "phases = 3", "phases = 5").replace("[log]", "[log]\nfoo = 1"))
    proc = chargepoint("check", "--config", str(config))
    assert proc.returncode == 78
    assert lines_with(proc.stdout, f"error: {config}: connectors[id=1].phases: must be 1 or 3")
    assert lines_with(proc.stdout, f"error: {config}: log.foo: unknown key")
    assert proc.stdout.splitlines()[-1] == "the firmware would not start: 2 errors"


@needs_root
def test_check_as_root_checks_as_the_user_that_would_run_it(shared_dir, nobody):
    """Root could write anywhere: the check runs as the service's user (here `nobody`)
    and finds what that user would meet."""
    state = shared_dir / "state"
    state.mkdir(mode=0o755)
    config = write_config(shared_dir, state / "cp.db")
    assert chargepoint("check", "--config", str(config), "--user", "root").returncode == 0
    proc = chargepoint("check", "--config", str(config), "--user", "nobody")
    assert proc.returncode == 78
    assert proc.stdout.splitlines()[0] == f"checking {config} as user nobody"
    assert lines_with(proc.stdout, f"user nobody cannot write in {state}")


def test_check_says_when_a_firmware_runs_on_the_database(tmp_path):
    db = tmp_path / "cp.db"
    lock = InstanceLock(str(db))
    assert lock.acquire()
    try:
        proc = chargepoint("check", "--config", str(write_config(tmp_path, db)))
    finally:
        lock.release()
    assert proc.returncode == 0, proc.stdout
    assert lines_with(proc.stdout, f"warning: {db}: in use by a running chargepoint (pid "
                                   f"{os.getpid()}); another one would not start on it "
                                   f"(exit {EXIT_IN_USE})")
    assert proc.stdout.splitlines()[-1].endswith(", with 1 warning")


def _rdm6300(port: str):
    return lambda t: t.replace('[[readers]]\ntype = "sim"',
                               f'[[readers]]\ntype = "rdm6300"\nport = "{port}"')


def test_a_serial_port_not_there_is_a_warning_the_firmware_starts_on(tmp_path):
    config = write_config(tmp_path, tmp_path / "cp.db", _rdm6300(str(tmp_path / "ttyUSB9")))
    proc = chargepoint("check", "--config", str(config))
    assert proc.returncode == 0, proc.stdout
    assert lines_with(proc.stdout, f"warning: {config}: readers[0].port: {tmp_path}/ttyUSB9 "
                                   "is not there: the firmware starts and reports the device "
                                   "faulty until it appears")


@needs_root
def test_a_serial_port_the_user_cannot_open_is_an_error_naming_the_group(shared_dir, nobody):
    port = shared_dir / "ttyUSB0"
    os.mknod(port, 0o660 | stat.S_IFCHR, os.makedev(1, 3))     # a real character device
    os.chown(port, 0, grp.getgrnam("dialout").gr_gid)
    port.chmod(0o660)                                            # whatever the umask
    (shared_dir / "state").mkdir()
    os.chown(shared_dir / "state", nobody.pw_uid, nobody.pw_gid)
    config = write_config(shared_dir, shared_dir / "state" / "cp.db", _rdm6300(str(port)))
    proc = chargepoint("run", "--config", str(config), user=nobody)
    assert proc.returncode == 78, proc.stderr
    [line] = lines_with(proc.stderr, "readers[0].port")
    assert f"user nobody cannot open {port} (root:dialout, mode 0660): run as a member of " \
           "the group dialout" in line
    port.unlink()
    port.write_text("")
    proc = chargepoint("check", "--config", str(config), "--user", "nobody")
    assert lines_with(proc.stdout, f"readers[0].port: {port} is not a device")


GPIO_CONTACTOR = lambda t: t.replace('[connectors.contactor]\ntype = "sim"',  # noqa: E731
                                     '[connectors.contactor]\ntype = "gpio"\npin = 17')


@pytest.mark.skipif(has_lgpio, reason="lgpio is installed here")
def test_gpio_without_its_package_says_which_and_how_to_install_it(tmp_path):
    config = write_config(tmp_path, tmp_path / "cp.db", GPIO_CONTACTOR)
    env = {k: v for k, v in os.environ.items() if k != "GPIOZERO_PIN_FACTORY"}
    proc = chargepoint("run", "--config", str(config), env=env)
    assert proc.returncode == 78, proc.stderr
    [line] = lines_with(proc.stderr, "connectors[id=1].contactor")
    assert "no GPIO pin factory can be loaded: the lgpio package is not installed: pip " \
           "install 'chargepoint[pi]'" in line
    assert "BadPinFactory" not in proc.stderr and "Falling back" not in proc.stderr
    assert not (tmp_path / "cp.db").exists()
    check = chargepoint("check", "--config", str(config), env=env)
    assert check.returncode == 78 and lines_with(check.stdout, "chargepoint[pi]")
    # gpiozero's own mock pins (as the tests use) are a pin factory like any other.
    assert chargepoint("check", "--config", str(config)).returncode == 0


def test_a_gpio_pin_that_cannot_be_claimed_is_one_error_naming_it_and_exit_78(tmp_path):
    """The contactor and the status light on one pin: the second cannot claim it (as lgpio
    cannot claim a line a kernel driver holds, or one the board's chip has not). One line
    naming the setting and the pin, exit 78 (systemd does not restart it), no traceback."""
    config = write_config(tmp_path, tmp_path / "cp.db", lambda t: GPIO_CONTACTOR(t).replace(
        '[connectors.indicator]\ntype = "sim"', '[connectors.indicator]\ntype = "gpio"\npin = 17'))
    proc = chargepoint("run", "--config", str(config))
    assert proc.returncode == 78, proc.stderr
    [line] = lines_with(proc.stderr, "connectors[id=1].indicator.pin: GPIO17 cannot be claimed")
    assert "already in use" in line and "Traceback" not in proc.stderr


@pytest.mark.skipif(has_lgpio, reason="lgpio is installed here")
def test_a_gpio_device_built_without_a_pin_factory_says_why_in_one_error(tmp_path):
    script = ("import time\nfrom hal.gpio import GpioContactor, GpioContactorSettings, "
              "GpioUnavailable\ntry:\n    GpioContactor(GpioContactorSettings(pin=17), 1, "
              "print, time.monotonic)\nexcept GpioUnavailable as exc:\n    print(exc)\n")
    env = {k: v for k, v in os.environ.items() if k != "GPIOZERO_PIN_FACTORY"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("no GPIO pin factory can be loaded: the lgpio package is "
                                  "not installed"), proc.stdout + proc.stderr
    assert proc.stderr == ""                  # no fallback warnings


@needs_root
def test_a_gpio_chip_the_user_cannot_open_names_the_udev_rule_and_the_group(shared_dir,
                                                                          nobody):
    chip = shared_dir / "gpiochip0"
    os.mknod(chip, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    chip.chmod(0o600)
    script = (f"import hal.gpio as g\ng.GPIO_CHIPS = {str(shared_dir / 'gpiochip*')!r}\n"
              "print('\\n'.join(g.pin_factory_problems()))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, user=nobody.pw_uid, group=nobody.pw_gid,
                          extra_groups=[])
    [line] = lines_with(proc.stdout, "cannot open")
    assert f"user nobody cannot open {chip} (root:root, mode 0600): let the group gpio open " \
           "the chips with the udev rule 'SUBSYSTEM==\"gpio\", KERNEL==\"gpiochip*\", " \
           "GROUP=\"gpio\", MODE=\"0660\"'" in line
    assert "run as a member of gpio" in line


# --------------------------------------------------------------------------- how it ends
def under_journal(script: str, tmp_path) -> tuple[int, str]:
    """Run `script` with its standard error on a stream that $JOURNAL_STREAM names, as
    systemd gives one to a service (device and inode); (exit status, what it wrote)."""
    journal = tmp_path / "journal"
    with open(journal, "w") as stream:
        st = os.fstat(stream.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=stream, timeout=60)
    return proc.returncode, journal.read_text()


def test_an_unforeseen_error_is_logged_with_its_priority_on_every_line(tmp_path):
    script = ("import sys\nfrom chargepoint import cli\n"
              "sys.exit(cli.guarded(lambda: {}['missing']))\n")
    returncode, stderr = under_journal(script, tmp_path)
    assert returncode == preflight.EXIT_SOFTWARE == 70
    lines = stderr.splitlines()
    assert lines[0] == "<2>chargepoint: unexpected error; exiting"
    assert any("KeyError: 'missing'" in line for line in lines)
    assert all(line.startswith("<2>") for line in lines), stderr


def test_an_error_escaping_a_thread_goes_through_logging(tmp_path):
    script = ("import threading\nfrom chargepoint import cli\ncli.setup_logging('info')\n"
              "t = threading.Thread(target=lambda: 1 / 0, name='meter-poller')\n"
              "t.start(); t.join()\n")
    _, stderr = under_journal(script, tmp_path)
    lines = stderr.splitlines()
    assert lines[0] == "<2>chargepoint: unexpected error in meter-poller"
    assert all(line.startswith("<2>") for line in lines) and "ZeroDivisionError" in stderr


def test_the_service_does_not_restart_on_a_configuration_error():
    from tests.test_systemd import values

    assert preflight.EXIT_CONFIG == os.EX_CONFIG == 78
    assert values("RestartPreventExitStatus") == ["78"]
    # 75: another process holds the database; restarting takes over once it has gone.
    assert EXIT_IN_USE == os.EX_TEMPFAIL
    assert values("Restart") == ["on-failure"]
    assert values("User") == [preflight.SERVICE_USER]
    assert set(values("SupplementaryGroups")[0].split()) == set(preflight.SERVICE_GROUPS)
