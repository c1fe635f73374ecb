"""What would stop the firmware, found before it starts, each said in one line with its fix.

`chargepoint run` makes these checks before it opens anything, and `chargepoint check`
makes them alone: the database's place (as the user that runs the firmware), a run as
root over another user's state, and the hardware backends (a GPIO pin factory, serial
ports, SPI and PWM devices). The configuration file itself is checked by
chargepoint/config.py, its TLS files by chargepoint/tls_files.py.

Nothing here drives an output, opens a serial port (opening one raises DTR, which
resets an Arduino-based board such as the OpenEVSE), creates a file or takes the
database's lock. A finding is an *error* when the firmware would not start on it, or
when nothing but an operator can fix it (a permission); a *fault* when it starts but
reports connectors Faulted until an operator fixes it (a GPIO chip it may not open); a
*warning* when the firmware starts and copes (a USB serial adapter not plugged in yet reports a fault until it
appears; a read-only filesystem runs the database in memory until it can be written).
"""
from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Optional

#: The user and the extra groups of systemd/chargepoint.service (User=,
#: SupplementaryGroups=): `chargepoint check` run as root checks as them.
SERVICE_USER = "chargepoint"
SERVICE_GROUPS = ("gpio", "dialout", "spi", "i2c", "systemd-journal")
#: Those of them that own device nodes.
DEVICE_GROUPS = SERVICE_GROUPS[:4]
#: Exit status for a configuration the firmware does not start with (sysexits EX_CONFIG);
#: the service does not restart on it (RestartPreventExitStatus=78).
EXIT_CONFIG = 78
#: Exit status for an error nobody foresaw (sysexits EX_SOFTWARE); the service restarts.
EXIT_SOFTWARE = 70


@dataclass(frozen=True)
class Finding:
    #: error: the firmware would not start; fault: it starts, but reports connectors
    #: Faulted until an operator fixes it; warning: it starts and copes.
    level: Literal["error", "fault", "warning"]
    #: What it is about: `FILE: KEY` of the configuration, or a path.
    where: str
    text: str

    def line(self) -> str:
        return f"{self.level}: {self.where}: {self.text}"


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "error"]


def faults(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level == "fault"]


def config_findings(exc) -> list[Finding]:
    """A ConfigError as one finding per problem."""
    return [Finding("error", f"{exc.path}: {key}", reason) for key, reason in exc.problems]


# --------------------------------------------------------------------------- users
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _me() -> str:
    return user_name(os.geteuid())


def _my_group() -> str:
    return group_name(os.getegid())


def describe(path: str | Path, st: Optional[os.stat_result] = None) -> str:
    """`/var/lib/chargepoint (root:root, mode 0755)`."""
    try:
        st = st or os.stat(path)
    except OSError:
        return str(path)
    return f"{path} ({user_name(st.st_uid)}:{group_name(st.st_gid)}, mode " \
           f"{st.st_mode & 0o7777:04o})"


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _stat(path: Path) -> Optional[os.stat_result]:
    """os.stat, None if nothing is there; PermissionError when a directory on the way
    cannot be searched (pathlib's exists() raises it too)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


# --------------------------------------------------------------------------- storage
def storage_findings(database: str) -> list[Finding]:
    """Can this process's user keep the database at `database`? Permissions and ownership
    are errors (nothing but an operator changes them); a read-only filesystem is a
    warning: chargepoint/storage.py runs in memory until the place can be written."""
    if database == ":memory:":
        return []
    db = Path(database)
    directory = db.parent
    fix_elsewhere = "or choose another place with --state-dir or [storage] path"
    existing = directory
    try:
        while _stat(existing) is None and existing != existing.parent:
            existing = existing.parent
    except PermissionError:
        blocked = existing.parent
        return [Finding("error", database, f"user {_me()} cannot reach {directory}: "
                        f"{describe(blocked)} does not let it through; "
                        f"{fix_elsewhere}")]
    if not existing.is_dir():
        return [Finding("error", database, f"{existing} is not a directory; {fix_elsewhere}")]
    if not os.access(existing, os.W_OK | os.X_OK):
        if _read_only(existing):
            return [_read_only_finding(database, existing)]
        if existing == directory:
            text = (f"user {_me()} cannot write in {describe(directory)}, where the database "
                    f"and its lock live: give it the directory, sudo chown -R "
                    f"{_me()}:{_my_group()} {directory}; {fix_elsewhere}")
        else:
            text = (f"cannot create {directory}: user {_me()} cannot write in "
                    f"{describe(existing)}: create it for the user, sudo install -d -o "
                    f"{_me()} -g {_my_group()} -m 0750 {directory}; {fix_elsewhere}")
        return [Finding("error", database, text)]
    found = []
    for name in (database, *(database + s for s in ("-wal", "-shm", ".lock"))):
        try:
            st = os.stat(name)
        except FileNotFoundError:
            continue
        if os.access(name, os.R_OK | os.W_OK):
            continue
        if _read_only(Path(name)):
            return [_read_only_finding(database, directory)]
        made_by_root = " (made by a run as root?)" if st.st_uid == 0 and os.geteuid() else ""
        found.append(Finding("error", database, (
            f"user {_me()} cannot read and write {describe(name, st)}{made_by_root}: give "
            f"the files back, sudo chown {_me()}:{_my_group()} {database}*")))
    return found


def _read_only_finding(database: str, where: Path) -> Finding:
    return Finding("warning", database, (
        f"{where} is on a read-only filesystem: the firmware starts on an in-memory "
        "database (nothing durable, reported to the CSMS) and moves onto the file once it "
        "can be written (docs/delivery.md)"))


def root_findings(database: str, config: str) -> list[Finding]:
    """Run as root over state that belongs to another user (the service's), every file
    root makes there would keep that user from writing it: the next start of the service
    would find a database it cannot open. Refused, naming the owner."""
    if os.geteuid() != 0 or database == ":memory:":
        return []
    for path in (Path(database).parent, Path(database)):
        st = _stat(path)
        if st is None or st.st_uid == 0:
            continue
        owner = user_name(st.st_uid)
        return [Finding("error", str(path), (
            f"refusing to run as root: it belongs to user {owner}, and files root made "
            f"there would keep {owner} from writing them. Run as that user, sudo -u {owner} "
            f"chargepoint run --config {config}, or start the service, sudo systemctl "
            "start chargepoint"))]
    return []


def lock_findings(database: str) -> list[Finding]:
    """Whether a firmware runs on the database now, read from /proc/locks: taking the
    lock to see would make that firmware's own start fail meanwhile."""
    try:
        st = os.stat(database + ".lock")
        with open("/proc/locks") as f:
            locks = f.read().splitlines()
    except OSError:
        return []
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in locks:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == ident:
            return [Finding("warning", database, (
                f"in use by a running chargepoint (pid {fields[4]}); another one would not "
                "start on it (exit 75) until that one stops"))]
    return []


# --------------------------------------------------------------------------- hardware
def _devices(settings) -> Iterator[tuple[str, object]]:
    for conn in settings.connectors:
        for kind in ("meter", "contactor", "pilot", "lock", "indicator"):
            device = getattr(conn, kind)
            if device is not None:
                yield f"{settings.source}: connectors[id={conn.id}].{kind}", device
    for i, reader in enumerate(settings.readers):
        yield f"{settings.source}: readers[{i}]", reader


#: Backends that drive pins or SPI through gpiozero's pin factory. Each reports a fault on
#: its connector while its chip cannot be opened, and is tried again (hal/gpio_reopen.py).
_GPIO_MODULES = {"hal.gpio", "hal.meters.s0", "hal.pilot_pwm"}


def hardware_findings(settings, keep_pin_factory: bool = False) -> list[Finding]:
    """Whether each backend can reach its hardware: a GPIO pin factory loads (kept loaded
    for the firmware with `keep_pin_factory`), serial ports and the pilot's SPI and PWM
    devices exist and this user may open them. Opens none of them.

    A GPIO chip this user cannot open (whatever GPIO devices are on it) is a
    *fault*: the firmware starts and reports their connectors Faulted until it can."""
    found: list[Finding] = []
    devices = list(_devices(settings))
    gpio_users = [where for where, d in devices if type(d).__module__ in _GPIO_MODULES]
    real_pins = True
    if gpio_users:
        from gpiozero import Device  # lazy: optional, only a charger with GPIO devices
        from gpiozero.pins.mock import MockFactory  # lazy: as gpiozero above

        from hal import gpio  # lazy: loads gpiozero (above)

        loaded_before = Device.pin_factory is not None
        where = gpio_users[0] + (f" (and {len(gpio_users) - 1} more)" if len(gpio_users) > 1
                                 else "")
        try:
            note = gpio.ensure_pin_factory(settings.gpio)
        except gpio.GpioChipUnavailable as exc:
            found.append(Finding("fault", where, (
                f"{exc}; the firmware starts, reports the connectors of these devices "
                f"Faulted and opens {exc.chip} once it can (every "
                f"[gpio] retry_s = {settings.gpio.retry_s:g} s)")))
            real_pins = False
        except gpio.GpioUnavailable as exc:
            found.append(Finding("error", where, str(exc)))
            real_pins = False
        else:
            if note:
                found.append(Finding("warning", where, note))
            real_pins = not isinstance(Device.pin_factory, MockFactory)
            if not keep_pin_factory and not loaded_before:
                gpio.release_pin_factory()
    for where, device in devices:
        port = getattr(device, "port", None)
        if isinstance(port, str) and port.startswith("/"):     # not socket:// or loop://
            found += _port_findings(f"{where}.port", port, "dialout")
        if real_pins and type(device).__name__ == "PwmAdcPilotSettings":
            found += _pilot_findings(where, device)
    return found


def _port_findings(where: str, path: str, group: str, missing_is_error: bool = False,
                   enable: str = "") -> list[Finding]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if missing_is_error:
            return [Finding("error", where, f"{path} does not exist: {enable}")]
        return [Finding("warning", where, (
            f"{path} is not there: the firmware starts and reports the device faulty "
            "until it appears (is it plugged in? ls -l /dev/serial/by-id/)"))]
    except OSError as exc:
        return [Finding("error", where, f"cannot reach {path}: {exc.strerror}")]
    if not stat.S_ISCHR(st.st_mode):
        return [Finding("error", where, f"{path} is not a device (a character device)")]
    if not os.access(path, os.R_OK | os.W_OK):
        return [Finding("error", where, (
            f"user {_me()} cannot open {describe(path, st)}: run as a member of the group "
            f"{group_name(st.st_gid) if st.st_mode & 0o060 == 0o060 else group} (the "
            f"service's SupplementaryGroups= has {', '.join(DEVICE_GROUPS)}), or give "
            f"the device to that group with a udev rule"))]
    return []


def _pilot_findings(where: str, pilot) -> list[Finding]:
    """The MCP3008's SPI device and the PWM channel's sysfs files (docs/hardware.md,
    "Enabling PWM and SPI")."""
    found = _port_findings(f"{where}.spi_port", f"/dev/spidev{pilot.spi_port}."
                           f"{pilot.spi_device}", "spi", missing_is_error=True,
                           enable="enable SPI (dtparam=spi=on in /boot/firmware/config.txt, "
                                  "or sudo raspi-config, Interface Options, SPI) and reboot")
    chip = Path(pilot.sysfs_root) / f"pwmchip{pilot.pwm_chip}"
    channel = chip / f"pwm{pilot.pwm_channel}"
    if not chip.is_dir():
        found.append(Finding("error", f"{where}.pwm_chip", (
            f"{chip} does not exist: load the PWM overlay (dtoverlay=pwm,pin=18,func=2 in "
            "/boot/firmware/config.txt) and reboot, or set pwm_chip (ls /sys/class/pwm)")))
        return found
    target = channel / "duty_cycle" if channel.is_dir() else chip / "export"
    if target.exists() and not os.access(target, os.W_OK):
        found.append(Finding("error", f"{where}.pwm_chip", (
            f"user {_me()} cannot write {describe(target)}: Raspberry Pi OS's udev rules "
            "give the group gpio the PWM files; run as a member of gpio")))
    return found


def identity_findings(settings, config: str) -> list[Finding]:
    """warning: a fixed firmware_version, which every release would report alike."""
    ident = settings.identity
    if not ident.hides_the_release:
        return []
    return [Finding("warning", f"{config}: identity.firmware_version", (
        f"{ident.firmware_version!r} is what BootNotification reports whichever release "
        "runs, so the Central System cannot tell an update took; write {version} where "
        "the release's number belongs (e.g. \"ACME-{version}\")"))]


# --------------------------------------------------------------------------- the checks
def startup_findings(settings, config: str) -> list[Finding]:
    """What `chargepoint run` checks before it opens the database or the hardware. The
    pin factory a check loads stays loaded for the firmware."""
    refused = root_findings(settings.storage.path, config)
    if refused:
        return refused
    # A fault is the devices' to report, once, as they are built (hal/gpio_reopen.py).
    return storage_findings(settings.storage.path) + identity_findings(settings, config) + \
        [f for f in hardware_findings(settings, keep_pin_factory=True) if f.level != "fault"]


def check_findings(settings, config: str) -> list[Finding]:
    """What `chargepoint check` reports beyond the configuration: what `run` would find,
    and whether a firmware runs on the database now."""
    refused = root_findings(settings.storage.path, config)
    if refused:
        return refused
    return storage_findings(settings.storage.path) + lock_findings(settings.storage.path) \
        + identity_findings(settings, config) + hardware_findings(settings)


# --------------------------------------------------------------------------- as another user
def default_check_user() -> str:
    """Root checks as the service's user when it exists (root could open anything);
    anyone else as themselves."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVICE_USER)
            return SERVICE_USER
        except KeyError:
            pass
    return user_name(os.geteuid())


def run_as(user: pwd.struct_passwd, argv: list[str]) -> int:
    """`python -m chargepoint ARGV` as `user`, with its groups and the service's
    supplementary groups (as systemd would start it); its exit status."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for name in SERVICE_GROUPS:
        try:
            groups.add(grp.getgrnam(name).gr_gid)
        except KeyError:
            pass
    env = dict(os.environ, HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)
    try:
        return subprocess.run([sys.executable, "-m", "chargepoint", *argv], cwd="/",
                              env=env, user=user.pw_uid, group=user.pw_gid,
                              extra_groups=sorted(groups)).returncode
    except OSError as exc:
        print(f"chargepoint: cannot check as user {user.pw_name}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return EXIT_SOFTWARE if exc.errno != errno.EACCES else EXIT_CONFIG
