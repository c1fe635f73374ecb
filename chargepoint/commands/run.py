"""`chargepoint run` and `chargepoint check`: the firmware in the foreground until it is
stopped, restarted in place after a Reset (a Hard one runs the reboot command and waits for
the system's stop), and the same start-up checks without starting anything."""
from __future__ import annotations

import logging
import os
import pwd
import signal
import subprocess
import sys
import time
from typing import Optional

from chargepoint import __version__
from chargepoint.commands.common import (apply_csms_overrides, count_errors, csms_overrides,
                                         keep_log_file_of, load, log_findings)
from chargepoint.instance_lock import EXIT_IN_USE, AlreadyRunning
from chargepoint.log_setup import setup_logging
from chargepoint.preflight import (EXIT_CONFIG, check_findings, default_check_user, errors,
                                   faults, run_as, startup_findings)

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


def run_runtime(settings, launch, reboot: bool = True,
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
        # Only GPIO backends raise it (a missing lgpio: no restart helps), and gpiozero is
        # not imported for nothing. A GPIO device reports a chip it cannot open as a
        # connector fault instead (hal/gpio_reopen.py).
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


def cmd_run(args) -> int:

    setup_logging(args.log_level or "info")
    settings = load(args)
    if isinstance(settings, list):
        log_findings(settings)
        log.error("not starting: %d problem%s in %s", len(settings),
                  "s" if len(settings) > 1 else "", args.config)
        return EXIT_CONFIG
    problem = apply_csms_overrides(settings, csms_overrides(args))
    if problem:                            # a bad option: a usage error, as argparse's
        print(f"chargepoint: {problem}", file=sys.stderr)
        return 2
    setup_logging(args.log_level or settings.log.level)
    findings = startup_findings(settings, args.config)
    log_findings(findings)
    if errors(findings):
        log.error("not starting: %s (chargepoint check --config %s checks again without "
                  "starting)", count_errors(findings), args.config)
        return EXIT_CONFIG
    keep_log_file_of(settings)          # only once the state directory is known to be ours
    log.info("chargepoint %s starting as %s, CSMS %s, database %s", __version__,
             settings.csms.charge_point_id, settings.csms.url, settings.storage.path)
    from chargepoint.releases import Launch  # lazy: the releases, once the config is read

    return run_runtime(settings, Launch(settings.state_dir, sys.argv[1:]))


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
    settings = load(args)
    findings = settings if isinstance(settings, list) else check_findings(settings,
                                                                          args.config)
    for finding in findings:
        print(finding.line(), flush=True)
    if errors(findings):
        print(f"the firmware would not start: {count_errors(findings)}")
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
