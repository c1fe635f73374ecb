"""`chargepoint demo` (the simulated charger against the bundled local Central System, or
a CSMS given on the command line) and `chargepoint sim` (its control, from another
terminal)."""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

from chargepoint.commands.common import (apply_csms_overrides, csms_overrides,
                                         keep_log_file_of, log_findings)
from chargepoint.commands.run import run_runtime
from chargepoint.log_setup import setup_logging
from chargepoint.preflight import EXIT_CONFIG, config_findings

log = logging.getLogger("chargepoint")


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
    overrides = csms_overrides(args)
    try:
        path = Path(args.config) if args.config else _demo_config_path()
        settings = load_settings(path) if path else parse_settings(DEMO_SETTINGS, "<demo>")
    except ConfigError as exc:
        setup_logging(args.log_level or "warning")
        log_findings(config_findings(exc))
        return EXIT_CONFIG
    if args.supervised:
        settings.csms.security_profile = 0    # the bundled CSMS, as the parent's firmware
    # A CSMS named on the command line, in the environment or in a file given with
    # --config is used as it is; otherwise the bundled one, in place of ./config.toml's.
    external = "url" in overrides or args.config is not None
    problem = apply_csms_overrides(settings, overrides)
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
    keep_log_file_of(settings)
    if args.supervised:              # the firmware of a demo that keeps its CSMS: no banner
        return run_runtime(settings, Launch(workdir, sys.argv[1:]), reboot=False)
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
            return run_runtime(settings, Launch(workdir, sys.argv[1:]), reboot=False)
        child = ["demo", "--supervised", "--url", csms.url, "--state-dir", workdir,
                 "--log-level", args.log_level or "warning",
                 *(["--config", str(path.absolute())] if path else [])]
        code = run_runtime(settings, Launch(workdir, child), reboot=False, in_place=False)
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


DEMO_SETTINGS = {
    "csms": {"url": "ws://127.0.0.1:9000/ocpp", "charge_point_id": "CP-DEMO"},
    "connectors": [{"id": 1, "fixed_cable": True, "meter": {"type": "sim"},
                    "contactor": {"type": "sim"}, "pilot": {"type": "sim"},
                    "indicator": {"type": "sim"}}],
    "readers": [{"type": "sim"}],
}
