"""Energy meters on an RS-485 Modbus RTU bus (Eastron SDM, ABB B2x, Carlo Gavazzi EM).

All pymodbus use lives in this module: the library is pinned (3.16.1) because its
keyword names change within 3.x, so a pymodbus upgrade touches this file only.
Several meters may share one port; they then share one `ModbusBus`, whose lock keeps
each meter's multi-request read together on the wire.
"""
from __future__ import annotations

import logging
import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal, Optional

from pymodbus.client import ModbusSerialClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from hal.interfaces import Clock, EnergyMeter, MeterReading, MeterUnavailable
from hal.meters.register_maps import (DEFAULT_BAUDRATE, MODELS, READ_HOLDING, Register,
                                      RegisterMap)
from hal.settings import SettingsError

log = logging.getLogger(__name__)

Model = Literal["sdm630", "sdm72", "sdm120", "sdm230", "abb_b23", "em340", "em24"]

BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)

#: How far (Wh) the import register may read below the highest value seen before the
#: reading is refused: absorbs float32 rounding, not a meter that was reset or swapped.
ENERGY_BACKWARDS_TOLERANCE_WH = 10.0

#: Consecutive failed requests without a single byte back after which the port is
#: reopened, in case a USB adapter came back under the same name without the old
#: handle reporting an error.
REOPEN_AFTER_SILENT = 3

EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "server device failure", 5: "acknowledge", 6: "server device busy",
    10: "gateway path unavailable", 11: "gateway target failed to respond",
}

_DATATYPES = {
    "float32": ModbusSerialClient.DATATYPE.FLOAT32,
    "int32": ModbusSerialClient.DATATYPE.INT32,
    "uint32": ModbusSerialClient.DATATYPE.UINT32,
    "int64": ModbusSerialClient.DATATYPE.INT64,
    "uint64": ModbusSerialClient.DATATYPE.UINT64,
    "uint16": ModbusSerialClient.DATATYPE.UINT16,
}


@dataclass
class ModbusMeterSettings:
    """`[connectors.meter]` with `type = "modbus"`."""

    model: Model
    port: str = "/dev/ttyAMA0"
    baudrate: Optional[int] = None          # None: the model's factory default
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    address: int = 1
    timeout_s: float = 0.5
    retries: int = 2

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model: unknown meter model {self.model!r} "
                             f"(choose from: {', '.join(MODELS)})")
        if not self.port:
            raise ValueError("port: must name a serial device, e.g. /dev/ttyUSB0")
        if self.baudrate is not None and self.baudrate not in BAUDRATES:
            raise ValueError(f"baudrate: {self.baudrate} is not one of "
                             f"{', '.join(map(str, BAUDRATES))}")
        if self.parity not in ("N", "E", "O"):
            raise ValueError(f"parity: expected 'N', 'E' or 'O', got {self.parity!r}")
        if self.stopbits not in (1, 2):
            raise ValueError(f"stopbits: expected 1 or 2, got {self.stopbits!r}")
        if not 1 <= self.address <= 247:
            raise ValueError(f"address: {self.address} is outside 1..247")
        if not 0 < self.timeout_s <= 10:
            raise ValueError(f"timeout_s: {self.timeout_s} is outside (0, 10] seconds")
        if not 0 <= self.retries <= 10:
            raise ValueError(f"retries: {self.retries} is outside 0..10")

    @property
    def effective_baudrate(self) -> int:
        return self.baudrate if self.baudrate is not None else DEFAULT_BAUDRATE[self.model]

    def build(self, ctx) -> "ModbusMeter":
        bus = ctx.shared_object(
            f"modbus:{self.port}",
            lambda: ModbusBus(self.port, self.effective_baudrate, self.parity, self.stopbits))
        if not isinstance(bus, ModbusBus):
            raise SettingsError("port", f"{self.port} is already used by another kind of device")
        bus.attach(self)
        return ModbusMeter(MODELS[self.model], bus, self.address, self.timeout_s,
                           self.retries, ctx.clock)


class ModbusBus:
    """One serial port and the meters on it: one pymodbus client, one request at a time."""

    def __init__(self, port: str, baudrate: int, parity: str, stopbits: int):
        self.port = port
        self.baudrate = baudrate
        self.parity = parity
        self.stopbits = stopbits
        self._lock = threading.RLock()
        self._addresses: set[int] = set()
        self._received = b""
        self._silent_streak = 0
        # Retries are ours (per meter, and a Modbus exception is not worth retrying);
        # the timeout is set per request because meters on one port may differ.
        self._client = ModbusSerialClient(
            port, framer=FramerType.RTU, baudrate=baudrate, bytesize=8, parity=parity,
            stopbits=stopbits, timeout=1.0, retries=0, trace_packet=self._trace_packet)

    def attach(self, settings: ModbusMeterSettings) -> None:
        """Register a meter; its line settings must match the bus's."""
        with self._lock:
            for key, ours, theirs in (("baudrate", self.baudrate, settings.effective_baudrate),
                                      ("parity", self.parity, settings.parity),
                                      ("stopbits", self.stopbits, settings.stopbits)):
                if ours != theirs:
                    raise SettingsError(
                        key, f"{theirs!r} differs from {ours!r} used by another meter on "
                             f"{self.port}; meters sharing a port must agree on baudrate, "
                             f"parity and stopbits")
            if settings.address in self._addresses:
                raise SettingsError(
                    "address", f"another meter on {self.port} already uses address "
                               f"{settings.address}")
            self._addresses.add(settings.address)

    def detach(self, address: int) -> None:
        """A meter is done; the port closes with the last one."""
        with self._lock:
            self._addresses.discard(address)
            if not self._addresses:
                self._client.close()

    def close(self) -> None:
        with self._lock:
            self._client.close()

    @contextmanager
    def session(self) -> Iterator[None]:
        """Hold the bus for a series of requests (one meter's coherent read)."""
        with self._lock:
            yield

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._received = data
        return data

    def read_registers(self, device_id: int, function: int, address: int, count: int,
                       timeout_s: float, retries: int) -> list[int]:
        """Read `count` registers; MeterUnavailable when no valid answer came."""
        where = f"(meter {device_id} on {self.port})"
        with self._lock:
            problem = "no attempt made"
            for _ in range(retries + 1):
                if not self._client.connected and not self._client.connect():
                    raise MeterUnavailable(f"cannot open serial port {where}")
                self._client.comm_params.timeout_connect = timeout_s
                self._received = b""
                try:
                    if function == READ_HOLDING:
                        response = self._client.read_holding_registers(
                            address, count=count, device_id=device_id)
                    else:
                        response = self._client.read_input_registers(
                            address, count=count, device_id=device_id)
                except ConnectionException:
                    # pymodbus closed the port after an OS error: unplugged adapter.
                    self._client.close()
                    raise MeterUnavailable(f"serial port failed, unplugged? {where}") from None
                except ModbusException:
                    # No (valid) answer in time: pymodbus folds silence, bad CRC and
                    # frames from another address into this; what we saw tells them apart.
                    problem = self._describe_no_answer(timeout_s)
                    continue
                except Exception as exc:  # noqa: BLE001 - a library bug must not kill the poll
                    log.warning("unexpected error from the Modbus client on %s", self.port,
                                exc_info=True)
                    self._client.close()
                    problem = f"client error {type(exc).__name__}: {exc}"
                    continue
                if response.isError():
                    code = getattr(response, "exception_code", 0)
                    self._silent_streak = 0
                    raise MeterUnavailable(
                        f"Modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')}) "
                        f"reading {count} registers at {address:#06x} {where}")
                registers = list(getattr(response, "registers", None) or [])
                if response.function_code != function or len(registers) != count:
                    problem = (f"answer to function {response.function_code} with "
                               f"{len(registers)} registers, expected {count}")
                    continue
                self._silent_streak = 0
                return registers
            raise MeterUnavailable(f"{problem} after {retries + 1} attempt(s) {where}")

    def _describe_no_answer(self, timeout_s: float) -> str:
        if not self._received:
            self._silent_streak += 1
            if self._silent_streak >= REOPEN_AFTER_SILENT:
                self._client.close()
                self._silent_streak = 0
            return f"no answer within {timeout_s:g} s"
        self._silent_streak = 0
        sample = self._received[:12].hex(" ")
        more = "..." if len(self._received) > 12 else ""
        return f"no valid frame (bad CRC or garbage: {sample}{more})"


class ModbusMeter(EnergyMeter):
    """One meter on a `ModbusBus`, decoded with its model's register map."""

    def __init__(self, register_map: RegisterMap, bus: ModbusBus, address: int,
                 timeout_s: float, retries: int, clock: Clock):
        self.register_map = register_map
        self.measurands = register_map.measurands
        self._bus = bus
        self._address = address
        self._timeout_s = timeout_s
        self._retries = retries
        self._clock = clock
        self._blocks = register_map.blocks()
        self._highest_energy_wh: Optional[float] = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<ModbusMeter {self.register_map.name} {self._address}@{self._bus.port}>"

    def read(self) -> MeterReading:
        words: dict[tuple[int, int], int] = {}
        with self._bus.session():
            for block in self._blocks:
                regs = self._bus.read_registers(self._address, block.function, block.address,
                                                block.count, self._timeout_s, self._retries)
                for offset, word in enumerate(regs):
                    words[(block.function, block.address + offset)] = word
        return self._decode(words)

    def _decode(self, words: dict[tuple[int, int], int]) -> MeterReading:
        m = self.register_map
        where = f"(meter {self._address} on {self._bus.port})"
        energy = _value(m.energy_import, words)
        if energy is None or energy < 0:
            raw = _raw(m.energy_import, words)
            raise MeterUnavailable(f"import energy register invalid (raw {raw:#x}) {where}")
        if self._highest_energy_wh is not None \
                and energy < self._highest_energy_wh - ENERGY_BACKWARDS_TOLERANCE_WH:
            raise MeterUnavailable(
                f"energy went backwards {self._highest_energy_wh:.0f} -> {energy:.0f} Wh "
                f"{where}")
        self._highest_energy_wh = max(energy, self._highest_energy_wh or 0.0)

        def phases(regs: tuple[Register, ...]) -> Optional[tuple[Optional[float], ...]]:
            return tuple(_value(r, words) for r in regs) if regs else None

        def optional(reg: Optional[Register]) -> Optional[float]:
            return _value(reg, words) if reg is not None else None

        return MeterReading(
            time=self._clock(),
            energy_import_wh=energy,
            power_w=optional(m.power),
            current_a=phases(m.current),
            voltage_v=phases(m.voltage),
            frequency_hz=optional(m.frequency),
            energy_export_wh=optional(m.energy_export),
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus.detach(self._address)


def _words(reg: Register, words: dict[tuple[int, int], int]) -> list[int]:
    return [words[(reg.function, reg.address + i)] for i in range(reg.count)]


def _raw(reg: Register, words: dict[tuple[int, int], int]) -> int:
    """The registers as one unsigned number, high word first (for sentinels and messages)."""
    regs = _words(reg, words)
    if reg.word_order == "low_first":
        regs.reverse()
    value = 0
    for word in regs:
        value = (value << 16) | word
    return value


def _value(reg: Register, words: dict[tuple[int, int], int]) -> Optional[float]:
    """The scaled value, or None for the maker's "not available" pattern, NaN or infinity."""
    if reg.invalid is not None and _raw(reg, words) == reg.invalid:
        return None
    number = ModbusSerialClient.convert_from_registers(
        _words(reg, words), _DATATYPES[reg.dtype],
        word_order="little" if reg.word_order == "low_first" else "big")
    if reg.dtype == "float32":
        if not math.isfinite(number):
            return None
        # A float32 carries ~7 significant digits; drop the binary noise (230.1, not 230.10000610).
        return round(float(f"{number:.7g}") * reg.scale, 6)
    return round(number * reg.scale, 6)
