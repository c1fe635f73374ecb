"""A SIGKILL at every step of installing, switching to, committing and rolling back a
release (tests/release_kill_driver.py), each followed by the next start of the service as
the unit makes it (the release guard, then the current release: tests/release_harness.py
ServiceStandIn): the old or the new release boots and reaches the CSMS, never neither,
and the releases are left consistent.

What "consistent" means after the start: `current` names a complete release and it is
the one that booted; the new release runs only on trial (or committed by the commit
step); no half-installed release or temporary file is left; a rollback that was decided
is finished and says why. A kill during pip's install (not between two steps) is one
case more.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chargepoint import __version__
from chargepoint import release_guard as guard
from chargepoint import releases
from chargepoint.csms.server import LocalCsms
from tests.release_harness import (ROOT, ServiceStandIn, accept_only, clean_env,
                                   write_config)

NEW = f"{__version__}.1"

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def bundle(bundle_shelf):
    return bundle_shelf.get(NEW)


@pytest.fixture(scope="module")
def on_trial(bundle, tmp_path_factory):
    """A state directory where NEW is installed and on trial, after this checkout's
    release and an older one installed before it (which a commit prunes: keep 2)."""
    state = tmp_path_factory.mktemp("on-trial") / "state"
    old = state / "releases" / "0.0.1"
    (old / "bin").mkdir(parents=True)
    (old / "bin" / "python").symlink_to(sys.executable)
    (old / guard.RELEASE_INFO).write_text("{}")
    os.utime(old / guard.RELEASE_INFO, (1, 1))
    guard.adopt(state, sys.prefix)
    guard.switch(state, __version__)
    releases.install_bundle(bundle, state)
    guard.begin_trial(state, NEW, guard.Policy(trial_s=120, trial_starts=3, keep=2))
    return state


@pytest.fixture(scope="module")
def csms():
    server = LocalCsms(host="127.0.0.1", port=0)
    server.boot_response = accept_only(__version__)    # NEW stays on trial when it boots
    server.start()
    yield server
    server.stop(graceful=False)


def driver(scenario: str, state: Path, bundle: Path, kill_at: int,
           kill_during: str = "", after_s: float = 0.0) -> tuple[int, str]:
    """Run the driver; with `kill_during`, SIGKILL it `after_s` after that step began."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.release_kill_driver", scenario,
                             str(state), str(bundle), NEW, str(kill_at)], cwd=ROOT,
                            env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if kill_during and line.startswith("step ") and kill_during in line:
            time.sleep(after_s)
            proc.kill()
            lines.append(f"(killed {after_s} s into that step)\n")
            break
    proc.wait(600)
    return proc.returncode, "".join(lines)


def boot_after(state: Path, csms, tmp_path: Path, cp_id: str) -> str:
    """The next start of the service; the version that reached the CSMS."""
    mark = len(csms.received)
    service = ServiceStandIn(tmp_path, write_config(tmp_path, csms.url, cp_id), state).start()
    try:
        boot = csms.wait_for("BootNotification", cp_id=cp_id, after=mark, timeout=60)
    except TimeoutError:
        service.stop()
        raise AssertionError(f"nothing booted:\n{service.text()[-3000:]}") from None
    service.stop()
    return boot["firmwareVersion"]


def check_consistent(state: Path, booted: str, committed_ok: bool) -> list[str]:
    problems = []
    current = guard.current_version(state)
    trial = guard.read_trial(state)
    rollback = guard.read_rollback(state)
    if booted not in (__version__, NEW):
        problems.append(f"booted {booted}")
    if current != booted:
        problems.append(f"current is {current}, {booted} booted")
    if current is None or not guard.is_complete(state, current):
        problems.append(f"current {current} is not a complete release")
    if booted == NEW and trial is None and not committed_ok:
        problems.append("the new release runs without a trial")
    if trial is not None and rollback is not None and trial.id == rollback.id:
        problems.append("a rollback was decided but not finished")
    if rollback is not None and booted == NEW and trial is not None \
            and rollback.version == NEW and rollback.id == trial.id:
        problems.append("the rolled back release runs")
    for name in os.listdir(state / "releases"):
        path = state / "releases" / name
        if name.startswith(".") or (path / guard.INCOMPLETE).exists():
            problems.append(f"left behind: releases/{name}")
    return problems


def run_every_step(scenario: str, template: Path, bundle: Path, csms, tmp_path: Path,
                   committed_ok: bool = False, extra: tuple = ()) -> list[str]:
    """Kill at each step in turn (and at the `extra` moments), start, check."""
    code, dry = driver(scenario, template_copy(template, tmp_path / "dry"), bundle, 0)
    assert code == 0, dry
    total = int(dry.strip().splitlines()[-1].split()[-1])
    assert total >= 3, dry
    cases = [(n, "", 0.0) for n in range(1, total + 1)] + list(extra)
    outcomes = []
    for number, (kill_at, during, after_s) in enumerate(cases):
        work = tmp_path / f"case-{number}"
        state = template_copy(template, work / "state")
        code, output = driver(scenario, state, bundle, kill_at, during, after_s)
        assert code == -signal.SIGKILL, f"the driver was not killed:\n{output}"
        where = output.strip().splitlines()[-1]
        booted = boot_after(state, csms, work, f"CP-K{scenario[:2]}{number}")
        problems = check_consistent(state, booted, committed_ok)
        assert not problems, f"{scenario}, killed at {where}: {problems}\n" \
                             f"{guard.status(state)}"
        outcomes.append(f"{where} -> {booted}")
    return outcomes


def template_copy(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, symlinks=True)
    for release in (dest / "releases").iterdir():           # scripts point at the copy
        bin_dir = release / "bin"
        if release.is_symlink() or not bin_dir.is_dir():
            continue
        for script in bin_dir.iterdir():
            if script.is_file() and not script.is_symlink() and \
                    script.read_bytes()[:2] == b"#!":
                script.write_text(script.read_text().replace(str(template), str(dest), 1))
    return dest


def test_a_kill_at_every_step_of_an_install_and_switch(bundle, csms, tmp_path):
    template = tmp_path / "template"
    guard.adopt(template, sys.prefix)
    outcomes = run_every_step("install", template, bundle, csms, tmp_path,
                              extra=[(0, "run python", 1.5)])      # in the midst of pip
    print("\n".join(outcomes))
    assert outcomes[0].endswith(f"-> {__version__}")             # nothing switched yet
    assert outcomes[-2].endswith(f"-> {NEW}")    # before the link's rename: the start does it
    versions = {line.rsplit(" ", 1)[-1] for line in outcomes}
    assert versions == {__version__, NEW}


def test_a_kill_at_every_step_of_a_commit(on_trial, bundle, csms, tmp_path):
    outcomes = run_every_step("commit", on_trial, bundle, csms, tmp_path, committed_ok=True)
    print("\n".join(outcomes))
    assert all(line.endswith(f"-> {NEW}") for line in outcomes)


def test_a_kill_at_every_step_of_a_rollback(on_trial, bundle, csms, tmp_path):
    outcomes = run_every_step("rollback", on_trial, bundle, csms, tmp_path)
    print("\n".join(outcomes))
    assert outcomes[0].endswith(f"-> {NEW}")               # before the reason was written
    assert outcomes[-1].endswith(f"-> {__version__}")
