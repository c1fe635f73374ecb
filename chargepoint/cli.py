"""Command line: `chargepoint run`, `chargepoint check`, `chargepoint demo`,
`chargepoint sim ...`, `chargepoint outbox list|resend`, `chargepoint diagnostics`,
`chargepoint security-log clear`,
`chargepoint release build|verify|sign|install|status`, `chargepoint install-files`."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from chargepoint import __version__
from chargepoint.instance_lock import EXIT_IN_USE, AlreadyRunning
from chargepoint.log_setup import setup_logging
from chargepoint.paths import DEFAULT_CONFIG, DEFAULT_STATE_DIR
from chargepoint.preflight import (EXIT_CONFIG, EXIT_SOFTWARE, check_findings, config_findings,
                                   default_check_user, errors, faults, run_as,
                                   startup_findings)

log = logging.getLogger("chargepoint")


class _StopSignals:
    """SIGTERM and SIGINT: ask the runtime to stop, and remember that a stop was asked, so
    one that arrives while a reset's reboot command runs is not lost."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.received = 0

    def install(self) -> "_StopSignals":
        signal.signal(signal.SIGTERM, self)
        signal.signal(signal.SIGINT, self)
        return self

    def __call__(self, signum, frame) -> None:
        self.received += 1
        log.info("received %s; stopping", signal.Signals(signum).name)
        self.runtime.stop()

    def wait(self, seconds: float) -> bool:
        """Whether a stop arrives within `seconds` (polled: a signal handler must not take
        the lock an Event would need)."""
        deadline = time.monotonic() + seconds
        while not self.received and time.monotonic() < deadline:
            time.sleep(min(STOP_POLL_S, max(0.0, deadline - time.monotonic())))
        return self.received > 0


#: Pause between attempts of a failing reboot command (ResetRetries).
REBOOT_RETRY_S = 2.0
#: How often the wait for the system's stop after a reboot command looks for it.
STOP_POLL_S = 0.1


def _reboot(settings, runtime, signals: _StopSignals) -> bool:
    """Run the reboot command, `ResetRetries` more times while it fails; True once it
    succeeded."""

    command = settings.system.reboot_command
    attempts = 1 + runtime.keys.int("ResetRetries")
    for attempt in range(1, attempts + 1):
        log.warning("hard reset: running %s (attempt %d of %d)", " ".join(command),
                    attempt, attempts)
        try:
            subprocess.run(command, check=True, timeout=60)
            return True
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("reboot command failed: %s", exc)
            if signals.received:
                return False                  # asked to stop meanwhile: no more attempts
            if attempt < attempts:
                time.sleep(REBOOT_RETRY_S)    # the process is ending: no loop to block
    log.error("the reboot command failed %d times; restarting the process instead", attempts)
    return False


def _run_runtime(settings, launch, reboot: bool = True,
                 in_place: bool = True) -> Optional[int]:
    """Run the firmware until it is stopped; a Reset restarts it in place, a Hard one runs
    the reboot command first (unless not to `reboot`: the demo). What a restart starts is
    `launch`'s to say: the same release, or the current one after a switch or a rollback
    (chargepoint/releases.py). Not `in_place`, a restart returns None instead, for the
    caller to go on (the demo, which keeps its Central System)."""
    from chargepoint.releases import TrialDeadline  # lazy: as the runtime
    from chargepoint.runtime import Runtime  # lazy: loaded only by the commands that run it
    from hal.settings import SettingsError  # lazy: as the runtime

    supervise = launch.supervision()
    if supervise is not None:
        if not in_place:
            return None
        log.warning("a release is on trial and nothing watches its starts: supervising it")
        os.execv(supervise[0], supervise)
    try:
        runtime = Runtime(settings)
    except AlreadyRunning as exc:
        print(f"chargepoint: {exc}", file=sys.stderr)
        return EXIT_IN_USE
    except SettingsError as exc:           # a backend refused its settings when built
        log.error("%s: %s: %s", settings.source, exc.key, exc.reason)
        return EXIT_CONFIG
    except Exception as exc:
        # Only GPIO backends raise it (a missing lgpio: no restart helps; a chip an S0
        # meter or the pilot needs), and gpiozero is not imported for nothing. A contactor,
        # lock or light reports a chip it cannot open as a fault instead (hal/gpio_reopen.py).
        gpio = sys.modules.get("hal.gpio")
        if gpio is None or not isinstance(exc, gpio.GpioUnavailable):
            raise
        log.error("%s", exc)
        return EXIT_CONFIG
    signals = _StopSignals(runtime).install()
    deadline = TrialDeadline(settings.state_dir, runtime.stop)
    deadline.start()
    outcome = runtime.run()
    deadline.cancel()
    if deadline.expired and not signals.received:
        outcome = outcome or _TRIAL_OVER      # rolled back: restart into the previous one
    if outcome is None or signals.received:
        return 0                              # asked to stop: a stop, not a restart
    if outcome.kind == "hard" and reboot and _reboot(settings, runtime, signals):
        # The system is going down and stops this service: wait for it rather than
        # start again, which the coming stop would cut short (docs/delivery.md).
        wait = settings.system.reboot_wait_s
        log.warning("hard reset: the reboot command succeeded; waiting up to %g s for the "
                    "system to stop this service", wait)
        if signals.wait(wait):
            log.info("stopped for the reboot")
            return 0
        log.error("the system did not stop this service within %g s of the reboot command "
                  "([system] reboot_wait_s); restarting the process instead", wait)
    elif signals.received:
        return 0
    if not in_place:
        return None
    command = launch.command()
    log.warning("restarting the firmware (%s reset)%s", outcome.kind,
                "" if command == launch.again() else f": {' '.join(command)}")
    os.execv(command[0], command)
    return 0  # not reached


class _TrialOver:
    """The outcome of a run ended because its release did not pass its trial in time."""

    kind = "soft"


_TRIAL_OVER = _TrialOver()


#: Environment variables that give the CSMS's URL and the charge point's id, when the
#: command line does not (`--url`, `--id`); either wins over the configuration file.
URL_VARIABLE = "CHARGEPOINT_URL"
ID_VARIABLE = "CHARGEPOINT_ID"


def _csms_overrides(args) -> dict:
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


def _apply_csms_overrides(settings, overrides: dict) -> Optional[str]:
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


def _load(args):
    """The settings of `--config` (and `--state-dir`), or a list of findings saying why
    not: one per problem in the file."""
    from chargepoint.config import ConfigError, load_settings  # lazy: keeps --help fast

    try:
        return load_settings(args.config, state_dir=getattr(args, "state_dir", None))
    except ConfigError as exc:
        return config_findings(exc)


def _log_findings(findings) -> None:
    for finding in findings:
        (log.error if finding.level == "error" else log.warning)("%s: %s", finding.where,
                                                                 finding.text)


def cmd_run(args) -> int:

    setup_logging(args.log_level or "info")
    settings = _load(args)
    if isinstance(settings, list):
        _log_findings(settings)
        log.error("not starting: %d problem%s in %s", len(settings),
                  "s" if len(settings) > 1 else "", args.config)
        return EXIT_CONFIG
    problem = _apply_csms_overrides(settings, _csms_overrides(args))
    if problem:                            # a bad option: a usage error, as argparse's
        print(f"chargepoint: {problem}", file=sys.stderr)
        return 2
    setup_logging(args.log_level or settings.log.level)
    findings = startup_findings(settings, args.config)
    _log_findings(findings)
    if errors(findings):
        log.error("not starting: %s (chargepoint check --config %s checks again without "
                  "starting)", _count_errors(findings), args.config)
        return EXIT_CONFIG
    _keep_log_file(settings)          # only once the state directory is known to be ours
    log.info("chargepoint %s starting as %s, CSMS %s, database %s", __version__,
             settings.csms.charge_point_id, settings.csms.url, settings.storage.path)
    from chargepoint.releases import Launch  # lazy: the releases, once the config is read

    return _run_runtime(settings, Launch(settings.state_dir, sys.argv[1:]))


def _keep_log_file(settings) -> None:
    """Outside the journal, the log is kept in a bounded file too, for GetDiagnostics."""
    from chargepoint.diagnostics import keep_log_file, under_journal  # lazy: run only
    from chargepoint.maintenance import data_dir_of  # lazy: run only

    if not under_journal():
        keep_log_file(data_dir_of(settings), settings.log.file_kb)


def _count_errors(findings) -> str:
    n = len([f for f in findings if f.level == "error"])
    return f"{n} error{'s' if n != 1 else ''}"


def cmd_check(args) -> int:
    """The configuration, the files it names, the database's place and the hardware, as
    `run` would find them, for the user that would run it; starts nothing."""


    name = args.user or default_check_user()
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        print(f"chargepoint: no user {name!r} on this machine", file=sys.stderr)
        return EXIT_CONFIG
    if user.pw_uid != os.geteuid():
        if os.geteuid() != 0:
            print(f"chargepoint: only root can check as another user ({name})",
                  file=sys.stderr)
            return EXIT_CONFIG
        argv = ["check", "--config", os.path.abspath(args.config), "--user", name]
        if args.state_dir:
            argv += ["--state-dir", os.path.abspath(args.state_dir)]
        return run_as(user, argv)
    print(f"checking {args.config} as user {name}", flush=True)
    settings = _load(args)
    findings = settings if isinstance(settings, list) else check_findings(settings,
                                                                          args.config)
    for finding in findings:
        print(finding.line(), flush=True)
    if errors(findings):
        print(f"the firmware would not start: {_count_errors(findings)}")
        return EXIT_CONFIG
    if faults(findings):
        n = len(faults(findings))
        print(f"the firmware would start, but not in a good state: {n} fault"
              f"{'s' if n != 1 else ''} (connectors Faulted until it is fixed)")
        return EXIT_CONFIG
    warnings = len(findings)
    print(f"the firmware would start (database {settings.storage.path})"
          + (f", with {warnings} warning{'s' if warnings > 1 else ''}" if warnings else ""))
    return 0


def _demo_config_path() -> Optional[Path]:
    here = Path.cwd() / "config.toml"
    return here if here.exists() else None


def sim_command() -> str:
    """How to call `chargepoint` from another terminal: the bare name only if that is this
    installation on PATH, else the full path of the script beside this Python, else
    `python -m chargepoint`."""
    beside = Path(sys.executable).parent / "chargepoint"
    on_path = shutil.which("chargepoint")
    if beside.exists():
        if on_path and Path(on_path).resolve() == beside.resolve():
            return "chargepoint"
        return shlex.quote(str(beside))
    return f"{shlex.quote(sys.executable)} -m chargepoint"


def cmd_demo(args) -> int:
    """The simulated charger against the bundled local CSMS on loopback, or against the
    CSMS given by `--url`, `$CHARGEPOINT_URL` or an explicit `--config`.

    With the bundled CSMS, the firmware goes on in a child process after a restart (a
    Reset, a new release), `demo --url` to this CSMS, supervised here: the CSMS stays."""
    from chargepoint.config import ConfigError, load_settings, parse_settings  # lazy: demo only
    from chargepoint.releases import Launch  # lazy: demo only
    from hal.sim_control import default_socket_path  # lazy: demo only

    try:
        if not args.supervised:         # its CSMS is the parent's: a release may lack the extra
            from chargepoint.csms.server import LocalCsms  # lazy: the [csms] extra, optional
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "websockets":
            raise
        print(f"chargepoint: {_missing_csms_extra()}", file=sys.stderr)
        return 2
    overrides = _csms_overrides(args)
    try:
        path = Path(args.config) if args.config else _demo_config_path()
        settings = load_settings(path) if path else parse_settings(DEMO_SETTINGS, "<demo>")
    except ConfigError as exc:
        setup_logging(args.log_level or "warning")
        _log_findings(config_findings(exc))
        return EXIT_CONFIG
    if args.supervised:
        settings.csms.security_profile = 0    # the bundled CSMS, as the parent's firmware
    # A CSMS named on the command line, in the environment or in a file given with
    # --config is used as it is; otherwise the bundled one, in place of ./config.toml's.
    external = "url" in overrides or args.config is not None
    problem = _apply_csms_overrides(settings, overrides)
    if problem:
        print(f"chargepoint: {problem}", file=sys.stderr)
        return 2
    setup_logging(args.log_level or ("info" if external else "warning"))
    csms = None
    if external:
        settings.log.frames = True       # what the bundled CSMS would have printed
    else:
        csms = LocalCsms(host="127.0.0.1", port=args.port,
                         printer=lambda line: print(line, flush=True))
        csms.boot_response = {"status": "Accepted", "interval": args.heartbeat}
        csms.start()
        settings.csms.url = csms.url
        settings.csms.security_profile = 0
    workdir = os.path.abspath(args.state_dir or tempfile.mkdtemp(prefix="chargepoint-demo-"))
    settings.state_dir = workdir
    settings.storage.path = os.path.join(workdir, "chargepoint.db")
    _keep_log_file(settings)
    if args.supervised:              # the firmware of a demo that keeps its CSMS: no banner
        return _run_runtime(settings, Launch(workdir, sys.argv[1:]), reboot=False)
    operator = None
    if csms is not None:
        from chargepoint.csms.operator import Operator  # lazy: the [csms] extra, as LocalCsms

        operator = Operator(csms, Path(workdir) / "csms")
        operator.console(sys.stdin, settings.csms.charge_point_id)
    sim = sim_command() + " sim"
    socket_path = settings.system.sim_socket
    if socket_path and os.path.abspath(socket_path) != default_socket_path():
        sim += f" --socket {shlex.quote(socket_path)}"
    if csms is not None:
        print(f"Local CSMS listening on {csms.url}; charge point "
              f"{settings.csms.charge_point_id} on simulated hardware.", flush=True)
    else:
        print(f"Charge point {settings.csms.charge_point_id} on simulated hardware, connecting "
              f"to {settings.csms.url.rstrip('/')}/{settings.csms.charge_point_id}; every OCPP "
              "frame is logged below.", flush=True)
    print(f"In another terminal try:  {sim} plug 1 ; {sim} tap 04A1B2C3 ;  {sim} status",
          flush=True)
    if operator is not None:
        print("Type here, as the Central System's operator:  update-firmware BUNDLE ;  "
              "get-diagnostics ;  help", flush=True)
    print("Press Ctrl-C to stop.\n", flush=True)
    try:
        # A Hard Reset from the CSMS restarts the demo; it never reboots this computer.
        if csms is None:
            return _run_runtime(settings, Launch(workdir, sys.argv[1:]), reboot=False)
        child = ["demo", "--supervised", "--url", csms.url, "--state-dir", workdir,
                 "--log-level", args.log_level or "warning",
                 *(["--config", str(path.absolute())] if path else [])]
        code = _run_runtime(settings, Launch(workdir, child), reboot=False, in_place=False)
        if code is not None:
            return code
        from chargepoint.release_guard import Supervisor  # lazy: once the firmware restarts

        return Supervisor(workdir, child).run()
    finally:
        if operator is not None:
            operator.stop()
        if csms is not None:
            csms.stop()
        print("\nDemo stopped.", flush=True)


def _missing_csms_extra() -> str:
    """What to install for `chargepoint demo`, as pyproject.toml's [csms] extra says."""
    from importlib.metadata import (  # lazy: 30 ms of imports, for this message only
        PackageNotFoundError, requires)


    try:
        wanted = [spec.strip() for spec, _, marker in
                  (r.partition(";") for r in requires("chargepoint") or [])
                  if marker.replace(" ", "").replace("'", '"') == 'extra=="csms"']
    except PackageNotFoundError:
        wanted = []
    wanted = wanted or ["websockets"]
    return ("the demo's local Central System needs the [csms] extra, which is not "
            f"installed here: {sys.executable} -m pip install "
            + " ".join(f"'{r}'" for r in wanted))


def cmd_sim(args) -> int:
    from hal.sim_control import client_main, default_socket_path  # lazy: sim client only

    path = args.socket
    if not path and args.config and Path(args.config).exists():
        from chargepoint.config import ConfigError, load_settings  # lazy: as above

        try:
            path = load_settings(args.config).system.sim_socket
        except ConfigError:
            path = ""
    return client_main(args.words, path or default_socket_path(client=True), as_json=args.json)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0 or more)")
    return value


def _outbox_database(args):
    """The database named by `--config` (and `--state-dir`), or an exit code after saying
    why not."""
    from chargepoint.outbox_admin import AdminError, open_database  # lazy: outbox only

    settings = _load(args)
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

    settings = _load(args)
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

    settings = _load(args)
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


def cmd_install_files(args) -> int:
    from chargepoint.install_files import (  # lazy: install-files only
        SHIPPED, InstallFilesError, install_files)

    try:
        done = install_files(args.dest, force=args.force)
    except InstallFilesError as exc:
        print(f"chargepoint install-files: {exc}", file=sys.stderr)
        return 1
    targets = {item.name: item.target for item in SHIPPED}
    for path, state in done:
        print(f"{state:9} {path}  (goes to {targets[path.name]})")
    return 0


def cmd_release_build(args) -> int:
    from chargepoint.releases import ReleaseError, build_bundle  # lazy: this command's

    try:
        bundle = build_bundle(args.out, platform=args.platform, python=args.python,
                              progress=lambda line: print(line, flush=True))
    except ReleaseError as exc:
        print(f"chargepoint release build: {exc}", file=sys.stderr)
        return 1
    print(bundle)
    return 0


def cmd_release_verify(args) -> int:
    from chargepoint.releases import (  # lazy: this command's
        ReleaseError, read_manifest, verify_bundle, verify_bundle_signature)

    if (args.signature is None) != (args.certificate is None) or \
            (args.root is not None and args.signature is None):
        print("chargepoint release verify: --signature and --certificate go together "
              "(--root with them)", file=sys.stderr)
        return 2
    try:
        if args.signature is not None:
            signature = _read_text_file(args.signature, "signature")
            certificate = _read_text_file(args.certificate, "certificate")
            root = _read_text_file(args.root, "root") if args.root else None
            verify_bundle_signature(args.bundle, signature, certificate, root, time.time())
            print(f"signature verified: {Path(args.bundle).name} is signed by the key of "
                  f"{args.certificate}"
                  f"{f', a certificate issued under {args.root}' if args.root else ''}")
        manifest = read_manifest(args.bundle)
        print(f"release {manifest.version} for {manifest.platform}, Python {manifest.python}"
              f"{f', glibc {manifest.glibc} or newer' if manifest.glibc else ''}: "
              f"{len(manifest.files)} wheels, {manifest.size / 1e6:.1f} MB, every file as "
              f"its manifest says (built {manifest.built})")
        verify_bundle(args.bundle)
    except ReleaseError as exc:
        print(f"chargepoint release verify: {exc}", file=sys.stderr)
        return 1
    print("it installs on this machine")
    return 0


def _read_text_file(path: str, what: str) -> str:
    from chargepoint.releases import ReleaseError  # lazy: the release commands'

    try:
        return Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReleaseError(f"cannot read the {what} {path}: "
                           f"{getattr(exc, 'strerror', None) or exc}") from None


def cmd_release_sign(args) -> int:
    from chargepoint.releases import ReleaseError, sign_bundle  # lazy: this command's

    try:
        try:
            key = Path(args.key).read_bytes()
        except OSError as exc:
            raise ReleaseError(f"cannot read the key {args.key}: {exc.strerror or exc}") \
                from None
        password = None
        if args.password_env:
            password = os.environ.get(args.password_env, "").encode() or None
        signature = sign_bundle(args.bundle, key, password)
        if args.out:
            Path(args.out).write_text(signature + "\n", encoding="ascii")
    except (ReleaseError, OSError) as exc:
        print(f"chargepoint release sign: {exc}", file=sys.stderr)
        return 1
    print(f"signature of {Path(args.bundle).name} written to {args.out}" if args.out
          else signature)
    return 0


def _release_state_dir(args) -> str:
    from chargepoint.config import state_directory  # lazy: the release commands'

    return state_directory(args.state_dir)


def cmd_release_install(args) -> int:
    from chargepoint.releases import ReleaseError, install_bundle  # lazy: this command's

    setup_logging("info")
    state_dir = _release_state_dir(args)
    try:
        version = install_bundle(args.bundle, state_dir)
    except ReleaseError as exc:
        print(f"chargepoint release install: {exc}", file=sys.stderr)
        return 1
    print(f"release {version} installed in {state_dir}/releases/{version}; make it current "
          f"with release-guard.py use {state_dir} {version} (docs/firmware-update.md)")
    return 0


def cmd_release_status(args) -> int:
    from chargepoint.release_guard import status  # lazy: this command's

    print(status(_release_state_dir(args)))
    return 0


DEMO_SETTINGS = {
    "csms": {"url": "ws://127.0.0.1:9000/ocpp", "charge_point_id": "CP-DEMO"},
    "connectors": [{"id": 1, "fixed_cable": True, "meter": {"type": "sim"},
                    "contactor": {"type": "sim"}, "pilot": {"type": "sim"},
                    "indicator": {"type": "sim"}}],
    "readers": [{"type": "sim"}],
}


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
