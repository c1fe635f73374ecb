"""What the commands share: reading the configuration as `run` does (its findings when it
cannot be used), the CSMS given on the command line or in the environment, and the log
file kept for diagnostics."""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional

from chargepoint.preflight import config_findings

log = logging.getLogger("chargepoint")


#: Environment variables that give the CSMS's URL and the charge point's id, when the
#: command line does not (`--url`, `--id`); either wins over the configuration file.
URL_VARIABLE = "CHARGEPOINT_URL"


ID_VARIABLE = "CHARGEPOINT_ID"


def csms_overrides(args) -> dict:
    """The [csms] url and charge_point_id given by the command line or the environment,
    each with where it came from."""
    found = {}
    for key, option, variable in (("url", "--url", URL_VARIABLE),
                                  ("charge_point_id", "--id", ID_VARIABLE)):
        value = getattr(args, key, None)
        if value is not None:
            found[key] = (value, option)
        elif os.environ.get(variable):
            found[key] = (os.environ[variable], f"${variable}")
    return found


def apply_csms_overrides(settings, overrides: dict) -> Optional[str]:
    """Put the overrides into `settings.csms`, checked as the file's own values are;
    the reason, naming the option or variable, when one is not acceptable."""

    if not overrides:
        return None
    changes = {key: value for key, (value, _) in overrides.items()}
    try:
        settings.csms = dataclasses.replace(settings.csms, **changes)
    except ValueError as exc:
        key, _, reason = str(exc).partition(": ")
        source = overrides.get(key, next(iter(overrides.values())))[1]
        return f"{source}: {reason or exc}"
    return None


def load(args):
    """The settings of `--config` (and `--state-dir`), or a list of findings saying why
    not: one per problem in the file."""
    from chargepoint.config import ConfigError, load_settings  # lazy: keeps --help fast

    try:
        return load_settings(args.config, state_dir=getattr(args, "state_dir", None))
    except ConfigError as exc:
        return config_findings(exc)


def log_findings(findings) -> None:
    for finding in findings:
        (log.error if finding.level == "error" else log.warning)("%s: %s", finding.where,
                                                                 finding.text)


def keep_log_file_of(settings) -> None:
    """Outside the journal, the log is kept in a bounded file too, for GetDiagnostics."""
    from chargepoint.diagnostics import keep_log_file, under_journal  # lazy: run only
    from chargepoint.maintenance import data_dir_of  # lazy: run only

    if not under_journal():
        keep_log_file(data_dir_of(settings), settings.log.file_kb)


def count_errors(findings) -> str:
    n = len([f for f in findings if f.level == "error"])
    return f"{n} error{'s' if n != 1 else ''}"
