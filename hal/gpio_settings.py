"""`[gpio]`: which pin factory drives the GPIO pins, how pins are numbered, and why
a factory cannot be loaded.

Kept apart from `hal/gpio.py` so that reading a configuration loads neither gpiozero nor
lgpio. The factories are chosen as gpiozero chooses its own, by name; the environment's
`GPIOZERO_PIN_FACTORY`, when set, wins as it does in gpiozero (the tests' mock pins).
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import re
from dataclasses import dataclass
from typing import Iterator, Literal

#: A Raspberry Pi's header GPIO, by BCM number.
BCM_LINES = 28
#: A GPIO chip of another board numbers its lines from 0; no chip has more lines than this.
CHIP_LINES = 1024


class GpioUnavailable(RuntimeError):
    """No pin factory can drive the GPIO here: the message says why and what fixes it."""


class GpioChipUnavailable(GpioUnavailable):
    """The GPIO chip is there but cannot be opened now (this user may not, or it is not
    plugged in yet): an operator or udev can fix it while the firmware runs, so the
    devices on it report a fault and are tried again (hal/gpio_reopen.py)."""

    def __init__(self, message: str, chip: str, fix: str):
        super().__init__(message)
        self.chip = chip
        #: The fix in a few words (StatusNotification.vendorErrorCode, CiString50).
        self.fix = fix


#: What fixes a chip this user may not open, or one that is not there.
FIX_PERMISSION = "udev rule: GROUP=gpio MODE=0660"
FIX_MISSING = "GPIO chip not there"


def fix_for(exc: OSError) -> str:
    """The fix for a device that could not be opened, in a few words."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return FIX_PERMISSION
    if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return FIX_MISSING
    return (exc.strerror or type(exc).__name__)[:50]


_lines: contextvars.ContextVar[int] = contextvars.ContextVar("gpio_lines", default=BCM_LINES)


@dataclass
class GpioSettings:
    """`[gpio]`: the pin factory, as gpiozero names its own."""

    #: "auto": gpiozero's own choice (lgpio on a Raspberry Pi, pins by BCM number);
    #: "lgpio-chip": the lines of `chip` on any Linux board, pin N being line N.
    pin_factory: Literal["auto", "lgpio-chip"] = "auto"
    #: The GPIO character device "lgpio-chip" drives.
    chip: str = "/dev/gpiochip0"
    #: A GPIO device that cannot be opened (a chip this user may not open) is tried again
    #: this often, its connector Faulted meanwhile.
    retry_s: float = 10.0

    def __post_init__(self):
        if not re.fullmatch(r"/dev/gpiochip\d+", self.chip):
            raise ValueError(f"chip: expected a GPIO character device such as "
                             f"/dev/gpiochip0, got {self.chip!r}")
        if not 1 <= self.retry_s <= 3600:
            raise ValueError(f"retry_s: must be 1 to 3600 seconds, got {self.retry_s}")

    @property
    def lines(self) -> int:
        """How many pin numbers this factory knows: BCM 0..27 on a Pi, else a chip's."""
        return BCM_LINES if self.pin_factory == "auto" else CHIP_LINES


def max_pin() -> int:
    """The highest pin number the `[gpio]` being read allows."""
    return _lines.get() - 1


@contextlib.contextmanager
def numbering(settings: GpioSettings) -> Iterator[None]:
    """Pin numbers in device tables read meanwhile are checked as `settings` numbers them."""
    token = _lines.set(settings.lines)
    try:
        yield
    finally:
        _lines.reset(token)
