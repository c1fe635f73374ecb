"""systemd/README-install.md followed as written: install, upgrade, roll back, uninstall.

Two releases are built as `python3 dev.py release` builds them (the current version
and an earlier one). Then every `sh` block of the guide marked `<!-- step: NAME -->`
runs as written, in one bash session as a reader's terminal would, inside a private
mount namespace where /etc, /opt, /var and /run are overlays: the real paths, with
every write landing in a scratch directory and the machine left untouched. The real
tools run (python3 -m venv, pip with --require-hashes against the package index,
systemd-sysusers, systemd-analyze verify, install, ln, userdel); what needs systemd
as PID 1, udevd, polkitd or apt is a stand-in that records its arguments, and the
test starts the service as the unit would (its user, groups, ExecStart and
directories) where the guide says `systemctl enable --now`.

Needs root (a mount namespace and chown). It builds two virtual environments from
the package index, about a minute: set CHARGEPOINT_SKIP_INSTALL_TEST=1 to skip it
locally; with CI set it always runs.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from chargepoint import __version__
from chargepoint.install_files import SHIPPED
from tests.once import once_per_run
from tests.test_packaging import load_dev
from tests.test_systemd import values

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "systemd" / "README-install.md"
SKIP_ENV = "CHARGEPOINT_SKIP_INSTALL_TEST"
PREVIOUS_VERSION = f"{__version__}.dev0"
OVERLAID = ("etc", "opt", "var", "run")
STAND_INS = ("systemctl", "journalctl", "udevadm", "apt", "apt-get")

BLOCK = re.compile(r"^(?P<indent>[ \t]*)<!-- (?P<kind>step|not run): (?P<name>.+?) -->\n"
                   r"(?P=indent)```sh\n(?P<code>.*?)\n(?P=indent)```", re.M | re.S)


def guide_blocks() -> list[tuple[str, str, str]]:
    """(kind, name or reason, commands) of every marked block, in order."""
    text = GUIDE.read_text()
    blocks = []
    for match in BLOCK.finditer(text):
        code = textwrap.dedent(textwrap.indent(match["code"], match["indent"]))
        blocks.append((match["kind"], match["name"], code))
    return blocks


def steps() -> dict[str, str]:
    return {name: code for kind, name, code in guide_blocks() if kind == "step"}


# --------------------------------------------------------------------------- the text

def test_every_shell_block_is_marked_run_or_not():
    """A block left unmarked would be neither run nor knowingly skipped."""
    text = GUIDE.read_text()
    assert len(re.findall(r"^[ \t]*```sh$", text, re.M)) == len(guide_blocks())
    names = [name for kind, name, _ in guide_blocks() if kind == "step"]
    assert len(names) == len(set(names))
    assert set(names) == {name for kind, name in PLAN if kind == "step"}


def test_guide_installs_a_release_not_the_checkout():
    code = "\n".join(code for _, _, code in guide_blocks())
    assert not re.search(r"pip install (--upgrade )?\.(\s|$)", code)
    assert "--require-hashes" in steps()["release"]
    assert "requirements-pi.txt" in steps()["release"]


def test_guide_installs_every_shipped_file_where_install_files_says():
    code = "\n".join(steps().values())
    for item in SHIPPED:
        assert f"/opt/chargepoint/venv/share/chargepoint/{item.name} {item.target}" in code, \
            item


def test_udev_rule_hands_devices_to_the_units_groups():
    rule = (ROOT / "systemd" / "70-chargepoint-devices.rules").read_text()
    lines = [line for line in rule.splitlines() if line.strip() and not line.startswith("#")]
    groups = set()
    for line in lines:
        pairs = re.findall(r'([A-Z]+\+?)(==|=|\+=)"([^"]*)"', line)
        assert ", ".join(f'{k}{op}"{v}"' for k, op, v in pairs) == line, line
        assert {k for k, _, _ in pairs} <= {"SUBSYSTEM", "KERNEL", "ACTION", "GROUP", "MODE",
                                            "RUN+"}, line
        groups |= {v for k, _, v in pairs if k == "GROUP"}
        groups |= set(re.findall(r"chgrp -R (\w+)", line))
    assert groups == set(values("SupplementaryGroups")[0].split()) - {"systemd-journal"}


# --------------------------------------------------------------------------- the run

#: What runs, in order: ("step", name) a block of the guide; ("probe", name) the
#: test's own look at the result (PROBES); ("cd", release) where the reader stands.
PLAN = [
    ("cd", "previous"),
    ("step", "release"), ("step", "switch"), ("probe", "installed"),
    ("step", "user"), ("step", "config"), ("probe", "config"), ("step", "preflight"),
    ("step", "polkit"), ("step", "udev"), ("step", "service"),
    ("probe", "systemd starts the service"), ("step", "check"), ("step", "outbox"),
    ("probe", "systemd stops the service"),
    ("step", "journald"),
    ("cd", "current"), ("step", "release"), ("step", "upgrade"),
    ("probe", "going back"), ("step", "rollback"),
    ("step", "uninstall"), ("step", "purge"), ("probe", "nothing left"),
]

PROBES = {
    "installed": """
        /opt/chargepoint/venv/bin/chargepoint --help
        ls /opt/chargepoint/venv/share/chargepoint
        /opt/chargepoint/venv/bin/python -c 'import lgpio, gpiozero, jsonschema, chargepoint.runtime'
        if /opt/chargepoint/venv/bin/chargepoint demo; then echo "demo ran"; else echo "demo exit $?"; fi
    """,
    "config": """
        stat -c '%a %U %G' /etc/chargepoint/config.toml
        setpriv --reuid=chargepoint --regid=chargepoint --init-groups \\
            /opt/chargepoint/venv/bin/python -c 'from chargepoint.config import load_settings
        print("loads as chargepoint:", load_settings("/etc/chargepoint/config.toml").csms.charge_point_id)'
        if setpriv --reuid=nobody --regid=nogroup --clear-groups cat /etc/chargepoint/config.toml \\
            >/dev/null 2>&1; then echo "others can read it"; else echo "others cannot read it"; fi
    """,
    # What systemd does for `enable --now`: the directories of StateDirectory= and
    # RuntimeDirectory=, then ExecStartPre= and ExecStart= as User= with
    # SupplementaryGroups=, the unit's Environment=, $RUNTIME_DIRECTORY/$STATE_DIRECTORY
    # and the start's $INVOCATION_ID, UMask=0027.
    "systemd starts the service": """
        install -d -o chargepoint -g chargepoint -m 0750 /run/chargepoint /var/lib/chargepoint
        exec_pre=$(sed -n 's/^ExecStartPre=-//p' /etc/systemd/system/chargepoint.service \\
            | sed 's|%S|/var/lib|')
        exec_start=$(sed -n 's/^ExecStart=//p' /etc/systemd/system/chargepoint.service)
        as_service="setpriv --reuid=chargepoint --regid=chargepoint \\
            --groups=gpio,dialout,spi,i2c env LG_WD=/run/chargepoint PYTHONUNBUFFERED=1 \\
            RUNTIME_DIRECTORY=/run/chargepoint STATE_DIRECTORY=/var/lib/chargepoint \\
            INVOCATION_ID=0123456789abcdef"
        (cd /run/chargepoint && umask 0027 && $as_service $exec_pre) >"$SCRATCH/service.log" 2>&1
        (cd /run/chargepoint && umask 0027 && exec $as_service $exec_start) \\
            >>"$SCRATCH/service.log" 2>&1 &
        service_pid=$!
        for attempt in $(seq 300); do
            /opt/chargepoint/venv/bin/chargepoint sim status >/dev/null 2>&1 && break
            sleep 0.1
        done
        ls -l /run/chargepoint
    """,
    "systemd stops the service": """
        kill -TERM $service_pid
        wait $service_pid && echo "stopped cleanly"
    """,
    "going back": f"previous=chargepoint-{PREVIOUS_VERSION}",
    "nothing left": """
        for path in /opt/chargepoint /etc/chargepoint /var/lib/chargepoint \\
                /etc/systemd/system/chargepoint.service /etc/sysusers.d/chargepoint.conf; do
            if test -e $path; then echo "left: $path"; fi
        done
        if getent passwd chargepoint; then echo "left: user"; fi
        if getent group chargepoint; then echo "left: group"; fi
        echo "checked"
    """,
}

PROLOGUE = """
set -euo pipefail
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
for dir in {overlaid}; do
    mkdir -p "$SCRATCH/$dir/upper" "$SCRATCH/$dir/work"
    mount -t overlay overlay \\
        -o "lowerdir=/$dir,upperdir=$SCRATCH/$dir/upper,workdir=$SCRATCH/$dir/work" "/$dir"
done
export PATH="$STAND_INS:$PATH"
"""

#: sudo: the test runs as root; `-u USER` becomes that user as sudo would.
SUDO = """#!/bin/sh
echo "sudo $*" >> "$STAND_IN_LOG"
if [ "$1" = "-u" ]; then
    user=$2; shift 2
    exec setpriv --reuid="$user" --regid="$user" --init-groups "$@"
fi
exec "$@"
"""

RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "$STAND_IN_LOG"
"""


def _why_not_here() -> str | None:
    if os.geteuid() != 0:
        return "needs root: a private mount namespace with overlays, chown to a new user"
    missing = [tool for tool in ("unshare", "setpriv", "systemd-sysusers", "systemd-analyze",
                                 "userdel", "sha256sum") if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                           capture_output=True, text=True)
    if probe.returncode:
        return f"no private mount namespace here: {probe.stderr.strip()}"
    return None


def build_releases(base: Path) -> dict[str, Path]:
    """{"current": dir, "previous": dir}: release directories as dev.py release makes."""
    dev = load_dev()
    current = dev.build_release(ROOT, base / "dist")
    source = base / "previous-src"
    shutil.copytree(ROOT, source, ignore=dev._NOT_BUILT_FROM)
    init = source / "chargepoint" / "__init__.py"
    text = init.read_text()
    assert f'__version__ = "{__version__}"' in text
    init.write_text(text.replace(f'__version__ = "{__version__}"',
                                 f'__version__ = "{PREVIOUS_VERSION}"'))
    previous = dev.build_release(source, base / "dist")
    return {"current": current, "previous": previous}


def build_script(releases: dict[str, Path]) -> str:
    guide = steps()
    parts = [PROLOGUE.format(overlaid=" ".join(OVERLAID))]
    for kind, name in PLAN:
        if kind == "cd":
            parts.append(f'cd "{releases[name]}"')
            continue
        parts.append(f'echo "::{kind} {name}"')
        parts.append(guide[name] if kind == "step" else textwrap.dedent(PROBES[name]))
    parts.append('echo "::end"')
    return "\n".join(parts) + "\n"


def sections(output: str) -> list[tuple[str, str]]:
    """[(\"step release\", its output), ...] in order of the ::markers."""
    found = []
    for chunk in re.split(r"^::", output, flags=re.M)[1:]:
        head, _, body = chunk.partition("\n")
        found.append((head.strip(), body))
    return found


@pytest.fixture(scope="module")
def followed(run_dir):
    """The guide run through once per test run; (sections, stand-in log, scratch directory).

    Once, whichever worker asks first: two at a time would each make the service user
    `chargepoint` with the same uid, and one's `userdel` would find the other's service."""
    if os.environ.get(SKIP_ENV) and not os.environ.get("CI"):
        pytest.skip(f"{SKIP_ENV} is set")
    reason = _why_not_here()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the install guide cannot be followed in CI: {reason}")
        pytest.skip(reason)

    def make(folder: Path) -> dict:
        scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=folder))
        found, log = follow(build_releases(scratch / "releases"), scratch)
        return {"found": found, "log": log, "scratch": str(scratch)}

    result = once_per_run(run_dir, "install-guide", make)
    return ([tuple(pair) for pair in result["found"]], result["log"],
            Path(result["scratch"]))


def follow(releases: dict[str, Path], scratch: Path) -> tuple[list, list[str]]:
    """Run the guide's steps in a private mount namespace; (sections, stand-in log)."""
    stand_ins = scratch / "stand-ins"
    stand_ins.mkdir()
    for name, text in [("sudo", SUDO), *[(tool, RECORDER) for tool in STAND_INS]]:
        (stand_ins / name).write_text(text)
        (stand_ins / name).chmod(0o755)
    # `python3` is the distribution's, as on the controller (this machine's PATH may
    # put another first, e.g. one under /root that the service user cannot run).
    python3 = "/usr/bin/python3" if _has_venv("/usr/bin/python3") else sys._base_executable
    (stand_ins / "python3").write_text(f'#!/bin/sh\nexec "{python3}" "$@"\n')
    (stand_ins / "python3").chmod(0o755)
    script = scratch / "guide.sh"
    script.write_text(build_script(releases))
    log = scratch / "stand-ins.log"
    machine_before = _machine_files()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH", "NOTIFY_", "WATCHDOG_"))}
    env.update(SCRATCH=str(scratch), STAND_INS=str(stand_ins), STAND_IN_LOG=str(log))
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "bash",
                             str(script)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    found = sections(output)
    assert proc.returncode == 0 and found[-1][0] == "end", (
        f"the guide failed at {found[-1][0] if found else 'the start'} "
        f"(exit {proc.returncode}):\n{output[-6000:]}"
        + (f"\nservice log:\n{(scratch / 'service.log').read_text()[-3000:]}"
           if (scratch / "service.log").exists() else ""))
    assert _machine_files() == machine_before
    return found, log.read_text().splitlines()


def _has_venv(python: str) -> bool:
    """Debian's python3 makes virtual environments only with python3-venv installed."""
    return os.access(python, os.X_OK) and subprocess.run(
        [python, "-c", "import ensurepip, venv"], capture_output=True).returncode == 0


def _machine_files() -> dict[str, object]:
    """What the guide would change on a real machine, as this one has it."""
    return {"passwd": Path("/etc/passwd").read_bytes(), "group": Path("/etc/group").read_bytes(),
            "opt": sorted(os.listdir("/opt")), "units": sorted(os.listdir("/etc/systemd/system"))}


def section(found, name: str, index: int = 0) -> str:
    return [body for head, body in found if head == name][index]


def test_install_from_the_previous_release(followed):
    found, _, _ = followed
    assert f"chargepoint {PREVIOUS_VERSION}" in section(found, "step switch")
    release = section(found, "step release")
    assert "OK" in release                                       # sha256sum -c
    assert "No broken requirements found." in release            # pip check
    for item in SHIPPED:
        assert f"{item.name}  (goes to {item.target})" in release
    installed = section(found, "probe installed")
    assert "install-files" in installed                          # chargepoint --help
    for item in SHIPPED:
        assert f"\n{item.name}\n" in f"\n{installed}"
    # The wheel's own dependencies do not include the demo's Central System.
    assert "needs the [csms] extra" in installed and "demo exit 2" in installed
    assert "Traceback" not in installed


def test_the_service_user_and_its_configuration(followed):
    found, _, scratch = followed
    assert re.search(r"uid=\d+\(chargepoint\) gid=\d+\(chargepoint\)",
                     section(found, "step user"))
    config = section(found, "probe config")
    assert "640 root chargepoint" in config
    assert "loads as chargepoint: CP-1" in config
    assert "others cannot read it" in config


def test_the_unit_verifies_and_the_service_is_enabled(followed):
    found, stand_ins, _ = followed
    assert section(found, "step service") == ""                   # verify said nothing
    assert stand_ins.index("systemctl daemon-reload") < \
        stand_ins.index("systemctl enable --now chargepoint")
    assert "udevadm control --reload" in stand_ins


def test_chargepoint_sim_reaches_the_service_in_its_runtime_directory(followed):
    found, _, scratch = followed
    assert "sim.sock" in section(found, "probe systemd starts the service")
    status = section(found, "step check")
    assert status.splitlines()[0].split()[:3] == ["conn", "pilot", "offered"]
    # Run by hand as the guide says, the outbox command finds the service's database.
    assert section(found, "step outbox").strip() == "0 message(s) given up (outbox_dead)."
    assert "stopped cleanly" in section(found, "probe systemd stops the service")
    log = (scratch / "service.log").read_text()
    assert "Traceback" not in log
    # ExecStartPre=: the release guard ran, as the service's user, before the firmware.
    assert log.index(f"release-guard: release {PREVIOUS_VERSION}") < log.index("starting as")


def test_upgrade_and_roll_back(followed):
    found, stand_ins, _ = followed
    upgrade = section(found, "step upgrade")
    assert "the unit is unchanged" in upgrade
    assert f"chargepoint {__version__}\n" in upgrade
    assert f"chargepoint {PREVIOUS_VERSION}\n" in section(found, "step rollback")
    assert "sudo cp -a /var/lib/chargepoint " \
           f"/var/lib/chargepoint.before-chargepoint-{__version__}" in stand_ins


def test_uninstall_leaves_nothing(followed):
    found, _, scratch = followed
    assert section(found, "probe nothing left").strip() == "checked"
