#!/usr/bin/env python3
"""The test machine's disk: Debian 12 with systemd, Python 3.11 and a kernel, built with
mmdebstrap from Debian's packages and kept in a cache named after this recipe's hash.

    python3 image/build.py [--arch amd64|arm64]    prints the image's directory

The directory holds `rootfs.img` (one ext4 file system, the whole disk), `vmlinuz` and
`initrd.img` (qemu boots them directly), `packages.txt` (every package's version) and
`build.log`. A change to any file of this recipe (image/) makes a new image; an image
already built for the same recipe is used as it is. The cache is
$CHARGEPOINT_VM_CACHE, or ~/.cache/chargepoint-vm.

Built as root (CI is root) or, elsewhere, in mmdebstrap's user namespace mode. Needs
mmdebstrap and e2fsprogs on the host, and for arm64 qemu-user-static and binfmt-support
(the packages' scripts run through qemu). docs/vm.md says what a Raspberry Pi's SD card
would need on top of this.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
MIRROR = os.environ.get("CHARGEPOINT_VM_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("CHARGEPOINT_VM_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
#: A fixed date for every file and the file system's own times: the same packages
#: give the same image.
SOURCE_DATE_EPOCH = "1735689600"            # 2025-01-01
DISK_SIZE = "3G"                            # sparse; the image uses about 1 GB
FS_UUID = "6b3c0a52-8f0e-4d7a-9a51-0c7e3e0b1a11"

ARCHES = {
    # Debian's name: its kernel package
    "amd64": "linux-image-amd64",
    "arm64": "linux-image-arm64",
}

#: What the firmware and the tests need in the guest, on top of mmdebstrap's
#: "important" variant. The firmware itself comes from a release (the install guide).
PACKAGES = [
    "systemd", "systemd-sysv", "udev", "dbus", "polkitd", "libpam-systemd",
    "python3", "python3-venv", "sudo", "kmod", "procps", "iproute2", "e2fsprogs",
    "qemu-guest-agent", "gpiod", "initramfs-tools",
]


def recipe_hash(arch: str) -> str:
    digest = hashlib.sha256(f"{arch}\n{SUITE}\n{MIRROR}\n{SECURITY}\n".encode())
    for path in sorted(p for p in HERE.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(HERE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    return Path(os.environ.get("CHARGEPOINT_VM_CACHE")
                or Path.home() / ".cache" / "chargepoint-vm")


def image_dir(arch: str) -> Path:
    return cache_root() / f"debian12-{arch}-{recipe_hash(arch)}"


def _hooks(arch: str) -> list[str]:
    guest = HERE / "guest"
    gpio_sim = HERE / "gpio-sim"
    # Files in place before any package is installed (the initrd is made when the
    # kernel is): image/<arch>/, where the arch has one.
    before = [f"--setup-hook=sync-in {HERE / arch} /"] if (HERE / arch).is_dir() else []
    return before + [
        f"--customize-hook=sync-in {guest} /",
        f"--customize-hook=mkdir -p \"$1/tmp/gpio-sim\"",
        f"--customize-hook=sync-in {gpio_sim} /tmp/gpio-sim",
        "--customize-hook=chroot \"$1\" sh /tmp/gpio-sim/build.sh",
        "--customize-hook=rm -rf \"$1/tmp/gpio-sim\"",
        "--customize-hook=chroot \"$1\" systemctl enable systemd-networkd",
        # No password for root (the console logs in by itself); no machine-id, so
        # every boot of a fresh copy is a first boot with its own.
        "--customize-hook=chroot \"$1\" passwd -d root",
        "--customize-hook=rm -f \"$1/etc/machine-id\" \"$1/var/lib/dbus/machine-id\"",
        "--customize-hook=touch \"$1/etc/machine-id\"",
    ]


def build(arch: str, log=sys.stderr) -> Path:
    """The image for this recipe and arch, built unless the cache has it."""
    if arch not in ARCHES:
        raise SystemExit(f"unknown arch {arch!r}: one of {', '.join(ARCHES)}")
    target = image_dir(arch)
    if (target / "rootfs.img").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "rootfs.img").exists():
            return target
        _build(arch, target, log)
        prune(arch, keep=KEEP, log=log)
    return target


#: Images kept per arch, the newest first: the one just built and the one before it (a
#: checkout of the previous recipe still finds its own). About 1 GB each.
KEEP = 2


def prune(arch: str, keep: int = KEEP, log=sys.stderr) -> list[Path]:
    """Delete the arch's images of older recipes beyond the newest `keep`; the deleted."""
    images = sorted((p for p in cache_root().glob(f"debian12-{arch}-*")
                     if p.is_dir() and (p / "rootfs.img").exists()),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    gone = images[keep:]
    for old in gone:
        shutil.rmtree(old, ignore_errors=True)
        _remove_idle_lock(old.parent / f".{old.name}.lock")
        print(f"removed the older image {old}", file=log, flush=True)
    return gone


def _remove_idle_lock(path: Path) -> None:
    """Delete a pruned image's lock file unless a build of that recipe holds it now."""
    try:
        with open(path, "r+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
    except OSError:                   # not there, or held: a build of it is under way
        pass


#: Debian's arch: the kernel's name for it, and qemu-user's binfmt_misc entry.
MACHINES = {"amd64": ("x86_64", "qemu-x86_64"), "arm64": ("aarch64", "qemu-aarch64")}


def _foreign_arch_problem(arch: str) -> str | None:
    """Why this host cannot run the arch's programs (the packages' scripts, the gpio-sim
    compiler) when it is not its own arch, or None."""
    machine, entry = MACHINES[arch]
    if os.uname().machine == machine:
        return None
    state = Path("/proc/sys/fs/binfmt_misc") / entry
    try:
        enabled = state.read_text().splitlines()[0] == "enabled"
    except OSError:
        enabled = False
    if enabled:
        return None
    return (f"{state} is not enabled, so this {os.uname().machine} host cannot run {arch} "
            f"programs: apt-get install qemu-user-static binfmt-support arch-test; "
            f"mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc (when it is not "
            f"mounted); update-binfmts --enable {entry}")


def _build(arch: str, target: Path, log) -> None:
    for tool in ("mmdebstrap", "mke2fs"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is missing: apt-get install mmdebstrap e2fsprogs")
    problem = _foreign_arch_problem(arch)
    if problem:
        raise SystemExit(problem)
    work = target.with_name(target.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    root = work / "root"
    started = time.monotonic()
    env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, E2FSPROGS_FAKE_TIME=SOURCE_DATE_EPOCH)
    sources = (f"deb {MIRROR} {SUITE} main\n"
               f"deb {MIRROR} {SUITE}-updates main\n"
               f"deb {SECURITY} {SUITE}-security main\n")
    cmd = ["mmdebstrap", "--variant=important", f"--architectures={arch}",
           f"--include={','.join(PACKAGES + [ARCHES[arch]])}",
           "--aptopt=Acquire::Retries \"3\"",
           *_hooks(arch), SUITE, str(root), "-"]
    with open(work / "build.log", "w") as out:
        print(f"building the {arch} image in {work} (a few minutes) ...", file=log, flush=True)
        result = subprocess.run(cmd, input=sources, text=True, stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    if result.returncode:
        tail = (work / "build.log").read_text()[-4000:]
        raise SystemExit(f"mmdebstrap failed (exit {result.returncode}); {work}/build.log:\n{tail}")
    boot = root / "boot"
    vmlinuz = sorted(boot.glob("vmlinuz-*"))[-1]
    initrd = sorted(boot.glob("initrd.img-*"))[-1]
    shutil.copy2(vmlinuz, work / "vmlinuz")
    shutil.copy2(initrd, work / "initrd.img")
    versions = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W",
                               "-f", "${Package} ${Version}\\n"],
                              capture_output=True, text=True, check=True).stdout
    (work / "packages.txt").write_text(versions)
    disk = work / "rootfs.img"
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "root", "-U", FS_UUID,
                    "-E", f"hash_seed={FS_UUID},root_owner=0:0", "-d", str(root),
                    str(disk), DISK_SIZE], check=True, env=env)
    shutil.rmtree(root)
    (work / "build-seconds").write_text(f"{time.monotonic() - started:.0f}\n")
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    print(f"built {target} in {time.monotonic() - started:.0f} s", file=log, flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="amd64", choices=sorted(ARCHES))
    args = parser.parse_args(argv)
    print(build(args.arch))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
