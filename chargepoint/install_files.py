"""The files a service install needs besides the program, shipped inside the package.

A wheel installed into /opt/chargepoint has no checkout beside it, so the example
configuration, the unit, the sysusers, polkit and udev files, the journald
drop-in travel in `chargepoint/data/` (identical to `config.toml` and `systemd/*` of the
repository; tests/test_packaging.py keeps them so); the release guard is the package's own
`release_guard.py`, copied out under another name. `chargepoint
install-files DEST` copies them out for the steps of systemd/README-install.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from chargepoint import durable


@dataclass(frozen=True)
class ShippedFile:
    name: str
    """Its name in chargepoint/data/ and in the directory it is copied to."""
    target: str
    """Where the install guide puts it."""
    source: str = ""
    """Its path in the package when not data/<name>."""


SHIPPED = (
    ShippedFile("config.toml", "/etc/chargepoint/config.toml"),
    ShippedFile("chargepoint.service", "/etc/systemd/system/chargepoint.service"),
    ShippedFile("chargepoint.sysusers.conf", "/etc/sysusers.d/chargepoint.conf"),
    ShippedFile("50-chargepoint-reboot.rules", "/etc/polkit-1/rules.d/50-chargepoint-reboot.rules"),
    ShippedFile("70-chargepoint-devices.rules", "/etc/udev/rules.d/70-chargepoint-devices.rules"),
    ShippedFile("chargepoint.journald.conf", "/etc/systemd/journald.conf.d/chargepoint.conf"),
    # chargepoint/release_guard.py: outside every release, so that it runs when a release
    # cannot (the unit's ExecStartPre=, an operator's rollback by hand).
    ShippedFile("release-guard.py", "/opt/chargepoint/release-guard.py", "release_guard.py"),
)


class InstallFilesError(Exception):
    """Nothing was written; the message says why."""


def shipped_bytes(name: str) -> bytes:
    item = next((i for i in SHIPPED if i.name == name), None)
    path = item.source if item is not None and item.source else f"data/{name}"
    return resources.files("chargepoint").joinpath(path).read_bytes()


def install_files(dest: str | os.PathLike, force: bool = False) -> list[tuple[Path, str]]:
    """Copy every shipped file into `dest` (created if missing); (path, what happened).

    A file already there with other content (an edited copy) is kept, and then
    nothing at all is written, unless `force`: losing an operator's edits by
    accident is worse than asking again.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise InstallFilesError(f"{dest} exists and is not a directory")
    plan = []
    for item in SHIPPED:
        content = shipped_bytes(item.name)
        path = dest / item.name
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            current = None
        except OSError as exc:
            raise InstallFilesError(f"cannot read {path}: {exc.strerror}") from None
        state = "written" if current is None else "unchanged" if current == content \
            else "replaced"
        plan.append((path, state, content))
    differing = [str(path) for path, state, _ in plan if state == "replaced"]
    if differing and not force:
        raise InstallFilesError(
            "these files exist with other content and are kept (nothing written; "
            "--force replaces them): " + ", ".join(differing))
    try:
        dest.mkdir(mode=0o755, parents=True, exist_ok=True)
        for path, state, content in plan:
            if state != "unchanged":
                _write_atomically(path, content)
    except OSError as exc:
        raise InstallFilesError(f"cannot write into {dest}: {exc.strerror or exc}") from None
    return [(path, state) for path, state, _ in plan]


def _write_atomically(path: Path, content: bytes) -> None:
    """Whole or not at all: a half-written unit file would be worse than none."""
    durable.write_whole(path, content, mode=0o644)
