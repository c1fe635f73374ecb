"""The release guard's state machine on real directories, links and files: which release
is current, the trial and its counted starts, the rollback, the commit and the pruning,
and what `start` makes of every state a cut can leave. Releases here are directories with
a `bin/python` (a link to this interpreter): all the guard looks at.

The process-level cases (a release that cannot import, hangs, is switched to by a running
firmware) are tests/test_releases.py; a SIGKILL at each step is tests/test_release_kills.py.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chargepoint import release_guard as guard

ROOT = Path(__file__).resolve().parents[1]
POLICY = guard.Policy(trial_s=60, trial_starts=2, keep=3, watchdog_s=5)


def make_release(state: Path, version: str, installed_at: float = 0.0) -> Path:
    path = state / "releases" / version
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").symlink_to(sys.executable)
    (path / guard.RELEASE_INFO).write_text("{}")
    if installed_at:
        os.utime(path / guard.RELEASE_INFO, (installed_at, installed_at))
    return path


def logged() -> tuple[list[str], guard.Log]:
    lines: list[str] = []
    return lines, lambda level, text: lines.append(f"{level}: {text}")


@pytest.fixture
def state(tmp_path) -> Path:
    """Release 1.0 current, 1.1 installed beside it."""
    make_release(tmp_path, "1.0", 1000)
    make_release(tmp_path, "1.1", 2000)
    guard.switch(tmp_path, "1.0")
    return tmp_path


def test_the_guard_needs_nothing_but_the_standard_library():
    """It runs outside every release, with the system's python3 -I."""
    tree = ast.parse((ROOT / "chargepoint" / "release_guard.py").read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.level == 0}
    assert modules - {"__future__"} <= sys.stdlib_module_names, modules
    result = subprocess.run([sys._base_executable, "-I", str(ROOT / "chargepoint" /
                                                             "release_guard.py"), "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "supervise" in result.stdout, result.stderr


def test_a_trial_switches_and_counts_its_starts_then_rolls_back(state):
    lines, log = logged()
    trial = guard.begin_trial(state, "1.1", POLICY)
    assert (trial.version, trial.previous, trial.starts) == ("1.1", "1.0", 0)
    assert os.readlink(state / "releases" / "current") == "1.1"
    assert guard.start(state, log) == "release 1.1 on trial"
    assert guard.start(state, log) == "release 1.1 on trial"
    assert guard.read_trial(state).starts == 2
    assert guard.start(state, log) == "release 1.0 (rolled back)"
    assert guard.current_version(state) == "1.0" and guard.read_trial(state) is None
    rollback = guard.read_rollback(state)
    assert (rollback.version, rollback.previous, rollback.id) == ("1.1", "1.0", trial.id)
    assert "did not pass its trial in 2 starts" in rollback.reason
    assert "error: release 1.1 rolled back to 1.0: it did not pass its trial in 2 starts" \
        in lines
    assert guard.start(state, log) == "release 1.0"             # nothing more happens


def test_a_committed_release_stays_and_the_oldest_beyond_keep_go(tmp_path):
    for number, version in enumerate(["1.0", "1.1", "1.2", "1.3"]):
        make_release(tmp_path, version, 1000 + number)
    guard.switch(tmp_path, "1.2")
    guard.begin_trial(tmp_path, "1.3", POLICY)
    guard.start(tmp_path, logged()[1])
    with pytest.raises(guard.GuardError):
        guard.commit(tmp_path, "1.2")                    # not the release on trial
    assert guard.commit(tmp_path, "1.3", logged()[1]).version == "1.3"
    assert guard.read_trial(tmp_path) is None and guard.current_version(tmp_path) == "1.3"
    assert guard.installed(tmp_path) == ["1.1", "1.2", "1.3"]
    assert not (tmp_path / "releases" / "1.0").exists()
    assert guard.commit(tmp_path, "1.3") is None          # nothing on trial any more


def test_pruning_removes_only_the_link_of_a_release_installed_by_hand(tmp_path):
    venv = tmp_path / "opt" / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    (venv / "lib" / "python3.11" / "site-packages" / "chargepoint-0.9.dist-info").mkdir(
        parents=True)
    state = tmp_path / "state"
    assert guard.adopt(state, venv, logged()[1]) == "0.9"
    assert guard.current_version(state) == "0.9"
    for number, version in enumerate(["1.0", "1.1"]):
        make_release(state, version, 3_000_000_000 + number)
    guard.switch(state, "1.0")
    guard.begin_trial(state, "1.1", guard.Policy(keep=2))
    guard.commit(state, "1.1", logged()[1])
    assert guard.installed(state) == ["1.0", "1.1"]
    assert venv.is_dir() and (venv / "bin" / "python").exists()


def test_the_release_to_come_back_to_is_never_pruned(tmp_path):
    for number, version in enumerate(["1.0", "1.1", "1.2"]):
        make_release(tmp_path, version, 1000 + number)
    guard.switch(tmp_path, "1.0")                 # the oldest runs, and tries the newest
    guard.begin_trial(tmp_path, "1.2", guard.Policy(keep=2))
    guard.commit(tmp_path, "1.2", logged()[1])
    assert guard.installed(tmp_path) == ["1.0", "1.2"]


def test_start_finishes_a_switch_a_cut_interrupted(state):
    trial = guard.begin_trial(state, "1.1", POLICY)
    guard.switch(state, "1.0")            # as if the cut came between the trial and the link
    lines, log = logged()
    assert guard.start(state, log) == "release 1.1 on trial"
    assert guard.current_version(state) == "1.1"
    assert guard.read_trial(state).id == trial.id
    assert any("finishing the switch to release 1.1" in line for line in lines)


@pytest.mark.parametrize("switched", [False, True])
def test_start_finishes_a_rollback_a_cut_interrupted(state, switched):
    trial = guard.begin_trial(state, "1.1", POLICY)
    record = guard.RollbackRecord(id=trial.id, version="1.1", previous="1.0",
                                  reason="self-test failed", at=1.0)
    guard.write_json(state / "releases" / guard.ROLLBACK, record.__dict__)
    if switched:
        guard.switch(state, "1.0")
    assert guard.start(state, logged()[1]) == "release 1.0"
    assert guard.current_version(state) == "1.0" and guard.read_trial(state) is None
    assert guard.read_rollback(state).reason == "self-test failed"


def test_an_old_rollback_record_does_not_end_a_new_trial(state):
    guard.begin_trial(state, "1.1", POLICY)
    guard.roll_back(state, "first try failed", logged()[1])
    guard.begin_trial(state, "1.1", POLICY)
    assert guard.start(state, logged()[1]) == "release 1.1 on trial"


def test_a_release_on_trial_that_went_missing_is_rolled_back(state):
    guard.begin_trial(state, "1.1", POLICY)
    (state / "releases" / "1.1" / guard.INCOMPLETE).touch()
    assert guard.start(state, logged()[1]) == "release 1.0 (rolled back)"
    assert "missing or incomplete" in guard.read_rollback(state).reason
    assert not (state / "releases" / "1.1").exists()               # debris removed


def test_start_removes_what_an_interrupted_install_left(state):
    make_release(state, "1.2")
    (state / "releases" / "1.2" / guard.INCOMPLETE).touch()
    (state / "releases" / ".current.123.abcd").symlink_to("1.2")
    (state / "releases" / ".trial.json.x").write_text("{")
    lines, log = logged()
    assert guard.start(state, log) == "release 1.0"
    assert sorted(os.listdir(state / "releases")) == ["1.0", "1.1", "current"]
    assert "warning: removing release 1.2: its install did not finish" in lines


def test_a_current_link_to_nothing_falls_back_to_the_newest_release(state):
    guard.switch(state, "2.0")
    lines, log = logged()
    assert guard.start(state, log) == "release 1.1"
    assert guard.current_version(state) == "1.1"


def test_refusals(state):
    with pytest.raises(guard.GuardError, match="not installed completely"):
        guard.begin_trial(state, "1.5", POLICY)
    with pytest.raises(guard.GuardError, match="is the current one"):
        guard.begin_trial(state, "1.0", POLICY)
    guard.begin_trial(state, "1.1", POLICY)
    with pytest.raises(guard.GuardError, match="another release is on trial"):
        guard.begin_trial(state, "1.0", POLICY)
    with pytest.raises(guard.GuardError, match="not a release version"):
        guard.check_version("../etc")
    with pytest.raises(guard.GuardError, match="not a release version"):
        guard.check_version("current")


def test_use_by_hand_ends_a_trial_as_rolled_back(state):
    guard.begin_trial(state, "1.1", POLICY)
    guard.use(state, "1.0", logged()[1])
    assert guard.current_version(state) == "1.0" and guard.read_trial(state) is None
    assert guard.read_rollback(state).reason == "switched by hand to 1.0"
    with pytest.raises(guard.GuardError, match="not installed here"):
        guard.use(state, "7.0")


def test_a_damaged_trial_file_counts_as_none(state):
    (state / "releases" / guard.TRIAL).write_text('{"format": 1, "version": ')
    assert guard.read_trial(state) is None
    (state / "releases" / guard.TRIAL).write_text(json.dumps({"format": 99}))
    assert guard.read_trial(state) is None


def test_the_service_start_is_remembered_so_the_firmware_knows_it_is_guarded(state,
                                                                               monkeypatch):
    monkeypatch.delenv(guard.SUPERVISOR_ENV, raising=False)
    monkeypatch.setenv("INVOCATION_ID", "abc123")
    assert not guard.guarded(state)
    guard.start(state, logged()[1], invocation="abc123")
    assert guard.guarded(state)
    monkeypatch.setenv("INVOCATION_ID", "another-start")
    assert not guard.guarded(state)


def test_the_command_line_for_operators(state):
    guard.begin_trial(state, "1.1", POLICY)
    script = [sys._base_executable, "-I", str(ROOT / "chargepoint" / "release_guard.py")]
    run = lambda *args: subprocess.run([*script, *args], capture_output=True, text=True,
                                       timeout=30)
    shown = run("status", str(state))
    assert shown.returncode == 0
    assert "  1.0\n* 1.1\non trial: 1.1 (start 0 of 2, 60 s each to pass; previous 1.0)" \
        in shown.stdout
    assert run("start", str(state)).returncode == 0
    assert guard.read_trial(state).starts == 1
    assert run("use", str(state), "1.0").returncode == 0
    assert "last rollback: 1.1 -> 1.0" in run("status", str(state)).stdout
    refused = run("use", str(state), "9.9")
    assert refused.returncode == 1 and "release 9.9 is not installed here" in refused.stderr


def test_a_failing_check_never_keeps_the_service_from_starting(state):
    (state / "releases" / guard.GUARDED).mkdir()             # cannot be written over
    result = subprocess.run([sys._base_executable, "-I", str(ROOT / "chargepoint" /
                                                             "release_guard.py"),
                             "start", str(state)], capture_output=True, text=True,
                            timeout=30, env={**os.environ, "INVOCATION_ID": "x"})
    assert result.returncode == 0
    assert "the release check failed" in result.stderr


def test_a_trial_started_by_the_firmware_keeps_the_release_settings(state):
    """`releases.start_trial` takes `[releases]` as config.toml gives it."""
    from chargepoint import releases
    from chargepoint.config import ReleaseSettings

    releases.start_trial("1.1", state, ReleaseSettings(keep=4, trial_s=90, trial_starts=5,
                                                       watchdog_s=12))
    trial = guard.read_trial(state)
    assert (trial.keep, trial.trial_s, trial.trial_starts, trial.watchdog_s) == (4, 90, 5, 12)
    assert releases.trial(state).running_on_trial("1.1")
    with pytest.raises(releases.ReleaseError, match="cannot switch to release 1.0: "
                                                    "another release is on trial"):
        releases.start_trial("1.0", state)
