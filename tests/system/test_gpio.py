"""The contactor and the status light driven by lgpio on a kernel GPIO chip (gpio-sim),
through the unit's device cgroup, with a mirror contact that follows the contactor or
sticks (a welded contactor: PowerSwitchFailure); the chip left to root (no udev rule): the
connector Faulted until the rule is applied, without a restart.

gpio-sim is the kernel's own simulated chip: the firmware opens /dev/gpiochip0 and drives
its lines; the test reads the lines back and sets the input's level from sysfs. The
machine is a PC, not a Raspberry Pi: the firmware drives the chip's lines with `[gpio]
pin_factory = "lgpio-chip"`, as on any board. One case takes the Raspberry Pi's way
(gpiozero's own lgpio factory, which looks for a Pi's revision): a drop-in shows the
service a Pi 4's /proc/cpuinfo (only there, for the test machine).
"""
from __future__ import annotations

import time

from tests.system.conftest import CP_ID, configure, vm_config
from tests.system.test_machine import CLI, end_session, grow, service, start_session

CONTACTOR, MIRROR = 17, 27
RED, GREEN, BLUE = 5, 6, 13

#: The chip: 28 lines like the Pi's header GPIO0-27 (configfs, gpio-sim.rst), and
#: gpiochip0, where a Pi 4 has its header, gpiozero's own factory looks and ANY_BOARD
#: points the firmware. qemu's virt board (arm64) has a GPIO controller of its own there,
#: the PL061 of its power button: the button and the controller are let go first, so
#: that the number is free.
MAKE_CHIP = """
set -e
for driver in /sys/bus/platform/drivers/gpio-keys /sys/bus/amba/drivers/pl061_gpio; do
    [ -d $driver ] || continue
    for device in $(find $driver -maxdepth 1 -type l ! -name module -printf '%f\\n'); do
        echo $device > $driver/unbind
    done
done
modprobe gpio-sim
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
dir=/sys/kernel/config/gpio-sim/charger
if [ ! -d $dir ]; then
    mkdir $dir $dir/bank0
    echo 28 > $dir/bank0/num_lines
    echo 1 > $dir/live
fi
udevadm settle
name=$(cat $dir/bank0/chip_name)
[ $name = gpiochip0 ] || { echo "gpio-sim is $name, not gpiochip0:" /dev/gpiochip* >&2; exit 1; }
echo /sys/devices/platform/$(cat $dir/dev_name)/$(cat $dir/bank0/chip_name)
"""

BOARD = """\
# The test machine is a PC: gpiozero would find no Raspberry Pi revision in
# /proc/cpuinfo and refuse its pin factory. Show the service a Pi 4 B's.
[Service]
BindReadOnlyPaths=/etc/chargepoint/pi4-cpuinfo:/proc/cpuinfo
"""

#: The mirror contact wired to the contactor: closed (line pulled low) while the
#: contactor's line is high. A transient unit, so that stopping it welds the contact.
MIRROR_LOOP = ("while :; do if [ $(cat {chip}/sim_gpio%d/value) = 1 ]; then p=pull-down; "
               "else p=pull-up; fi; echo $p > {chip}/sim_gpio%d/pull; sleep 0.05; done"
               % (CONTACTOR, MIRROR))


#: Any board: the chip's lines, pin N being line N; a chip that cannot be opened is tried
#: again every 2 s.
ANY_BOARD = '[gpio]\npin_factory = "lgpio-chip"\nchip = "/dev/gpiochip0"\nretry_s = 2\n\n'


def gpio_config(board: str = ANY_BOARD) -> str:
    config = vm_config()
    first, rest = config.split("[connectors.contactor]\ntype = \"sim\"\n", 1)
    contactor = (f'[connectors.contactor]\ntype = "gpio"\npin = {CONTACTOR}\n'
                 f'feedback_pin = {MIRROR}\nfeedback_pull = "up"\n'
                 'feedback_active_high = false\nfeedback_settle_ms = 2000\n')
    rest = rest.replace('[connectors.indicator]\ntype = "sim"\n',
                        f'[connectors.indicator]\ntype = "gpio"\nred_pin = {RED}\n'
                        f'green_pin = {GREEN}\nblue_pin = {BLUE}\n', 1)
    first = first.replace("[[connectors]]", board + "[[connectors]]", 1)
    return first + contactor + rest


def line(vm, chip: str, number: int) -> int:
    return int(vm.run(f"cat {chip}/sim_gpio{number}/value", check=True).stdout)


def wait_line(vm, chip: str, number: int, value: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while line(vm, chip, number) != value:
        assert time.monotonic() < deadline, f"GPIO{number} never read {value}"
        time.sleep(0.5)


def test_contactor_and_light_on_a_kernel_gpio_chip_and_a_welded_contactor(machine, csms,
                                                                          meters):
    vm = machine
    chip = vm.run(MAKE_CHIP, check=True).stdout.strip().splitlines()[-1]
    owner = vm.run("stat -c '%G %a' /dev/gpiochip0", check=True).stdout.split()
    assert owner == ["gpio", "660"], owner                      # the guide's udev rule
    assert "Raspberry" not in vm.run("cat /proc/cpuinfo", check=True).stdout
    vm.run(f"systemd-run --unit=mirror-contact bash -c '{MIRROR_LOOP.format(chip=chip)}'",
           check=True)
    try:
        configure(vm, gpio_config())
        state = service(vm, "ActiveState", "NRestarts")
        assert state["ActiveState"] == "active", state
        assert line(vm, chip, CONTACTOR) == 0
        idle = [line(vm, chip, n) for n in (RED, GREEN, BLUE)]
        assert any(idle), "the status light is dark while the charger is available"

        _, meter = meters["uart"]
        grow(meter, 0.5)
        time.sleep(3)
        start = start_session(vm, csms)
        transaction_id = start.reply["transactionId"]
        wait_line(vm, chip, CONTACTOR, 1)
        charging = [line(vm, chip, n) for n in (RED, GREEN, BLUE)]
        assert charging != idle, "the status light shows the same while charging"
        end_session(vm, csms, transaction_id)
        wait_line(vm, chip, CONTACTOR, 0)

        # Welded: the mirror contact stays closed after the contactor opened.
        mark = len(csms.received)
        start = start_session(vm, csms, tag="VMTAG2")
        wait_line(vm, chip, CONTACTOR, 1)
        time.sleep(1)
        vm.run("systemctl stop mirror-contact", check=True)
        vm.run(f"echo pull-down > {chip}/sim_gpio{MIRROR}/pull", check=True)
        end_session(vm, csms, start.reply["transactionId"])
        wait_line(vm, chip, CONTACTOR, 0)
        fault = csms.wait_for("StatusNotification",
                              lambda r: r["connectorId"] == 1
                              and r["errorCode"] == "PowerSwitchFailure", timeout=60,
                              after=mark, cp_id=CP_ID)
        assert fault["status"] == "Faulted"
        vm.run(f"echo pull-up > {chip}/sim_gpio{MIRROR}/pull", check=True)
        csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1
                      and r["errorCode"] == "NoError", timeout=60, after=fault.index + 1,
                      cp_id=CP_ID)
        journal = vm.journal("-u", "chargepoint", "-b")
        assert "Permission denied" not in journal and "BadPinFactory" not in journal
    finally:
        vm.run("systemctl stop mirror-contact")
        configure(vm)


def test_a_gpio_chip_the_service_cannot_open_is_a_connector_fault_until_udev_gives_it(
        machine, csms):
    """A chip left to root (no udev rule): the service starts, says which chip and why in
    one line, reports the connector Faulted naming the chip and never drives its contactor;
    `chargepoint check` says it would start, but not in a good state; the udev rule applied
    (udevadm trigger) brings the connector back Available without a restart."""
    vm = machine
    chip = vm.run(MAKE_CHIP, check=True).stdout.strip().splitlines()[-1]
    # The mirror contact open, as it is while the contactor is.
    vm.run(f"echo pull-up > {chip}/sim_gpio{MIRROR}/pull && chown root:root /dev/gpiochip0 "
           "&& chmod 0600 /dev/gpiochip0", check=True)
    try:
        mark = len(csms.received)
        vm.write("/etc/chargepoint/config.toml", gpio_config(), mode="0640",
                 owner="root:chargepoint")
        vm.run("systemctl restart chargepoint", timeout=120, check=True)
        fault = csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1
                              and r["status"] == "Faulted", timeout=120, after=mark,
                              cp_id=CP_ID)
        assert fault["errorCode"] == "PowerSwitchFailure", fault
        assert fault["info"] == "cannot open /dev/gpiochip0", fault
        assert fault["vendorErrorCode"] == "udev rule: GROUP=gpio MODE=0660", fault
        state = service(vm, "ActiveState", "MainPID", "NRestarts")
        assert state["ActiveState"] == "active" and state["NRestarts"] == "0", state
        errors = vm.journal("-u", "chargepoint", "-b", "-p", "err")
        told = [line for line in errors.splitlines() if "(root:root, mode 0600)" in line]
        assert len(told) == 1, errors[-3000:]
        assert "cannot open /dev/gpiochip0" in told[0] and 'GROUP="gpio"' in told[0], told
        assert line(vm, chip, CONTACTOR) == 0
        check = vm.run(f"{CLI} check --config /etc/chargepoint/config.toml", timeout=120)
        assert check.returncode == 78, check.stdout + check.stderr
        assert "fault: " in check.stdout and "cannot open /dev/gpiochip0" in check.stdout
        assert "the firmware would start, but not in a good state" in check.stdout

        back = len(csms.received)
        vm.run("udevadm trigger --action=add /dev/gpiochip0 && udevadm settle", check=True)
        assert vm.run("stat -c '%G %a' /dev/gpiochip0", check=True).stdout.split() == \
            ["gpio", "660"]
        csms.wait_for("StatusNotification", lambda r: r["connectorId"] == 1
                      and r["status"] == "Available", timeout=60, after=back, cp_id=CP_ID)
        after = service(vm, "ActiveState", "MainPID", "NRestarts")
        assert after == state, (state, after)            # the same process: no restart
        idle = [line(vm, chip, n) for n in (RED, GREEN, BLUE)]
        assert any(idle), "the status light is dark once the chip opened"
    finally:
        vm.run("udevadm trigger --action=add /dev/gpiochip0 && udevadm settle")
        configure(vm)


def test_a_raspberry_pi_drives_the_contactor_through_gpiozero_s_own_factory(machine, csms,
                                                                          meters):
    """The Pi's way: `[gpio] pin_factory = "auto"`, gpiozero's lgpio factory, pins by BCM
    number; the board is a Pi 4 B by the /proc/cpuinfo a drop-in shows the service."""
    vm = machine
    chip = vm.run(MAKE_CHIP, check=True).stdout.strip().splitlines()[-1]
    vm.write("/etc/chargepoint/pi4-cpuinfo", "processor\t: 0\nRevision\t: c03111\n"
             "Model\t\t: Raspberry Pi 4 Model B Rev 1.1\n")
    vm.write("/etc/systemd/system/chargepoint.service.d/board.conf", BOARD)
    vm.run("systemctl daemon-reload", check=True)
    vm.run(f"systemd-run --unit=mirror-contact bash -c '{MIRROR_LOOP.format(chip=chip)}'",
           check=True)
    try:
        configure(vm, gpio_config(board='[gpio]\npin_factory = "auto"\n\n'))
        state = service(vm, "ActiveState", "NRestarts")
        assert state["ActiveState"] == "active", state
        _, meter = meters["uart"]
        grow(meter, 0.5)
        time.sleep(3)
        start = start_session(vm, csms, tag="VMTAG3")
        wait_line(vm, chip, CONTACTOR, 1)
        end_session(vm, csms, start.reply["transactionId"])
        wait_line(vm, chip, CONTACTOR, 0)
        journal = vm.journal("-u", "chargepoint", "-b")
        assert "Permission denied" not in journal and "BadPinFactory" not in journal
    finally:
        vm.run("systemctl stop mirror-contact; rm -f "
               "/etc/systemd/system/chargepoint.service.d/board.conf; systemctl daemon-reload")
        configure(vm)
