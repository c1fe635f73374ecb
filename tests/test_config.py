"""config.toml: the shipped file works; bad files stop the program naming file, key, reason."""
import subprocess
import sys
from pathlib import Path

import pytest

from chargepoint.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_is_valid():
    settings = load_settings(ROOT / "config.toml")
    assert settings.csms.charge_point_id
    assert [c.id for c in settings.connectors] == [1]
    assert Path(settings.storage.path).is_absolute()


GOOD = (ROOT / "config.toml").read_text()


@pytest.mark.parametrize("edit,key,reason", [
    (lambda t: t.replace('charge_point_id = "CP-1"', 'charge_point_id = "CP 1/x"'),
     "csms.charge_point_id", "becomes part of the URL"),
    (lambda t: t.replace("security_profile = 0", 'security_profile = "zero"'),
     "csms.security_profile", "expected an integer"),
    (lambda t: t.replace("security_profile = 0", "security_profile = 7"),
     "csms.security_profile", "must be 0, 1, 2 or 3"),
    (lambda t: t.replace("security_profile = 0", "security_profile = 2"),
     "csms.url", "needs a wss:// URL"),
    (lambda t: t.replace("[csms]", "[csms]\ncolour = 'red'"),
     "csms.colour", "unknown key"),
    (lambda t: t + "\n[extras]\nx = 1\n", "extras", "unknown section"),
    (lambda t: t.replace('type = "sim"', 'type = "warp-drive"', 1),
     "connectors[id=1].meter.type", "unknown meter type 'warp-drive'"),
    (lambda t: t.replace("max_current_a = 32", "max_current_a = 500"),
     "connectors[id=1].max_current_a", "must be 6 to 80 A"),
    (lambda t: t.replace("phases = 3", "phases = 2"), "connectors[id=1].phases", "must be 1 or 3"),
    (lambda t: t.replace("HeartbeatInterval = 300", "HeartbeatInterval = -5"),
     "ocpp.HeartbeatInterval", "at least 1"),
    (lambda t: t.replace("HeartbeatInterval = 300", "HeartBeatInterval = 300"),
     "ocpp.HeartBeatInterval", "not an OCPP configuration key"),
    (lambda t: t.replace('"Energy.Active.Import.Register,Power.Active.Import"', '"Energy.Bogus"'),
     "ocpp.MeterValuesSampledData", "not an OCPP 1.6 measurand"),
    (lambda t: t.replace('level = "info"', 'level = "chatty"'), "log.level", "one of"),
    (lambda t: t.replace("[[connectors]]", "[[connectorz]]"), "connectorz", "unknown section"),
    (lambda t: t.replace("url = ", "url = ws://oops #", 1), "(syntax)", ""),
    (lambda t: t.replace("keep = 3", "keep = 1"), "releases.keep", "must be 2 to 20"),
    (lambda t: t.replace("trial_s = 600", "trial_s = 0"), "releases.trial_s",
     "above 0 and at most 86400"),
    (lambda t: t.replace("trial_starts = 3", "trial_starts = 0"), "releases.trial_starts",
     "must be 1 to 20"),
    (lambda t: t.replace("trial_starts = 3", "trial_starts = 3\nwatchdog_s = 0.1"),
     "releases.watchdog_s", "must be 1 to 3600 seconds"),
    (lambda t: t.replace("[releases]", "[releases]\nkeep_all = true"), "releases.keep_all",
     "unknown key"),
    (lambda t: t.replace('revocation_check = "soft"', 'revocation_check = "strict"'),
     "releases.revocation_check", "must be soft, hard or off"),
    (lambda t: t.replace("[system]", f"[system]\nsim_socket = '/run/{'x' * 120}.sock'"),
     "system.sim_socket", "holds at most 107"),
    (lambda t: t.replace("[identity]", '[identity]\nfirmware_version = "ACME-{release}"'),
     "identity.firmware_version", "{version} is the only text in braces"),
    (lambda t: t.replace("[identity]", f'[identity]\nfirmware_version = "{"x" * 45}-{{version}}"'),
     "identity.firmware_version", "at most 50 characters (OCPP BootNotification), 'xxx"),
])
def test_bad_config_names_the_key_and_the_reason(tmp_path, edit, key, reason):
    path = tmp_path / "config.toml"
    text = edit(GOOD)
    assert text != GOOD
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.path == str(path)
    assert info.value.key == key
    assert reason in info.value.reason


def test_the_release_settings_of_the_shipped_config():
    releases = load_settings(ROOT / "config.toml").releases
    assert (releases.keep, releases.trial_s, releases.trial_starts, releases.watchdog_s,
            releases.revocation_check) == (3, 600.0, 3, 30.0, "soft")


def test_an_ocpp_key_spelt_in_another_case_in_config_toml_names_the_right_spelling(tmp_path):
    """The CSMS may case a key as it likes (CiString50); config.toml spells each key one way,
    and the error says which."""
    path = tmp_path / "config.toml"
    path.write_text(GOOD.replace("[ocpp]", "[ocpp]\nConnectionTimeout = 30"))
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "ocpp.ConnectionTimeout"
    assert info.value.reason == "not an OCPP configuration key as spelt: write ConnectionTimeOut"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.toml")


def test_run_with_bad_config_exits_with_the_key_and_reason(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(GOOD.replace("phases = 3", "phases = 4"))
    proc = subprocess.run([sys.executable, "-m", "chargepoint", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 78
    assert f"{path}: connectors[id=1].phases: must be 1 or 3" in proc.stderr


def test_version():
    proc = subprocess.run([sys.executable, "-m", "chargepoint", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("chargepoint ")


# --------------------------------------------------------------------------- [csms] crl_file

def _tls_config(tmp_path, crl_file, profile=2) -> Path:
    text = GOOD.replace('url = "ws://127.0.0.1:9000/ocpp"', 'url = "wss://127.0.0.1:9000/ocpp"'
                        if profile >= 2 else 'url = "ws://127.0.0.1:9000/ocpp"')
    text = text.replace("security_profile = 0", f'security_profile = {profile}\n'
                                                f'crl_file = "{crl_file}"')
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def ca():
    import trustme

    return trustme.CA()


def test_a_pem_crl_file_is_accepted(tmp_path, ca):
    from tests import pki

    crl_file = pki.write_crl(tmp_path / "ca.crl", pki.crl(ca), pki.crl(ca.create_child_ca()))
    settings = load_settings(_tls_config(tmp_path, crl_file))
    assert settings.csms.crl_file == str(crl_file)


@pytest.mark.parametrize("content,profile,reason", [
    (None, 2, "cannot read"),
    ("certificate", 2, "holds no certificate revocation list (PEM, -----BEGIN X509 CRL-----)"),
    ("garbled", 2, "holds a CRL that does not parse"),
    ("der", 2, "is a DER CRL; the charger reads PEM: openssl crl -inform DER"),
    ("pem", 1, "used only with TLS (security profile 2 or 3)"),
])
def test_a_bad_crl_file_stops_the_start_naming_the_key(tmp_path, ca, content, profile, reason):
    from cryptography.hazmat.primitives.serialization import Encoding

    from tests import pki

    crl_file = tmp_path / "ca.crl"
    if content == "certificate":
        crl_file.write_bytes(ca.cert_pem.bytes())
    elif content == "garbled":
        pem = pki.crl(ca).public_bytes(Encoding.PEM).splitlines()
        crl_file.write_bytes(b"\n".join(pem[:2] + [b"AAAA" + pem[2][4:]] + pem[3:]))
    elif content in ("der", "pem"):
        pki.write_crl(crl_file, pki.crl(ca), encoding=Encoding.DER if content == "der"
                      else Encoding.PEM)
    path = _tls_config(tmp_path, crl_file, profile)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "csms.crl_file"
    assert reason in info.value.reason


@pytest.mark.parametrize("edit,key,reason", [
    (lambda t: t.replace('pin_factory = "auto"', 'pin_factory = "chip"'), "gpio.pin_factory",
     "expected one of 'auto', 'lgpio-chip'"),
    (lambda t: t.replace('# chip = "/dev/gpiochip0"', 'chip = "/dev/gpio0"'), "gpio.chip",
     "expected a GPIO character device such as /dev/gpiochip0, got '/dev/gpio0'"),
    (lambda t: t.replace("retry_s = 10", "retry_s = 0"), "gpio.retry_s",
     "must be 1 to 3600 seconds"),
    (lambda t: t.replace('[connectors.contactor]\ntype = "sim"',
                         '[connectors.contactor]\ntype = "gpio"\npin = 28'),
     "connectors[id=1].contactor.pin", "BCM GPIO numbers are 0..27, got 28"),
    (lambda t: t.replace('pin_factory = "auto"', 'pin_factory = "lgpio-chip"').replace(
        '[connectors.contactor]\ntype = "sim"', '[connectors.contactor]\ntype = "gpio"\npin = 1024'),
     "connectors[id=1].contactor.pin", "a GPIO chip's line numbers are 0..1023, got 1024"),
])
def test_a_bad_gpio_setting_names_the_key_and_the_reason(tmp_path, edit, key, reason):
    test_bad_config_names_the_key_and_the_reason(tmp_path, edit, key, reason)


def test_a_gpio_chip_numbers_pins_by_its_lines_beyond_the_pi_header(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(GOOD.replace('pin_factory = "auto"', 'pin_factory = "lgpio-chip"').replace(
        '# chip = "/dev/gpiochip0"', 'chip = "/dev/gpiochip2"').replace(
        '[connectors.contactor]\ntype = "sim"', '[connectors.contactor]\ntype = "gpio"\npin = 203'))
    settings = load_settings(path)
    assert (settings.gpio.pin_factory, settings.gpio.chip) == ("lgpio-chip", "/dev/gpiochip2")
    assert settings.connectors[0].contactor.pin == 203
