"""Command line: `chargepoint run`, `chargepoint check`, `chargepoint demo`,
`chargepoint sim ...`, `chargepoint outbox list|resend`, `chargepoint diagnostics`,
`chargepoint security-log clear`,
`chargepoint release build|verify|sign|install|status`, `chargepoint install-files`.

This module parses the command line and calls the command; each group of commands is a
module of chargepoint/commands/."""
from __future__ import annotations

import argparse
import logging
from typing import Optional

from chargepoint import __version__
from chargepoint.commands.admin import (cmd_diagnostics, cmd_outbox_list, cmd_outbox_resend,
                                        cmd_security_log_clear)
from chargepoint.commands.common import ID_VARIABLE, URL_VARIABLE
from chargepoint.commands.demo import cmd_demo, cmd_sim
from chargepoint.commands.release import (cmd_install_files, cmd_release_build,
                                          cmd_release_install, cmd_release_sign,
                                          cmd_release_status, cmd_release_verify)
from chargepoint.commands.run import cmd_check, cmd_run
from chargepoint.log_setup import setup_logging
from chargepoint.paths import DEFAULT_CONFIG, DEFAULT_STATE_DIR
from chargepoint.preflight import EXIT_SOFTWARE

log = logging.getLogger("chargepoint")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0 or more)")
    return value


def _csms_options(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--url", help=f"the CSMS's WebSocket URL, without the charge point id "
                        f"(default ${URL_VARIABLE}, else {default} [csms] url)")
    parser.add_argument("--id", dest="charge_point_id", metavar="ID",
                        help=f"the charge point id, the last part of the URL (default "
                             f"${ID_VARIABLE}, else [csms] charge_point_id)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chargepoint", description=__doc__)
    parser.add_argument("--version", action="version", version=f"chargepoint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the firmware in the foreground")
    run.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    _state_dir_option(run)
    _csms_options(run, "the file's")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=cmd_run)

    check = sub.add_parser(
        "check", help="check the configuration, its files, the database's place and the "
        "hardware as `run` would, without starting anything",
        description="One line per problem found; exit status 0 only if the firmware "
        "would start, 78 (EX_CONFIG) if not.")
    check.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    _state_dir_option(check)
    check.add_argument("--user", help="check as this user (root only; default for root: "
                       "the service's user, chargepoint, if it exists)")
    check.set_defaults(func=cmd_check)

    demo = sub.add_parser("demo", help="simulated charger against a bundled local CSMS, or "
                          "against yours with --url",
                          description="Without --url (or $CHARGEPOINT_URL) or --config the "
                          "charger connects to a Central System started on 127.0.0.1; with "
                          "either it connects to the one they name and logs every frame.")
    demo.add_argument("--config", help="default ./config.toml (its [csms] url replaced by the "
                      "bundled CSMS), else built-in settings; a file given here is used as it "
                      "is, its CSMS too")
    _csms_options(demo, "--config's")
    demo.add_argument("--port", type=int, default=0,
                      help="the bundled CSMS's port (default: any free one)")
    demo.add_argument("--heartbeat", type=int, default=10,
                      help="heartbeat interval the bundled CSMS gives, seconds")
    demo.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    demo.add_argument("--state-dir", help="keep the database and the releases here "
                      "(default: a new temporary directory)")
    demo.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)
    demo.set_defaults(func=cmd_demo)

    sim = sub.add_parser("sim", help="drive the simulated charger of a running firmware",
                         description="commands: plug N, unplug N [ev|socket], tap IDTAG, "
                                     "ev-suspend N, ev-resume N, fault WHAT N, "
                                     "clear-fault WHAT N, clock-step SECONDS, status, "
                                     "disconnect, reconnect")
    sim.add_argument("--socket", help="control socket (default: the firmware's default)")
    sim.add_argument("--json", action="store_true",
                     help="print the answer as JSON (also accepted after the command)")
    sim.add_argument("--config", default="config.toml",
                     help="read system.sim_socket from this file if it exists")
    sim.add_argument("words", nargs=argparse.REMAINDER, help="command and arguments")
    sim.set_defaults(func=cmd_sim)

    outbox = sub.add_parser("outbox", help="the queue of transaction messages: list what "
                            "waits or was given up, send a given-up one again",
                            description="Works on the database of --config, whether the "
                            "firmware runs or not (see docs/delivery.md).")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True)
    listing = outbox_sub.add_parser("list", help="the queued messages in sending order, or "
                                    "with --dead those given up")
    listing.add_argument("--dead", action="store_true", help="the messages given up")
    listing.add_argument("--limit", type=_count, default=100,
                         help="show at most this many (default 100; 0: all)")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    _state_dir_option(listing)
    listing.set_defaults(func=cmd_outbox_list)
    again = outbox_sub.add_parser("resend", help="put a given-up message back at the end of "
                                  "the queue (a StartTransaction with the rest of its "
                                  "transaction)")
    again.add_argument("id", help="its ID in `outbox list --dead`, or its unique id")
    again.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    _state_dir_option(again)
    again.set_defaults(func=cmd_outbox_resend)

    diag = sub.add_parser("diagnostics", help="write the diagnostics archive GetDiagnostics "
                          "uploads (log, configuration without secrets, database health, "
                          "version) to a file",
                          description="Works whether the firmware runs or not. The OCPP "
                          "frames are only in an archive the running firmware uploads.")
    diag.add_argument("--out", required=True, metavar="FILE", help="the zip file to write")
    diag.add_argument("--since", help="log from this UTC time on (e.g. 2026-03-01T08:00:00Z)")
    diag.add_argument("--until", help="log up to this UTC time")
    diag.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    _state_dir_option(diag)
    diag.set_defaults(func=cmd_diagnostics)

    security = sub.add_parser("security-log", help="the security log (docs/security.md): "
                              "clear it", description="Works on the database of --config, "
                              "whether the firmware runs or not.")
    security_sub = security.add_subparsers(dest="security_command", required=True)
    clearing = security_sub.add_parser(
        "clear", help="empty the security log; its first entry is then SecurityLogWasCleared, "
        "which the CSMS is sent as a SecurityEventNotification")
    clearing.add_argument("--config", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    _state_dir_option(clearing)
    clearing.set_defaults(func=cmd_security_log_clear)

    release = sub.add_parser("release", help="release bundles: build one from this checkout, "
                             "check one, install one; the releases of a state directory",
                             description="See docs/firmware-update.md.")
    release_sub = release.add_subparsers(dest="release_command", required=True)
    build = release_sub.add_parser("build", help="one file with the wheel, its dependencies' "
                                   "wheels for the platform, and a manifest; prints its path "
                                   "last")
    build.add_argument("--platform", help="linux_aarch64 (Raspberry Pi OS 64-bit), "
                       "linux_armv7l or linux_x86_64; default: this machine")
    build.add_argument("--python", help="the target's Python, e.g. 3.11 (default: this one, "
                       "or 3.11 for another platform)")
    build.add_argument("--out", required=True, help="directory to write the bundle into")
    build.set_defaults(func=cmd_release_build)
    verify = release_sub.add_parser("verify", help="check a bundle against its manifest and "
                                    "this machine")
    verify.add_argument("bundle")
    verify.add_argument("--signature", help="a file with the bundle's base64 signature "
                        "(`release sign --out`): checked as a charger checks a "
                        "SignedUpdateFirmware")
    verify.add_argument("--certificate", help="the signing certificate (PEM; intermediates "
                        "after it)")
    verify.add_argument("--root", help="the ManufacturerRootCertificate (PEM) the signing "
                        "certificate must be issued under, valid now")
    verify.set_defaults(func=cmd_release_verify)
    sign = release_sub.add_parser("sign", help="the base64 signature of a bundle (SHA-256, "
                                  "RSA PKCS#1 v1.5 or ECDSA) that SignedUpdateFirmware "
                                  "carries")
    sign.add_argument("bundle")
    sign.add_argument("--key", required=True, help="the code-signing private key (PEM)")
    sign.add_argument("--out", help="write the signature to this file (default: print it)")
    sign.add_argument("--password-env", help="the environment variable holding the key's "
                      "password, if it has one")
    sign.set_defaults(func=cmd_release_sign)
    install = release_sub.add_parser("install", help="install a bundle beside the running "
                                     "release (nothing switches)")
    install.add_argument("bundle")
    _state_dir_option(install)
    install.set_defaults(func=cmd_release_install)
    status = release_sub.add_parser("status", help="the releases, the current one, a trial, "
                                    "the last rollback")
    _state_dir_option(status)
    status.set_defaults(func=cmd_release_status)

    files = sub.add_parser("install-files", help="copy the unit, sysusers, polkit, udev and "
                           "journald files and the example configuration into DEST",
                           description="For installs from a wheel: the files "
                           "systemd/README-install.md puts in place. An existing file "
                           "with other content is kept, and nothing is written.")
    files.add_argument("dest", metavar="DEST", help="directory (created if missing)")
    files.add_argument("--force", action="store_true",
                       help="replace files that exist with other content")
    files.set_defaults(func=cmd_install_files)
    return parser


def _state_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state-dir", help="where the database is kept when [storage] path "
                        "is unset (default: $STATE_DIRECTORY under systemd, else "
                        f"{DEFAULT_STATE_DIR})")


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(lambda: args.func(args))


def guarded(command) -> int:
    """Run `command`; an error nobody foresaw is logged with its traceback at CRITICAL
    (under systemd every line keeps that priority), never printed raw, and ends the
    process with EXIT_SOFTWARE, which the service restarts after."""

    try:
        return command()
    except Exception:
        if not logging.getLogger().handlers:
            setup_logging("info")
        log.critical("unexpected error; exiting", exc_info=True)
        return EXIT_SOFTWARE
