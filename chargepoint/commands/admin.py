"""The operator's commands on a charger's state, beside a running firmware or a stopped
one: `outbox list|resend`, `security-log clear`, `diagnostics`."""
from __future__ import annotations

import json
import logging
import os
import pwd
import sys
import time
from pathlib import Path

from chargepoint.commands.common import load
from chargepoint.preflight import EXIT_CONFIG

log = logging.getLogger("chargepoint")


def _outbox_database(args):
    """The database named by `--config` (and `--state-dir`), or an exit code after saying
    why not."""
    from chargepoint.outbox_admin import AdminError, open_database  # lazy: outbox only

    settings = load(args)
    if isinstance(settings, list):
        for finding in settings:
            print(f"chargepoint: {finding.line()}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return open_database(settings.storage.path)
    except AdminError as exc:
        print(f"chargepoint: {exc}", file=sys.stderr)
        return 1


def cmd_outbox_list(args) -> int:

    from chargepoint.outbox_admin import (  # lazy: outbox only
        count_messages, format_listing, list_messages)

    con = _outbox_database(args)
    if isinstance(con, int):
        return con
    try:
        rows = list_messages(con, dead=args.dead, limit=args.limit or None)
        total = count_messages(con, dead=args.dead)
    finally:
        con.close()
    if args.json:
        print(json.dumps({"total": total, "messages": [r.as_dict() for r in rows]}, indent=1))
    else:
        print(format_listing(rows, args.dead, total))
    return 0


def cmd_outbox_resend(args) -> int:
    from chargepoint.outbox_admin import AdminError, format_listing, resend  # lazy: outbox

    con = _outbox_database(args)
    if isinstance(con, int):
        return con
    try:
        queued = resend(con, args.id, time.time())
    except AdminError as exc:
        print(f"chargepoint: {exc}", file=sys.stderr)
        return 1
    finally:
        con.close()
    print(format_listing(queued, False, len(queued), "queued again at the end of the outbox"))
    print("A running firmware sends them after what it has queued now; a stopped one when "
          "it starts.")
    return 0


def cmd_security_log_clear(args) -> int:
    """Empty the security log; SecurityLogWasCleared goes to the CSMS (security_log.py)."""
    from chargepoint.outbox_admin import AdminError  # lazy: security log only
    from chargepoint.security_log import clear, firmware_runs  # lazy: security log only

    settings = load(args)
    if isinstance(settings, list):
        for finding in settings:
            print(f"chargepoint: {finding.line()}", file=sys.stderr)
        return EXIT_CONFIG
    database = settings.storage.path
    who = f"cleared by the operator ({_operator()}) with chargepoint security-log clear"
    try:
        running = firmware_runs(database)
        sent = clear(database, who, settings.csms.security_events,
                     settings.csms.security_profile)
    except AdminError as exc:
        print(f"chargepoint: {exc}", file=sys.stderr)
        return 1
    print(f"The security log of {database} is empty but for its SecurityLogWasCleared entry.")
    if not sent:
        print("No SecurityEventNotification is sent for it: the CSMS does not take security "
              "events ([csms] security_events, docs/security.md).")
    elif running:
        print("The running firmware sends the SecurityEventNotification after what it has "
              "queued.")
    else:
        print("The firmware sends the SecurityEventNotification when it starts.")
    return 0


def _operator() -> str:
    """Who runs the command, as the log records it: the login behind sudo, else the user."""
    name = os.environ.get("SUDO_USER")
    if name:
        return name
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


def cmd_diagnostics(args) -> int:
    """The diagnostics archive of GetDiagnostics, made on site (without the OCPP frames,
    which only the running firmware holds)."""
    from chargepoint.clock import try_parse_utc  # lazy: diagnostics only
    from chargepoint.diagnostics import build_archive  # lazy: diagnostics only
    from chargepoint.maintenance import data_dir_of  # lazy: diagnostics only

    settings = load(args)
    if isinstance(settings, list):
        for finding in settings:
            print(f"chargepoint: {finding.line()}", file=sys.stderr)
        return EXIT_CONFIG
    period = []
    for name in ("since", "until"):
        text = getattr(args, name)
        moment = try_parse_utc(text) if text else None
        if text and moment is None:
            print(f"chargepoint diagnostics: --{name} {text!r} is not a date and time "
                  "(e.g. 2026-03-01T08:00:00Z)", file=sys.stderr)
            return 2
        period.append(moment)
    out = Path(args.out)
    try:
        build_archive(out, config_path=args.config, database=settings.storage.path,
                      data_dir=data_dir_of(settings), start=period[0], stop=period[1],
                      settings=settings)
    except OSError as exc:
        print(f"chargepoint diagnostics: cannot write {out}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    print(out)
    return 0
