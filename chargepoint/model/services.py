"""The charger's services, built once in a fixed order, each given what it uses.

`Services` is the one type a handler (chargepoint/handlers/) or the station receives:
reading its fields answers "what may this code touch?". `build_services` is the only
place that wires them; the order below is the order of their dependencies (each service
takes only services built before it), so nothing is registered later or looked up by
name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from chargepoint import __version__
from chargepoint.actions import Effects
from chargepoint.model.authorization import Authorization
from chargepoint.model.availability import Availability
from chargepoint.model.boot import Boot
from chargepoint.model.certificates import Certificates
from chargepoint.model.charger_certificate import ChargerCertificate
from chargepoint.model.clock import StationClock
from chargepoint.model.connector import ConnectorInfo, Connectors
from chargepoint.model.delivery import Delivery
from chargepoint.model.diagnostics import Diagnostics
from chargepoint.model.firmware import Firmware, RunningRelease
from chargepoint.model.link import CallSender, Link
from chargepoint.model.local_list import LocalList
from chargepoint.model.locks import Locks
from chargepoint.model.log_upload import LogUpload
from chargepoint.model.meter_reads import MeterReads
from chargepoint.model.metering import Metering
from chargepoint.model.outbox import Outbox
from chargepoint.model.plug_wait import PlugWait
from chargepoint.model.reservations import Reservations
from chargepoint.model.security_events import SecurityEvents
from chargepoint.model.security_profile import SecurityProfile
from chargepoint.model.sessions import Sessions
from chargepoint.model.smart_charging import SmartCharging
from chargepoint.model.status import ConnectorView
from chargepoint.model.status_reports import StatusReports
from chargepoint.model.storage_fault import StorageRepairs
from chargepoint.model.timekeeping import TimeKeeping
from chargepoint.model.transactions import Transactions
from chargepoint.model.write_faults import WriteFaults
from chargepoint.ocpp_keys import OcppKeys
from chargepoint.store import Store
from chargepoint.timers import Timers


@dataclass(frozen=True)
class Services:
    """Everything the charging logic is made of. Loop thread only."""

    # leaves: configuration, storage, time, the actions of the turn
    keys: OcppKeys
    store: Store
    clock: StationClock
    timers: Timers
    effects: Effects
    # the CSMS and the hardware
    link: Link
    connectors: Connectors
    meter_reads: MeterReads
    locks: Locks
    write_faults: WriteFaults
    storage_repairs: StorageRepairs
    # the domain
    availability: Availability
    reservations: Reservations
    smart: SmartCharging
    plug_wait: PlugWait
    view: ConnectorView
    status_reports: StatusReports
    local_list: LocalList
    authorization: Authorization
    outbox: Outbox
    transactions: Transactions
    security_events: SecurityEvents
    certificates: Certificates
    charger_certificate: ChargerCertificate
    security_profile: SecurityProfile
    metering: Metering
    timekeeping: TimeKeeping
    sessions: Sessions
    delivery: Delivery
    boot: Boot
    firmware: Firmware
    diagnostics: Diagnostics
    log_upload: LogUpload


def build_services(keys: OcppKeys, store: Store, clock: StationClock, sender: CallSender,
                   connectors: Iterable[ConnectorInfo], boot_payload: dict,
                   response_timeout_s: float, charge_point_id: str = "CP-1",
                   configured_profile: int = 0, configured_client_certificate: Optional[str] = None,
                   ca_configured: bool = False, security_events_mode: str = "auto",
                   release: Optional[RunningRelease] = None,
                   revocation_check: str = "soft") -> Services:
    """Wire the services, each with what it uses, in dependency order. `release`: the
    release this process runs (default: this package's version, not on trial);
    `revocation_check`: [releases] revocation_check."""
    timers = Timers()
    effects = Effects()
    link = Link(sender)
    outlets = Connectors(connectors)
    meter_reads = MeterReads(effects, timers, clock)
    locks = Locks(effects)
    write_faults = WriteFaults(store, timers, clock, outlets)
    storage_repairs = StorageRepairs(store, timers, clock, outlets)
    availability = Availability(store, outlets, write_faults)
    reservations = Reservations(store, clock, timers, outlets, availability)
    outbox = Outbox(store)
    diagnostics = Diagnostics(clock, timers, effects, link, charge_point_id)
    log_upload = LogUpload(clock, timers, effects, link, charge_point_id)
    smart = SmartCharging(keys, store, clock, timers, outlets, response_timeout_s)
    plug_wait = PlugWait(keys, timers, clock, outlets, reservations)
    view = ConnectorView(availability, reservations, smart, plug_wait)
    status_reports = StatusReports(link, clock, timers, outlets, view, storage_repairs)
    local_list = LocalList(keys, store)
    authorization = Authorization(keys, store, clock, link, local_list, write_faults)
    transactions = Transactions(store, clock, outbox)
    security_events = SecurityEvents(store, clock, outbox, transactions, keys,
                                     security_events_mode)
    certificates = Certificates(keys, store, clock, security_events)
    certificates.configured_root = ca_configured
    charger_certificate = ChargerCertificate(keys, store, clock, timers, effects, link,
                                             security_events, charge_point_id,
                                             configured_client_certificate)
    firmware = Firmware(store, clock, timers, effects, link, outlets, availability, outbox,
                        security_events, certificates, release or RunningRelease(__version__),
                        revocation_check)
    security_profile = SecurityProfile(keys, store, effects, certificates, charger_certificate,
                                       security_events, configured_profile)
    metering = Metering(keys, clock, timers, store, outlets, view, meter_reads, transactions,
                        outbox, link)
    timekeeping = TimeKeeping(clock, metering, reservations, smart, security_events, firmware)
    sessions = Sessions(keys, clock, outlets, authorization, availability, reservations,
                        plug_wait, smart, metering, transactions, meter_reads, locks,
                        write_faults, firmware)
    delivery = Delivery(keys, clock, timers, link, outbox, transactions, authorization,
                        sessions, write_faults)
    boot = Boot(link, keys, clock, timers, boot_payload, status_reports, timekeeping,
                (firmware, diagnostics, log_upload))
    return Services(keys=keys, store=store, clock=clock, timers=timers, effects=effects,
                    link=link, connectors=outlets, meter_reads=meter_reads, locks=locks,
                    write_faults=write_faults, storage_repairs=storage_repairs,
                    availability=availability, reservations=reservations, smart=smart,
                    plug_wait=plug_wait, view=view, status_reports=status_reports,
                    local_list=local_list, authorization=authorization, outbox=outbox,
                    transactions=transactions, security_events=security_events,
                    certificates=certificates, charger_certificate=charger_certificate,
                    security_profile=security_profile, metering=metering, timekeeping=timekeeping,
                    sessions=sessions, delivery=delivery, boot=boot, firmware=firmware,
                    diagnostics=diagnostics, log_upload=log_upload)
