"""A Debian 12 machine under qemu, for the system tests: boot, run commands, cut the power.

The disk is a copy-on-write overlay of the cached image (image/build.py), in
`cache=writeback`: what the guest wrote but did not flush is in qemu's and the host's
caches, and killing qemu (`power_cut`) loses what the guest itself had not written out,
as a power cut loses a Pi's page cache. The overlay survives qemu, so the next `boot`
finds the disk as the power cut left it.

The guest reaches nothing but what is forwarded to it: qemu's user-mode network with
`restrict=on`, and 10.0.2.100:9000 forwarded to a TCP port on the host (the CSMS). Its
first UART (ttyS0 on amd64's q35, the PL011 ttyAMA0 on arm64's virt) and an emulated
FTDI USB serial adapter (ttyUSB0) are bridged to host pseudo-terminals; the console (the
second UART ttyS1 on amd64, a virtio console hvc0 on arm64, whose board has one UART) is
logged to `console.log` and reachable with `socat -,raw,echo=0 UNIX-CONNECT:console.sock`.

Commands run through the QEMU guest agent (qemu-guest-agent in the image): no network
and no keys needed. Its protocol is a few JSON lines over a socket, so it is spoken here
directly rather than through a library.
"""
from __future__ import annotations

import base64
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

#: Where the guest finds the CSMS (guestfwd) and what it is forwarded to on the host.
CSMS_GUEST_ADDRESS = "10.0.2.100"
CSMS_GUEST_PORT = 9000

QEMU = {"amd64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}


class GuestError(RuntimeError):
    """A command in the guest failed, or the guest did not answer."""


@dataclass
class Result:
    command: str
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> "Result":
        if self.returncode:
            raise GuestError(f"in the guest: {self.command!r} exited {self.returncode}\n"
                             f"stdout:\n{self.stdout[-4000:]}\nstderr:\n{self.stderr[-4000:]}")
        return self


class Machine:
    """One guest: its overlay disk, console log and sockets live in `workdir`."""

    def __init__(self, image: Path, workdir: Path, arch: str = "amd64", *,
                 csms_port: int, uart: Optional[str] = None, usb_serial: Optional[str] = None,
                 share: Optional[Path] = None, memory_mb: int = 1024):
        self.image = Path(image)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.arch = arch
        self.csms_port = csms_port
        self.uart = uart
        self.usb_serial = usb_serial
        self.share = share
        self.memory_mb = memory_mb
        self.disk = self.workdir / "disk.qcow2"
        self.console_log = self.workdir / "console.log"
        self.qga_path = self.workdir / "qga.sock"
        self.proc: Optional[subprocess.Popen] = None
        self.boots: list[float] = []          # seconds from qemu's start to the agent's answer
        self._agent = None                    # (socket, reader) to the guest agent

    # ---------------------------------------------------------------- life
    def create_disk(self) -> None:
        """A fresh overlay on the cached image (the image itself is never written)."""
        if self.disk.exists():
            self.disk.unlink()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        str(self.image / "rootfs.img"), str(self.disk)], check=True)

    def command(self) -> list[str]:
        forward = (f"guestfwd=tcp:{CSMS_GUEST_ADDRESS}:{CSMS_GUEST_PORT}-cmd:"
                   f"socat STDIO TCP:127.0.0.1:{self.csms_port}")
        accel = os.environ.get("CHARGEPOINT_VM_ACCEL", "tcg,thread=multi")
        cmd = [QEMU[self.arch], "-nodefaults", "-display", "none", "-no-user-config",
               "-smp", "2", "-m", str(self.memory_mb), "-accel", accel,
               "-kernel", str(self.image / "vmlinuz"), "-initrd", str(self.image / "initrd.img"),
               "-drive", f"file={self.disk},if=none,id=root,format=qcow2,cache=writeback,"
                         "discard=unmap",
               "-netdev", f"user,id=net0,restrict=on,{forward}",
               "-chardev", f"socket,id=qga0,path={self.qga_path},server=on,wait=off",
               "-chardev", f"socket,id=con0,path={self.workdir / 'console.sock'},server=on,"
                           f"wait=off,logfile={self.console_log},logappend=on",
               "-chardev", f"serial,id=uart0,path={self.uart}" if self.uart
               else "null,id=uart0",
               ]
        if self.arch == "amd64":
            cmd += ["-machine", "q35", "-cpu", "max",
                    "-append", "root=/dev/vda rw console=ttyS1,115200 panic=-1",
                    "-device", "virtio-blk-pci,drive=root",
                    "-device", "virtio-net-pci,netdev=net0",
                    "-device", "virtio-serial-pci",
                    "-serial", "chardev:uart0", "-serial", "chardev:con0"]
        else:
            # A Cortex-A72 as on a Raspberry Pi 4; qemu's "max" CPU would add pointer
            # authentication, which TCG computes in software at every call and return.
            cmd += ["-machine", "virt", "-cpu", "cortex-a72",
                    "-append", "root=/dev/vda rw console=hvc0 panic=-1",
                    "-device", "virtio-blk-device,drive=root",
                    "-device", "virtio-net-device,netdev=net0",
                    "-device", "virtio-serial-device",
                    "-serial", "chardev:uart0",
                    "-device", "virtconsole,chardev=con0"]
        cmd += ["-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]
        if self.usb_serial:
            cmd += ["-device", "qemu-xhci", "-chardev", f"serial,id=usb0,path={self.usb_serial}",
                    "-device", "usb-serial,chardev=usb0"]
        if self.share is not None:
            cmd += ["-virtfs", f"local,path={self.share},mount_tag=share,"
                               "security_model=none,readonly=on"]
        return cmd

    def boot(self, timeout: float = 400.0) -> float:
        """Start qemu and wait for the guest agent; returns the seconds it took."""
        if not self.disk.exists():
            self.create_disk()
        self._drop()
        for stale in (self.qga_path, self.workdir / "console.sock"):
            if stale.exists():
                stale.unlink()
        with open(self.workdir / "qemu.log", "ab") as log:
            log.write(f"\n$ {shlex.join(self.command())}\n".encode())
            log.flush()
            started = time.monotonic()
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_agent(timeout, since=started)
        took = time.monotonic() - started
        self.boots.append(took)
        return took

    def wait_agent(self, timeout: float, since: Optional[float] = None) -> None:
        deadline = (since or time.monotonic()) + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                raise GuestError(f"qemu exited ({self.proc and self.proc.returncode}) before "
                                 f"the guest came up:\n{self.tail_console()}\n"
                                 f"{(self.workdir / 'qemu.log').read_text()[-2000:]}")
            try:
                self._sync(timeout=3)
                return
            except (OSError, GuestError, ValueError):
                if time.monotonic() > deadline:
                    raise GuestError(f"the guest agent did not answer within {timeout:.0f} s:"
                                     f"\n{self.tail_console()}")
                time.sleep(1)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def power_cut(self) -> None:
        """qemu killed at once: the guest's unwritten data is gone, the disk keeps the rest."""
        self._drop()
        if self.running:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def shutdown(self, timeout: float = 120.0) -> None:
        """A clean power-off (systemctl poweroff), or the power cut after `timeout`."""
        if not self.running:
            return
        try:
            self.run("systemctl poweroff --no-block", timeout=10)
        except (GuestError, OSError):
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.power_cut()

    def wait_exit(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    # ---------------------------------------------------------------- the guest agent
    def _request(self, message: dict, timeout: float = 20.0) -> dict:
        sock, reader = self._channel()
        sock.settimeout(timeout)
        try:
            sock.sendall(json.dumps(message).encode() + b"\n")
            line = reader.readline()
        except OSError:
            self._drop()
            raise
        if not line:
            self._drop()
            raise GuestError("the guest agent closed the connection")
        reply = json.loads(line)
        if "error" in reply:
            raise GuestError(f"guest agent: {reply['error']}")
        return reply["return"]

    def _channel(self):
        """The one connection to the agent (qemu serves one client at a time), opened
        and synchronised on first use and after any failure."""
        if self._agent is None:
            self._agent = self._connect(timeout=5)
        return self._agent

    def _drop(self) -> None:
        if self._agent is not None:
            self._agent[0].close()
            self._agent = None

    def _connect(self, timeout: float):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(str(self.qga_path))
            reader = sock.makefile("rb")
            # guest-sync-delimited: the agent answers after a 0xFF byte, so whatever an
            # earlier, abandoned exchange left in the channel is skipped.
            token = random.randrange(1, 2**31)
            sock.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited",
                                               "arguments": {"id": token}}).encode() + b"\n")
            while True:
                byte = reader.read(1)
                if not byte:
                    raise GuestError("the guest agent closed the connection")
                if byte == b"\xff":
                    break
            while True:
                line = reader.readline()
                if not line:
                    raise GuestError("the guest agent closed the connection")
                try:
                    if json.loads(line).get("return") == token:
                        return sock, reader
                except ValueError:
                    continue
        except BaseException:
            sock.close()
            raise

    def _sync(self, timeout: float) -> None:
        self._drop()
        self._agent = self._connect(timeout)

    def run(self, command: str, timeout: float = 120.0, input: Optional[str] = None,
            check: bool = False) -> Result:
        """`command` through /bin/bash as root in the guest; waits for it to end."""
        args = {"path": "/bin/bash", "arg": ["-c", command], "capture-output": True}
        if input is not None:
            args["input-data"] = base64.b64encode(input.encode()).decode()
        pid = None
        for attempt in range(3):            # a channel gone stale is opened again
            try:
                pid = self._request({"execute": "guest-exec", "arguments": args})["pid"]
                break
            except (OSError, GuestError):
                self._drop()
                if attempt == 2 or not self.running:
                    raise
                time.sleep(2)
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            status = self._request({"execute": "guest-exec-status", "arguments": {"pid": pid}})
            if status.get("exited"):
                break
            if time.monotonic() > deadline:
                raise GuestError(f"in the guest: {command!r} still running after "
                                 f"{timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        decode = lambda key: base64.b64decode(status.get(key, "")).decode(errors="replace")
        code = status.get("exitcode", -status.get("signal", 1) or -1)
        result = Result(command, code, decode("out-data"), decode("err-data"))
        return result.check() if check else result

    def write(self, path: str, text: str, mode: str = "0644", owner: str = "root:root") -> None:
        """A file in the guest, written and flushed to its disk."""
        self.run(f"install -D -m {mode} -o {owner.split(':')[0]} -g {owner.split(':')[1]} "
                 f"/dev/stdin {shlex.quote(path)} && sync {shlex.quote(path)}",
                 input=text, check=True)

    def boot_id(self) -> str:
        return self.run("cat /proc/sys/kernel/random/boot_id", check=True).stdout.strip()

    # ---------------------------------------------------------------- what happened
    def journal(self, *args: str, timeout: float = 60.0) -> str:
        return self.run("journalctl --no-pager -o short-iso-precise "
                        + " ".join(shlex.quote(a) for a in args), timeout=timeout).stdout

    def tail_console(self, chars: int = 3000) -> str:
        try:
            return self.console_log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no console output)"
