"""Modbus register maps of the supported meters, as data: one table per model.

Each quantity names where it lives (function code, address, register count), how it is
encoded (data type, word order) and the factor that turns the raw number into the unit
of `hal.interfaces.MeterReading` (Wh, W, A, V, Hz). Energy registers are published in kWh
by the makers; their scale factors include the ×1000 to Wh. Sources: the makers' Modbus
protocol manuals (Eastron SDM630/SDM120, ABB B23/B24 "Modbus register map", Carlo Gavazzi
EM24/EM340 communication protocol). Nothing here talks to a bus.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

DataType = Literal["float32", "int32", "uint32", "int64", "uint64", "uint16"]
WordOrder = Literal["high_first", "low_first"]

#: Registers per data type.
REGISTER_COUNT: dict[str, int] = {
    "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4,
}

READ_HOLDING = 3
READ_INPUT = 4

# OCPP 1.6 measurand names.
ENERGY_IMPORT = "Energy.Active.Import.Register"
ENERGY_EXPORT = "Energy.Active.Export.Register"
POWER_IMPORT = "Power.Active.Import"
CURRENT_IMPORT = "Current.Import"
VOLTAGE = "Voltage"
FREQUENCY = "Frequency"


@dataclass(frozen=True)
class Register:
    """One quantity: where it lives and how to turn its raw value into SI units."""

    function: int                 # 3 = read holding registers, 4 = read input registers
    address: int                  # protocol (0-based) address of the first register
    count: int                    # registers the value spans
    dtype: DataType
    word_order: WordOrder = "high_first"
    scale: float = 1.0            # raw value × scale = value in the MeterReading unit
    #: Raw value (the registers joined high word first, read as unsigned) that the maker
    #: documents as "not available", or None when the maker defines none.
    invalid: Optional[int] = None

    def __post_init__(self) -> None:
        if self.function not in (READ_HOLDING, READ_INPUT):
            raise ValueError(f"function code {self.function} is not 3 or 4")
        if self.count != REGISTER_COUNT[self.dtype]:
            raise ValueError(f"{self.dtype} spans {REGISTER_COUNT[self.dtype]} registers, "
                             f"not {self.count}")
        if not 0 <= self.address <= 0xFFFF - self.count + 1:
            raise ValueError(f"address {self.address:#06x} out of range")

    @property
    def end(self) -> int:
        """One past the last register."""
        return self.address + self.count


@dataclass(frozen=True)
class Block:
    """A contiguous run of registers fetched with one request."""

    function: int
    address: int
    count: int


@dataclass(frozen=True)
class RegisterMap:
    """Everything needed to read one meter model."""

    name: str
    energy_import: Register                       # Wh after scaling
    energy_export: Optional[Register] = None      # Wh after scaling
    power: Optional[Register] = None              # total active power, W
    current: tuple[Register, ...] = ()            # A, per phase L1[, L2, L3]
    voltage: tuple[Register, ...] = ()            # V line-to-neutral, per phase
    frequency: Optional[Register] = None          # Hz
    #: Registers the maker defines between two wanted quantities that a single request may
    #: read through (and discard). 0 means only strictly adjacent quantities share a request,
    #: for meters that answer "illegal data address" when a read touches an undefined one.
    max_gap: int = 0
    #: Most registers one request may ask for on this meter.
    max_block: int = 40
    registers: tuple[Register, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regs = [self.energy_import, self.energy_export, self.power, *self.current,
                *self.voltage, self.frequency]
        object.__setattr__(self, "registers", tuple(r for r in regs if r is not None))

    @property
    def measurands(self) -> frozenset[str]:
        """The OCPP measurands this map can supply."""
        found = {ENERGY_IMPORT}
        if self.energy_export is not None:
            found.add(ENERGY_EXPORT)
        if self.power is not None:
            found.add(POWER_IMPORT)
        if self.current:
            found.add(CURRENT_IMPORT)
        if self.voltage:
            found.add(VOLTAGE)
        if self.frequency is not None:
            found.add(FREQUENCY)
        return frozenset(found)

    def blocks(self) -> tuple[Block, ...]:
        """The fewest requests that fetch every quantity, honouring max_gap and max_block."""
        out: list[Block] = []
        for function in (READ_HOLDING, READ_INPUT):
            regs = sorted((r for r in self.registers if r.function == function),
                          key=lambda r: r.address)
            start = end = None
            for reg in regs:
                if start is not None and reg.address - end <= self.max_gap \
                        and max(end, reg.end) - start <= self.max_block:
                    end = max(end, reg.end)
                    continue
                if start is not None:
                    out.append(Block(function, start, end - start))
                start, end = reg.address, reg.end
            if start is not None:
                out.append(Block(function, start, end - start))
        return tuple(out)


def _f32(address: int, scale: float = 1.0) -> Register:
    """Eastron: IEEE-754 float32 input register, high word first."""
    return Register(READ_INPUT, address, 2, "float32", "high_first", scale)


# Eastron SDM630 (three phase). SDM72D-M-2 uses the same addresses.
SDM630 = RegisterMap(
    name="Eastron SDM630",
    voltage=(_f32(0x0000), _f32(0x0002), _f32(0x0004)),
    current=(_f32(0x0006), _f32(0x0008), _f32(0x000A)),
    power=_f32(0x0034),                           # total system power
    frequency=_f32(0x0046),
    energy_import=_f32(0x0048, 1000.0),           # kWh
    energy_export=_f32(0x004A, 1000.0),           # kWh
)

# Eastron SDM120 (single phase). SDM230 uses the same addresses.
SDM120 = RegisterMap(
    name="Eastron SDM120",
    voltage=(_f32(0x0000),),
    current=(_f32(0x0006),),
    power=_f32(0x000C),                           # the only power register on this meter
    frequency=_f32(0x0046),
    energy_import=_f32(0x0048, 1000.0),           # kWh
    energy_export=_f32(0x004A, 1000.0),           # kWh
)


def _abb(address: int, dtype: DataType, scale: float) -> Register:
    """ABB: holding register, big-endian; the maker's "no value" is all ones for unsigned
    types and the largest positive number for signed ones."""
    bits = 16 * REGISTER_COUNT[dtype]
    invalid = (1 << (bits - 1)) - 1 if dtype.startswith("int") else (1 << bits) - 1
    return Register(READ_HOLDING, address, REGISTER_COUNT[dtype], dtype, "high_first", scale,
                    invalid)


# ABB B23 / B24 (the B2x family). 0x5B00-0x5B2C is one defined run (L-L voltages, neutral
# current, per-phase and reactive powers sit in between), so it is read in one request.
ABB_B23 = RegisterMap(
    name="ABB B23",
    voltage=(_abb(0x5B00, "uint32", 0.1), _abb(0x5B02, "uint32", 0.1),
             _abb(0x5B04, "uint32", 0.1)),
    current=(_abb(0x5B0C, "uint32", 0.01), _abb(0x5B0E, "uint32", 0.01),
             _abb(0x5B10, "uint32", 0.01)),
    power=_abb(0x5B14, "int32", 0.01),
    frequency=_abb(0x5B2C, "uint16", 0.01),
    energy_import=_abb(0x5000, "uint64", 10.0),   # 0.01 kWh
    energy_export=_abb(0x5004, "uint64", 10.0),   # 0.01 kWh
    max_gap=24,
    max_block=60,
)


def _cg(address: int, dtype: DataType, scale: float) -> Register:
    """Carlo Gavazzi: input register, 32-bit values with the LOW word first."""
    return Register(READ_INPUT, address, REGISTER_COUNT[dtype], dtype, "low_first", scale)


# Carlo Gavazzi EM340 (the current EM24 generation shares the layout). 0x0000-0x0035 is one
# defined run; requests stay short because some EM24 firmware limits the words per request.
EM340 = RegisterMap(
    name="Carlo Gavazzi EM340",
    voltage=(_cg(0x0000, "int32", 0.1), _cg(0x0002, "int32", 0.1), _cg(0x0004, "int32", 0.1)),
    current=(_cg(0x000C, "int32", 0.001), _cg(0x000E, "int32", 0.001),
             _cg(0x0010, "int32", 0.001)),
    power=_cg(0x0028, "int32", 0.1),              # W sys
    frequency=_cg(0x0033, "uint16", 0.1),
    energy_import=_cg(0x0034, "int32", 100.0),    # kWh (+) TOT, 0.1 kWh
    energy_export=_cg(0x004E, "int32", 100.0),    # kWh (-) TOT, 0.1 kWh
    max_gap=10,
    max_block=20,
)

#: config.toml `model` -> register map.
MODELS: dict[str, RegisterMap] = {
    "sdm630": SDM630,
    "sdm72": SDM630,
    "sdm120": SDM120,
    "sdm230": SDM120,
    "abb_b23": ABB_B23,
    "em340": EM340,
    "em24": EM340,
}

#: Factory-default baud rate per model (all 8 data bits, no parity, 1 stop bit).
DEFAULT_BAUDRATE: dict[str, int] = {
    "sdm630": 9600,
    "sdm72": 9600,
    "sdm120": 2400,
    "sdm230": 2400,
    "abb_b23": 9600,
    "em340": 9600,
    "em24": 9600,
}
