"""Where log lines go and how they look: the journal's format under systemd, else a
date, a time and a level on every line.

journald stamps each line itself, so under systemd a line carries only its syslog
priority (`<4>`, for `journalctl -p warning`). Anywhere else (a terminal, a file, a
container's log) a line names its date as well as its time: a charger's log is read
days later. Libraries that log each byte they move are held at WARNING.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Optional, TextIO

#: Date and time of a line outside the journal (local time, like the journal shows it).
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LINE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
#: Loggers kept at WARNING or above whatever the level: pymodbus logs every frame of the
#: meter bus (hex dumps several times a second) at DEBUG and its retries at INFO.
QUIET_LIBRARIES = ("pymodbus",)


class JournalFormatter(logging.Formatter):
    """`<priority>logger: message`: journald stores the priority and adds the time. It
    reads each line as an entry of its own, so every line of a traceback carries it."""

    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{self.PRIORITY.get(record.levelno, 6)}>"
        return prefix + super().format(record).replace("\n", f"\n{prefix}    ")


def writes_to_journal(stream: TextIO, environ=os.environ) -> bool:
    """Whether `stream` is the journal stream systemd gave this service: $JOURNAL_STREAM
    names its device and inode (systemd.exec(5)); a child whose stderr went elsewhere
    inherits the variable but not the stream."""
    value = environ.get("JOURNAL_STREAM", "")
    device, sep, inode = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        return False


def setup_logging(level: str, stream: Optional[TextIO] = None) -> logging.Handler:
    """One handler on the root logger, at `level`; returns it."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    if writes_to_journal(stream):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(LINE_FORMAT, DATE_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    threading.excepthook = _log_thread_exception
    return handler


def _log_thread_exception(args) -> None:
    """An uncaught error of a thread is logged with its traceback at CRITICAL, not printed
    raw (journald keeps the priority)."""
    if issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread is not None else "a thread"
    logging.getLogger("chargepoint").critical(
        "unexpected error in %s", name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
