"""A GPIO chip the firmware's user may not open until udev lets its group in: gpiozero's mock
pins behind a file standing for `/dev/gpiochipN` (mode 0600: closed; 0660: open). Loaded by
name as gpiozero loads any pin factory (`GPIOZERO_PIN_FACTORY=closedchip`, the entry point
`install` writes), so the firmware's own code meets it as it would meet lgpio's."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from gpiozero.pins.mock import MockFactory

#: The file standing for the chip.
CHIP_ENV = "CHARGEPOINT_TEST_GPIOCHIP"


class ClosedChipFactory(MockFactory):
    def __init__(self):
        chip = os.environ[CHIP_ENV]
        if os.stat(chip).st_mode & 0o060 != 0o060:       # root opens anything: the mode says
            raise PermissionError(errno.EACCES, "Permission denied", chip)
        super().__init__()


def install(directory: Path) -> Path:
    """Make `closedchip` a gpiozero pin factory for a Python with `directory` on its path."""
    info = directory / "closedchip-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: closedchip\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[gpiozero_pin_factories]\nclosedchip = tests.closed_chip:ClosedChipFactory\n")
    return directory


def make_chip(path: Path, mode: int = 0o600) -> Path:
    path.write_text("")
    path.chmod(mode)
    return path
