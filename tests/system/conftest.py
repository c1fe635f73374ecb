"""The system tests' machine: Debian 12 under qemu, the firmware installed in it by
following systemd/README-install.md, a CSMS and two Modbus meters on the host.

They run with CI set, or with CHARGEPOINT_VM=1 (they need root, qemu and mmdebstrap:
docs/vm.md). One machine serves every test of the session, in the order
they are written; a test that needs a fresh start restarts the service itself.

    CHARGEPOINT_VM_WORKDIR=DIR   keep the machine's files (disk, console, journal) there
    CHARGEPOINT_VM_KEEP=1        leave the machine running after the tests
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from chargepoint.csms.server import LocalCsms
from tests.hal.modbus_sim import Sdm630, SimBus
from tests.system.machine import CSMS_GUEST_ADDRESS, CSMS_GUEST_PORT, GuestError, Machine
from tests.test_install_guide import steps
from tests.test_packaging import load_dev

ROOT = Path(__file__).resolve().parents[2]
ARCH = os.environ.get("CHARGEPOINT_VM_ARCH", "amd64")
CP_ID = "CP-VM"
#: The meters' registers when the machine starts (kWh).
UART_METER_KWH = 1000.0
USB_METER_KWH = 2000.0

#: Where the guest's pip finds the release's dependencies: the guest has no network but
#: the CSMS, so they are downloaded on the host (for the guest's platform) and shared.
GUEST_PIP_CONF = """\
[global]
no-index = true
find-links = /media/share/wheels
"""

#: The guide's steps for a first install, in its order (test_install_guide.PLAN).
FIRST_INSTALL = ["release", "switch", "user", "config", "preflight", "polkit", "udev",
                 "service", "check", "journald"]

#: A test's limit, the machine's boot and the install included for the first.
TEST_TIMEOUT_S = 1800

PLATFORMS = {"amd64": "x86_64", "arm64": "aarch64"}
#: The guest's UART the first meter is on: the PC's first 16550, the virt board's PL011.
METER_UART = {"amd64": "/dev/ttyS0", "arm64": "/dev/ttyAMA0"}
#: What the machine needs on the host, from Debian's packages: {command: package}.
HOST_TOOLS = {
    "amd64": {"qemu-system-x86_64": "qemu-system-x86"},
    # The image's packages are configured, and gpio-sim compiled, by arm64 binaries run
    # through qemu-user (binfmt_misc); mmdebstrap checks that with arch-test.
    "arm64": {"qemu-system-aarch64": "qemu-system-arm", "qemu-aarch64-static": "qemu-user-static",
              "update-binfmts": "binfmt-support", "arch-test": "arch-test"},
}


def vm_config(sample_interval: int = 5) -> str:
    """The charger the machine runs: two connectors, Modbus meters on the UART and on the
    USB serial adapter; pilot, reader and contactor simulated (tests switch to GPIO)."""
    return f"""\
[csms]
url = "ws://{CSMS_GUEST_ADDRESS}:{CSMS_GUEST_PORT}/ocpp"
charge_point_id = "{CP_ID}"
reconnect_min_s = 0.5
reconnect_max_s = 2

[log]
level = "info"

[ocpp]
MeterValueSampleInterval = {sample_interval}
MeterValuesSampledData = "Energy.Active.Import.Register,Power.Active.Import"
TransactionMessageRetryInterval = 2

[[connectors]]
id = 1
max_current_a = 32
phases = 3

[connectors.meter]
type = "modbus"
model = "sdm630"
port = "{METER_UART[ARCH]}"
baudrate = 9600

[connectors.contactor]
type = "sim"

[connectors.pilot]
type = "sim"

[connectors.indicator]
type = "sim"

[[connectors]]
id = 2
max_current_a = 16
phases = 1

[connectors.meter]
type = "modbus"
model = "sdm630"
port = "/dev/ttyUSB0"
baudrate = 9600

[connectors.contactor]
type = "sim"

[connectors.pilot]
type = "sim"

[[readers]]
type = "sim"
"""


def wanted() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("CHARGEPOINT_VM"))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Skipped unless wanted; otherwise in the order they are written (after any
    shuffling plugin), since they share one machine, and all on one pytest-xdist worker
    (`--dist loadgroup`, as dev.py runs the suite)."""
    mine = [i for i, item in enumerate(items) if "tests/system/" in str(item.fspath)]
    if not wanted():
        skip = pytest.mark.skip(reason="system tests in a VM: set CHARGEPOINT_VM=1 (CI runs them)")
        for i in mine:
            items[i].add_marker(skip)
        return
    for i in mine:
        items[i].add_marker(pytest.mark.timeout(TEST_TIMEOUT_S))
        items[i].add_marker(pytest.mark.xdist_group("machine"))
    ordered = sorted((items[i] for i in mine), key=lambda item: (str(item.fspath),
                                                                 item.location[1]))
    for i, item in zip(mine, ordered):
        items[i] = item


def _why_not_here() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mmdebstrap, the image's file ownership)"
    if ARCH not in HOST_TOOLS:
        return f"CHARGEPOINT_VM_ARCH={ARCH!r}: one of {', '.join(HOST_TOOLS)}"
    tools = dict(HOST_TOOLS[ARCH], **{"qemu-img": "qemu-utils", "mmdebstrap": "mmdebstrap",
                                      "socat": "socat"})
    missing = [package for tool, package in tools.items() if shutil.which(tool) is None]
    if missing:
        return f"missing: apt-get install {' '.join(missing)}"
    return None


@pytest.fixture(scope="session")
def vm_workdir():
    given = os.environ.get("CHARGEPOINT_VM_WORKDIR")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix="chargepoint-vm-"))


@pytest.fixture(scope="session")
def image():
    reason = _why_not_here()
    if reason:
        pytest.fail(f"the system tests cannot run here: {reason}")
    sys.path.insert(0, str(ROOT / "image"))
    import build                  # image/build.py: a script beside the tests, not a package
    started = time.monotonic()
    path = build.build(ARCH)
    took = time.monotonic() - started
    print(f"\nimage {path.name}: {took:.0f} s (built in "
          f"{(path / 'build-seconds').read_text().strip()} s when it was made)")
    return path


@pytest.fixture(scope="session")
def share(vm_workdir):
    """The release as dev.py release builds it, and its dependencies' wheels for the guest."""
    share = vm_workdir / "share"
    if share.exists():
        shutil.rmtree(share)
    share.mkdir()
    release = load_dev().build_release(ROOT, share)
    machine = PLATFORMS[ARCH]
    platforms = [f"--platform=manylinux_2_{v}_{machine}" for v in (36, 35, 34, 31, 28, 27, 17)]
    platforms += [f"--platform=manylinux2014_{machine}", f"--platform=linux_{machine}"]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--require-hashes",
                    "--only-binary", ":all:", *platforms, "--python-version", "3.11",
                    "--implementation", "cp", "--abi", "cp311", "--abi", "abi3",
                    "--abi", "none", "-d", str(share / "wheels"),
                    "-r", str(release / "requirements-pi.txt")], check=True)
    return share, release.name


@pytest.fixture(scope="session")
def csms():
    server = LocalCsms(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.stop(graceful=False)


@pytest.fixture(scope="session")
def meters(vm_workdir):
    """{"uart": (bus, meter), "usb": (bus, meter)}: SDM630s answering on host ptys."""
    found = {}
    for name, kwh in (("uart", UART_METER_KWH), ("usb", USB_METER_KWH)):
        bus = SimBus(vm_workdir, f"meter-{name}")
        meter = bus.add(Sdm630(1))
        meter.kwh = kwh
        meter.set(import_kwh=kwh, power=0.0, voltage=(230.0, 230.0, 230.0),
                  current=(0.0, 0.0, 0.0))
        found[name] = (bus, meter)
    yield found
    for bus, _ in found.values():
        bus.close()


class Guide:
    """The install guide's output, step by step: {step name: its output}."""

    def __init__(self, output: str):
        self.output = output
        self.sections: dict[str, str] = {}
        for chunk in ("\n" + output).split("\n::step ")[1:]:
            name, _, body = chunk.partition("\n")
            self.sections[name.strip()] = body


@pytest.fixture(scope="session")
def machine(image, share, csms, meters, vm_workdir):
    """The booted machine, the firmware installed by the guide and running the VM's
    configuration against the host CSMS."""
    share_dir, release = share
    vm = Machine(image, vm_workdir / "machine", ARCH, csms_port=csms.port,
                 uart=meters["uart"][0].port, usb_serial=meters["usb"][0].port,
                 share=share_dir)
    vm.create_disk()
    print(f"\nthe machine's files: {vm.workdir}")
    vm.timings = {}
    vm.timings["first boot"] = vm.boot()
    print(f"\nbooted in {vm.timings['first boot']:.0f} s")
    try:
        vm.run("mkdir -p /media/share && mount -t 9p -o trans=virtio,version=9p2000.L,ro "
               "share /media/share", check=True)
        vm.write("/etc/pip.conf", GUEST_PIP_CONF)
        vm.run(f"rm -rf /root/{release} && cp -r /media/share/{release} /root/", check=True)
        guide = steps()
        script = ["set -euo pipefail", f"cd /root/{release}"]
        for name in FIRST_INSTALL:
            script += [f"echo '::step {name}'", guide[name]]
        script.append("echo '::step end'")
        started = time.monotonic()
        result = vm.run("\n".join(script), timeout=1200)
        vm.timings["install by the guide"] = time.monotonic() - started
        print(f"installed by the guide in {vm.timings['install by the guide']:.0f} s")
        vm.guide = Guide(result.stdout + "\n" + result.stderr)
        if result.returncode or "end" not in vm.guide.sections:
            last = list(vm.guide.sections)[-1] if vm.guide.sections else "the start"
            raise GuestError(f"the install guide failed at step {last} (exit "
                             f"{result.returncode}):\n{result.stdout[-5000:]}\n"
                             f"{result.stderr[-5000:]}")
        configure(vm)
        yield vm
    finally:
        save_logs(vm)
        timings = {name: round(value, 1) for name, value in vm.timings.items()}
        (vm.workdir / "timings.json").write_text(json.dumps(timings, indent=1) + "\n")
        print(f"\nthe machine's timings (s): {timings}")
        if os.environ.get("CHARGEPOINT_VM_KEEP"):
            print(f"\nthe machine keeps running (qemu pid {vm.proc and vm.proc.pid}); "
                  f"console: socat -,raw,echo=0 UNIX-CONNECT:{vm.workdir}/console.sock; "
                  f"files in {vm.workdir}")
        else:
            vm.shutdown(timeout=60)


def configure(vm: Machine, config: str | None = None) -> None:
    """The VM's configuration in place of the example (sudoedit in the guide), and the
    service restarted on it."""
    vm.write("/etc/chargepoint/config.toml", config or vm_config(), mode="0640",
             owner="root:chargepoint")
    vm.run("systemctl restart chargepoint", timeout=120, check=True)


def save_logs(vm: Machine) -> None:
    """The guest's journal beside its console log, for reading after a failure."""
    if not vm.running:
        return
    try:
        (vm.workdir / "journal.txt").write_text(vm.journal(timeout=120))
    except (GuestError, OSError) as exc:
        (vm.workdir / "journal.txt").write_text(f"(no journal: {exc})\n")
