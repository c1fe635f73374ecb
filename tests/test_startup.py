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

from chargepoint.config import DEFAULT_STATE_DIR, ConfigError, load_settings
from tests.harness import wait_until

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


def _group(user: pwd.struct_passwd) -> str:
    return grp.getgrgid(user.pw_gid).gr_name


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


def _rdm6300(port: str):
    return lambda t: t.replace('[[readers]]\ntype = "sim"',
                               f'[[readers]]\ntype = "rdm6300"\nport = "{port}"')


GPIO_CONTACTOR = lambda t: t.replace('[connectors.contactor]\ntype = "sim"',  # noqa: E731
                                     '[connectors.contactor]\ntype = "gpio"\npin = 17')


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
