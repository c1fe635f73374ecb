"""Builds the configured hardware, like gpiozero's pin factories hide the GPIO chip.

`config.toml` names a backend per device with `type = "..."`; the table below maps
each (device kind, type) to the dataclass holding that backend's settings. Each
settings class has `build(ctx)` returning the device, so this module imports no
bus library itself and a desktop never imports gpiozero's native backends.
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from hal.interfaces import (Clock, Contactor, ConnectorLock, EnergyMeter, EVInterface, Emit,
                            IdReader, Indicator, monotonic_clock)
from hal.settings import SettingsError, parse_table

#: (kind, type) -> "module:SettingsClass". "none" means the device is not fitted.
BACKENDS: dict[str, dict[str, str]] = {
    "meter": {
        "sim": "hal.sim:SimMeterSettings",
        "modbus": "hal.meters.modbus:ModbusMeterSettings",
        "s0": "hal.meters.s0:S0MeterSettings",
        "openevse": "hal.openevse:OpenEvseMeterSettings",
    },
    "contactor": {
        "sim": "hal.sim:SimContactorSettings",
        "gpio": "hal.gpio:GpioContactorSettings",
        "openevse": "hal.openevse:OpenEvseRelaySettings",
    },
    "lock": {
        "none": "",
        "sim": "hal.sim:SimLockSettings",
        "gpio": "hal.gpio:GpioLockSettings",
    },
    "pilot": {
        "sim": "hal.sim:SimPilotSettings",
        "pwm_adc": "hal.pilot_pwm:PwmAdcPilotSettings",
        "openevse": "hal.openevse:OpenEvseSettings",
    },
    "indicator": {
        "none": "",
        "sim": "hal.sim:SimIndicatorSettings",
        "gpio": "hal.gpio:GpioIndicatorSettings",
    },
    "reader": {
        "none": "",
        "sim": "hal.sim:SimReaderSettings",
        "rdm6300": "hal.rfid.rdm6300:Rdm6300Settings",
        "pn532": "hal.rfid.pn532:Pn532Settings",
    },
}


def settings_class(kind: str, type_name: str, key: str) -> Optional[type]:
    """The settings dataclass for a backend, None for "none"; SettingsError if unknown."""
    choices = BACKENDS[kind]
    if type_name not in choices:
        raise SettingsError(key, f"unknown {kind} type {type_name!r} "
                                 f"(choose from: {', '.join(choices)})")
    target = choices[type_name]
    if not target:
        return None
    module_name, _, cls_name = target.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def parse_device(kind: str, table: Any, where: str) -> Any:
    """Parse one `[...<kind>]` table: its `type` picks the backend's settings class."""
    if not isinstance(table, dict):
        raise SettingsError(where, "expected a table with a 'type' key")
    type_name = table.get("type")
    if not isinstance(type_name, str):
        raise SettingsError(f"{where}.type", "required key is missing"
                            if type_name is None else f"expected a string, got {type_name!r}")
    cls = settings_class(kind, type_name, f"{where}.type")
    if cls is None:
        extra = sorted(set(table) - {"type"})
        if extra:
            raise SettingsError(f"{where}.{extra[0]}", f"unknown key for type {type_name!r}")
        return None
    rest = {k: v for k, v in table.items() if k != "type"}
    return parse_table(cls, rest, where)


@dataclass
class BuildContext:
    """What a backend's `build` may use: its connector, where to post events, the
    clock, and objects shared between devices (a Modbus bus, the simulated charger)."""

    connector_id: int
    emit: Emit
    clock: Clock = monotonic_clock
    shared: dict[str, Any] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    #: Connector facts a backend may need (phases, nominal voltage, max current).
    phases: int = 3
    nominal_voltage_v: float = 230.0
    max_current_a: float = 32.0
    #: `[gpio]` (hal.gpio_settings.GpioSettings): the pin factory; None: the defaults.
    gpio: Any = None

    def shared_object(self, key: str, factory):
        """One object per key across all devices (e.g. one serial bus per port)."""
        with self.lock:
            if key not in self.shared:
                self.shared[key] = factory()
            return self.shared[key]


@dataclass
class ConnectorHardware:
    connector_id: int
    meter: EnergyMeter
    contactor: Contactor
    pilot: EVInterface
    lock: Optional[ConnectorLock] = None
    indicator: Optional[Indicator] = None


@dataclass
class Hardware:
    """Everything built from the configuration, ready to start."""

    connectors: dict[int, ConnectorHardware]
    readers: list[IdReader]
    shared: dict[str, Any]

    def start(self) -> None:
        for conn in self.connectors.values():
            conn.pilot.start()
        for reader in self.readers:
            reader.start()
        for obj in self.shared.values():
            start = getattr(obj, "start", None)
            if callable(start):
                start()

    def close(self) -> None:
        """Fail safe: open every contactor and withdraw the pilot, then release."""
        for conn in self.connectors.values():
            for action in (lambda: conn.contactor.set_closed(False),
                           lambda: conn.pilot.set_max_current(None)):
                try:
                    action()
                except Exception:
                    pass
        devices: list[Any] = list(self.readers)
        for conn in self.connectors.values():
            devices += [conn.pilot, conn.contactor, conn.lock, conn.indicator, conn.meter]
        devices += list(self.shared.values())
        for dev in devices:
            close = getattr(dev, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    pass

    @property
    def simulator(self):
        """The simulated charger when any device is simulated, else None."""
        return self.shared.get("sim")


def build_hardware(connectors: list, readers: list, emit: Emit,
                   clock: Clock = monotonic_clock, gpio: Any = None) -> Hardware:
    """Build devices from parsed settings.

    `connectors` holds objects with `id`, `phases`, `nominal_voltage_v`,
    `max_current_a` and device settings `meter`, `contactor`, `pilot`, `lock`,
    `indicator` (None where not fitted); `readers` holds reader settings.
    """
    shared: dict[str, Any] = {}
    lock = threading.RLock()
    built: dict[int, ConnectorHardware] = {}
    for c in connectors:
        ctx = BuildContext(connector_id=c.id, emit=emit, clock=clock, shared=shared, lock=lock,
                           phases=c.phases, nominal_voltage_v=c.nominal_voltage_v,
                           max_current_a=c.max_current_a, gpio=gpio)
        devices = {}
        for kind in ("meter", "contactor", "pilot", "lock", "indicator"):
            device_settings = getattr(c, kind)
            try:
                devices[kind] = device_settings.build(ctx) if device_settings is not None else None
            except SettingsError as exc:
                raise SettingsError(f"connectors[id={c.id}].{kind}.{exc.key}", exc.reason) \
                    from None
        built[c.id] = ConnectorHardware(connector_id=c.id, **devices)
    ctx0 = BuildContext(connector_id=0, emit=emit, clock=clock, shared=shared, lock=lock,
                        gpio=gpio)
    built_readers = [r.build(ctx0) for r in readers if r is not None]
    return Hardware(connectors=built, readers=built_readers, shared=shared)
