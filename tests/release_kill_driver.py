"""One step of an update, done as the firmware does it, killed (SIGKILL) at the Nth change
of the releases on the disk: what a power cut at that moment leaves behind.

    python -m tests.release_kill_driver SCENARIO STATE_DIR BUNDLE VERSION KILL_AT

SCENARIO: `install` (install_bundle, then start_trial), `commit` (the launch of the
release on trial, then commit), `rollback` (the release on trial given up). A change is a
rename, link, unlink, mkdir or tree removal of a path directly in `releases/` or of a
release directory's own bookkeeping (`.incomplete`, `release.json`, the unpacked bundle),
and every subprocess (pip, the release's first run): the steps of the state machine, not
the thousands of files pip writes. Each is printed (`step N: …`) before it is done; the
KILL_AT-th is never done. KILL_AT 0 runs to the end: the count of steps is the last line.

The kill reaches only this process, as a cut would: a pip it started dies with it
(PR_SET_PDEATHSIG), so nothing finishes the step behind the test's back.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from chargepoint import release_guard as guard
from chargepoint import releases

STEPS = 0


def main() -> None:
    scenario, state, bundle, version, kill_at = sys.argv[1:6]
    folder = Path(state).resolve() / "releases"
    limit = int(kill_at)

    def counted(path) -> bool:
        try:
            parts = Path(os.path.abspath(path)).relative_to(folder).parts
        except ValueError:
            return False
        return len(parts) == 1 or (len(parts) == 2 and parts[1] in (
            guard.INCOMPLETE, guard.RELEASE_INFO, ".bundle"))

    def step(what: str) -> None:
        global STEPS
        STEPS += 1
        print(f"step {STEPS}: {what}", flush=True)
        if STEPS == limit:
            os.kill(os.getpid(), signal.SIGKILL)

    def hook(name, function, which=0):
        def wrapped(*args, **kwargs):
            path = args[which] if len(args) > which else kwargs.get("dst", "")
            if counted(path):
                step(f"{name} {Path(os.path.abspath(path)).relative_to(folder.parent)}")
            return function(*args, **kwargs)
        return wrapped

    os.replace = hook("replace", os.replace, 1)
    os.rename = hook("rename", os.rename, 1)
    os.symlink = hook("symlink", os.symlink, 1)
    os.unlink = hook("unlink", os.unlink)
    os.mkdir = hook("mkdir", os.mkdir)
    os.rmdir = hook("rmdir", os.rmdir)
    shutil.rmtree = hook("rmtree", shutil.rmtree)
    run = subprocess.run

    def run_counted(command, *args, **kwargs):
        step(f"run {Path(command[0]).name} {' '.join(map(str, command[1:3]))}")
        kwargs.setdefault("preexec_fn", guard._die_with_parent)
        return run(command, *args, **kwargs)

    subprocess.run = run_counted

    policy = guard.Policy(trial_s=120, trial_starts=3, keep=2)
    if scenario == "install":
        releases.install_bundle(bundle, state)
        releases.start_trial(version, state, policy)
    elif scenario == "commit":
        guard.start(state)
        guard.commit(state, version)
    elif scenario == "rollback":
        guard.roll_back(state, "self-test failed")
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    print(f"steps {STEPS}", flush=True)


if __name__ == "__main__":
    main()
