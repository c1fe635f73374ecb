"""The bundled local Central System (OCPP 1.6-J) used by `chargepoint demo` and the tests.

Needs the optional dependency ``websockets`` (``pip install chargepoint[csms]``).
"""
from chargepoint.csms.server import (
    CP_ACTIONS,
    NO_RESPONSE,
    Handshake,
    LocalCsms,
    LogEntry,
    Received,
    SchemaViolation,
    UnknownErrorCode,
    Violation,
    format_summary,
    read_log,
)

__all__ = [
    "CP_ACTIONS",
    "NO_RESPONSE",
    "Handshake",
    "LocalCsms",
    "LogEntry",
    "Received",
    "SchemaViolation",
    "UnknownErrorCode",
    "Violation",
    "format_summary",
    "read_log",
]
