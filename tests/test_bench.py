"""The benchmark commands in bench/ work: each runs in its reduced form (`--quick`) and
reports figures that make sense. Timings are never asserted: they belong to the
machine, and docs/performance.md holds the measured ones.

The commands run at the same time, as separate processes, so this file takes about
as long as the slowest of them (hostile, about fifteen seconds).
"""
import json
import subprocess
import shutil
import sys
from pathlib import Path

import pytest

from tests.once import once_per_run

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ("footprint", "startup", "rpc", "drain", "hostile", "storage_check")
TIMEOUT_S = 90


@pytest.fixture(scope="module")
def runs(run_dir):
    """name -> (exit code, stdout, stderr, figures from --json) for every benchmark, run
    once per test run: the benchmarks load the machine, and twice at a time would skew
    each other (tests/once.py)."""
    return once_per_run(run_dir, "bench", run_benchmarks)


def run_benchmarks(folder: Path) -> dict:
    started = {}
    for name in BENCHES:
        workdir = folder / name                  # short: the sim's socket lives below
        shutil.rmtree(workdir, ignore_errors=True)      # a worker's failed try before
        workdir.mkdir()
        figures = workdir / "figures.json"
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--quick",
             "--json", str(figures), "--dir", str(workdir)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started[name] = (proc, figures)
    done = {}
    try:
        for name, (proc, figures) in started.items():
            out, err = proc.communicate(timeout=TIMEOUT_S)
            data = json.loads(figures.read_text()) if figures.exists() else None
            done[name] = (proc.returncode, out, err, data)
    finally:
        for proc, _ in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


def result(runs, name):
    code, out, err, data = runs[name]
    assert code == 0, f"bench/{name}.py --quick failed ({code}):\n{out}\n{err}"
    assert data is not None, f"bench/{name}.py wrote no figures:\n{out}\n{err}"
    assert "| ---" in out and "Python" in out, out                 # a Markdown report
    return out, data


def test_footprint_reports_memory_cpu_and_import_time(runs):
    out, data = result(runs, "footprint")
    assert data["runs"] == 1 and len(data["per_run"]) == 1
    for phase in ("idle", "charging"):
        m = data["median"][phase]
        assert 5 * 1024 < m["rss_kib"] < 1024 * 1024, m             # KiB: 5 MiB .. 1 GiB
        assert m["rss_kib"] <= m["rss_max_kib"] <= m["hwm_kib"], m
        assert 0 <= m["cpu_pct"] < 100 * 64, m
        assert m["seconds"] >= data["phase_s"], m
    assert data["median"]["charging"]["meter_values"] >= 1           # it really charged
    imports = data["imports"]
    assert all(us > 0 for us in imports["cli_us"] + imports["runtime_us"])
    assert all(s > 0 for s in imports["version_s"])
    assert "idle" in out and "charging" in out


def test_startup_reports_time_to_boot_notification(runs):
    out, data = result(runs, "startup")
    assert len(data["first_start_s"]) == len(data["restart_s"]) == data["runs"] >= 2
    assert all(0 < s < 60 for s in data["first_start_s"] + data["restart_s"])
    assert "BootNotification" in out


def test_rpc_reports_round_trips_beside_the_echo(runs):
    out, data = result(runs, "rpc")
    assert len(data["echo_per_s"]) == len(data["firmware_per_s"]) == data["rounds"]
    assert all(r > 0 for r in data["echo_per_s"] + data["firmware_per_s"])
    assert data["bundled_csms_per_s"] > 0
    assert all(us > 0 for us in data["firmware_cpu_us_per_call"])
    assert "echo" in out


def test_drain_delivers_every_queued_message_in_order(runs):
    out, data = result(runs, "drain")
    assert data["ok"], out
    for kind, rs in data["results"].items():
        assert len(rs) == data["runs"]
        for r in rs:
            assert r["messages"] == data["messages"] and not r["problems"], r
            assert r["per_s"] > 0 and r["seconds"] > 0, r
    assert "checked: ok" in out


def test_hostile_reports_every_scenario_with_the_contactor_opened(runs):
    out, data = result(runs, "hostile")
    assert data["ok"] and data["quick"], out
    scenarios = data["scenarios"]
    assert set(scenarios) == {"flood", "trickle", "fragments", "large", "trigger", "composite"}
    for name, s in scenarios.items():
        assert not s["problems"], (name, s["problems"])
        assert s["contactor_open_ms"] is not None and s["contactor_open_ms"] > 0, (name, s)
        assert 0 < s["worst_turn_ms"], (name, s)
        # VmHWM is kept from per-thread counters synced lazily: it may read a page or two
        # lower later on.
        assert 5 < s["rss_before_mib"] <= s["peak_rss_mib"] + 0.5 < 1024, (name, s)
    for name in ("flood", "trickle", "fragments"):             # these cost the link
        assert "dropped after" in scenarios[name]["link"] and "back" in scenarios[name]["link"]
    assert "(in fragments)" in scenarios["fragments"]["link"]
    assert "answered after" in scenarios["composite"]["link"]
    assert "worst loop turn ms" in out


def test_storage_check_reports_the_cost_of_the_checks_at_start(runs):
    out, data = result(runs, "storage_check")
    for name in ("header_s", "quick_check_s", "integrity_check_s", "content_s", "open_s",
                 "salvage_s"):
        assert 0 < data[name] < 60, (name, data[name])
    assert data["bytes"] > 0 and "integrity_check" in out


@pytest.mark.timeout(400)
def test_releases_reports_the_size_of_a_release_and_the_time_to_switch(tmp_path):
    """Run on its own: it builds and installs a release, longer than the others take."""
    figures = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "releases.py"), "--quick",
                           "--json", str(figures), "--dir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(figures.read_text())
    assert "| ---" in proc.stdout and "Python" in proc.stdout
    assert 1e6 < data["bundle_bytes"] < data["installed_bytes"] < 1e9, data
    assert data["bundle_wheels"] >= 10 and data["installed_files"] > 100
    assert 0 < data["build_s"] and 0 < data["install_s"]
    assert len(data["switch_s"]) == 1 and all(0 < s < 120 for s in data["switch_s"])
    assert len(data["update_s"]) == (1 if data["update_supported"] else 0)
