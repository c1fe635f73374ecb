"""gpiozero pins on the lines of any Linux GPIO character device, through lgpio.

gpiozero's lgpio factory opens any `/dev/gpiochipN` but names its pins from a Raspberry
Pi's revision (`/proc/device-tree`, `/proc/cpuinfo`) and refuses a board without one.
`ChipFactory` is that factory with the board described by the chip itself: pin N is the
chip's line N (as `gpioinfo` lists them), so gpiozero's devices, lgpio's line handling and
every backend in `hal/gpio.py` work unchanged on any board. Only the board description is
written here; the pins are gpiozero's own (`LGPIOPin`).
"""
from __future__ import annotations

import re

import lgpio
from gpiozero.pins import BoardInfo, HeaderInfo, PinInfo
from gpiozero.pins.lgpio import LGPIOFactory

#: `/dev/gpiochipN`: lgpio opens a chip by its number N.
CHIP_PATH = re.compile(r"/dev/gpiochip(\d+)")


def chip_number(path: str) -> int:
    """N of `/dev/gpiochipN`; ValueError for any other path."""
    match = CHIP_PATH.fullmatch(path)
    if match is None:
        raise ValueError(f"expected a GPIO character device such as /dev/gpiochip0, "
                         f"got {path!r}")
    return int(match.group(1))


def chip_board(label: str, lines: int) -> BoardInfo:
    """A board of one header whose pin N (also `GPION`, `LINEN`) is the chip's line N."""
    pins = {}
    for line in range(lines):
        name = f"GPIO{line}"
        pins[line + 1] = PinInfo(number=line + 1, name=name,
                                 names=frozenset({line, str(line), name, f"LINE{line}"}),
                                 pull="", row=line + 1, col=1,
                                 interfaces=frozenset({"gpio"}))
    header = HeaderInfo(name=label, rows=max(lines, 1), columns=1, pins=pins)
    return BoardInfo(revision="0", model=label, pcb_revision="", released="", soc=label,
                     manufacturer="", memory=0, storage="", usb=0, usb3=0, ethernet=0,
                     eth_speed=0, wifi=False, bluetooth=False, csi=0, dsi=0,
                     headers={label: header}, board="")


class ChipFactory(LGPIOFactory):
    """gpiozero's lgpio pin factory on `path`, numbering pins as the chip's lines."""

    def __init__(self, path: str):
        number = chip_number(path)
        super().__init__(chip=number)            # opens the chip: lgpio.error if it cannot
        self.path = path
        try:
            _, lines, name, label = lgpio.gpio_get_chip_info(self._handle)
        except Exception:
            self.close()
            raise
        self._info = chip_board(f"{path} ({label or name})", lines)

    def _get_revision(self):                     # no Raspberry Pi revision is looked for
        return 0

    def _get_board_info(self):
        return self._info
