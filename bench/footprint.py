"""Footprint of the running firmware: memory, CPU, import time.

Why: charger makers run this on a small controller next to other services; what it
holds in memory and how much of a core it takes while idle and while charging decide
the board. This starts the real `python -m chargepoint run` process on simulated
hardware (bench/_common.py: config.toml's charger, MeterValueSampleInterval = 1)
against the bundled loopback CSMS (chargepoint/csms/server.py `LocalCsms`, in this
process, so its cost is not counted), and measures the firmware process only:

- idle: registered, nothing plugged in, for `--phase` seconds;
- charging: `plug 1` and `tap` over the sim control socket, a transaction with one
  MeterValues per second, for `--phase` seconds.

For each phase: VmRSS from /proc/<pid>/status (sampled every second: last and largest),
VmHWM (the peak RSS since the process started) at the phase's end, and CPU as
(utime + stime) from /proc/<pid>/stat over the wall time, in % of one core. Each run is
a new process; a few seconds after registration (or after the transaction started) are
left out of the phase so that start-up work is not counted as idle load.

Then the import time: the total for `python -X importtime -c "import chargepoint.cli"`
(what every `chargepoint` command loads), the same for `chargepoint.runtime` (what
`chargepoint run` loads in addition), and the wall time of `python -m chargepoint
--version`, beside `python -c pass` for the interpreter alone.

    .venv/bin/python bench/footprint.py              # 3 runs, 60 s phases (about 7 min)
    .venv/bin/python bench/footprint.py --quick      # 1 run, 3 s phases: a smoke test
    .venv/bin/python bench/footprint.py --runs 5 --phase 120

Prints Markdown; `--json FILE` also writes the figures. Linux only (/proc).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (ROOT, TAG, FirmwareProcess, Workdir, fmt, machine,  # noqa: E402
                     machine_lines, median, proc_cpu_s, proc_status, quiet_csms, table)

TARGET_RSS_MB = 35.0
TARGET_CPU_PCT = 1.0


def measure_phase(pid: int, seconds: float) -> dict:
    """RSS samples every second and the CPU share over `seconds` of wall time."""
    rss = []
    cpu0, wall0 = proc_cpu_s(pid), time.monotonic()
    end = wall0 + seconds
    while True:
        rss.append(proc_status(pid)["VmRSS"])
        now = time.monotonic()
        if now >= end:
            break
        time.sleep(min(1.0, end - now))
    cpu1, wall1 = proc_cpu_s(pid), time.monotonic()
    status = proc_status(pid)
    return {"seconds": wall1 - wall0, "cpu_s": cpu1 - cpu0,
            "cpu_pct": 100.0 * (cpu1 - cpu0) / (wall1 - wall0),
            "rss_kib": status["VmRSS"], "rss_max_kib": max(rss + [status["VmRSS"]]),
            "hwm_kib": status["VmHWM"], "samples": len(rss)}


def one_run(csms, workdir: Path, phase_s: float, settle_s: float) -> dict:
    fw = FirmwareProcess(workdir, csms.url, ocpp={"MeterValueSampleInterval": 1})
    mark = len(csms.received)
    fw.start()
    try:
        csms.wait_for("BootNotification", cp_id=fw_cp(fw), after=mark, timeout=20)
        csms.wait_for("StatusNotification", cp_id=fw_cp(fw), after=mark, timeout=20)
        fw.wait_sim()
        time.sleep(settle_s)
        idle = measure_phase(fw.pid, phase_s)

        fw.sim("plug", "1")
        fw.sim("tap", TAG)
        start = csms.wait_for("StartTransaction", after=mark, timeout=20)
        time.sleep(settle_s)
        before = len(csms.records("MeterValues", after=start.index))
        charging = measure_phase(fw.pid, phase_s)
        charging["meter_values"] = len(csms.records("MeterValues", after=start.index)) - before
        if fw.proc.poll() is not None:
            raise RuntimeError("the firmware stopped during the run:\n" + fw.tail())
    finally:
        code = fw.stop()
    if code != 0:
        raise RuntimeError(f"the firmware exited with {code}:\n" + fw.tail())
    return {"idle": idle, "charging": charging}


def fw_cp(fw: FirmwareProcess) -> str:
    match = re.search(r'charge_point_id = "([^"]+)"', fw.config.read_text())
    return match.group(1)


def import_time_us(module: str) -> int:
    """Cumulative µs of `module` as `python -X importtime` reports it."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stderr
    for line in reversed(out.splitlines()):
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1])
    raise RuntimeError(f"no import time for {module} in:\n{out[-2000:]}")


def wall_s(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, check=True)
    return time.perf_counter() - started


def imports(runs: int) -> dict:
    wall_s(["-c", "import chargepoint.runtime"])                   # warm the page cache
    cli = [import_time_us("chargepoint.cli") for _ in range(runs)]
    runtime = [import_time_us("chargepoint.runtime") for _ in range(runs)]
    version = [wall_s(["-m", "chargepoint", "--version"]) for _ in range(runs)]
    bare = [wall_s(["-c", "pass"]) for _ in range(runs)]
    return {"runs": runs, "cli_us": cli, "runtime_us": runtime, "version_s": version,
            "python_s": bare}


def mib(kib: float) -> str:
    return fmt(kib / 1024, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="firmware processes measured")
    parser.add_argument("--phase", type=float, default=60.0, help="seconds per phase")
    parser.add_argument("--quick", action="store_true",
                        help="1 run of 3 s phases, 3 import runs (a smoke test)")
    parser.add_argument("--import-runs", type=int, default=7)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--dir", help="work directory (default: a new one in $TMPDIR)")
    args = parser.parse_args(argv)
    runs, phase = args.runs, args.phase
    if args.quick:
        runs, phase = 1, 3.0
    settle = 3.0 if phase >= 30 else 1.0

    csms = quiet_csms()
    results = []
    try:
        with Workdir("bench-footprint-", base=args.dir) as root:
            for i in range(runs):
                results.append(one_run(csms, root / f"run{i}", phase, settle))
    finally:
        csms.stop(graceful=False)
    imp = imports(max(1, args.import_runs if not args.quick else 3))

    def med(phase_name: str, key: str) -> float:
        return median(r[phase_name][key] for r in results)

    summary = {}
    for name in ("idle", "charging"):
        summary[name] = {key: med(name, key) for key in
                         ("rss_kib", "rss_max_kib", "hwm_kib", "cpu_pct", "seconds")}
    summary["charging"]["meter_values"] = med("charging", "meter_values")
    out = {"machine": machine(), "runs": runs, "phase_s": phase, "per_run": results,
           "median": summary, "imports": imp,
           "targets": {"rss_mb": TARGET_RSS_MB, "cpu_pct": TARGET_CPU_PCT}}

    print("### Footprint of `chargepoint run` (simulated hardware, loopback CSMS)\n")
    print("\n".join(machine_lines()))
    print(f"- {runs} run(s), each a new process: idle {fmt(phase, 0)} s, then charging "
          f"{fmt(phase, 0)} s with MeterValueSampleInterval = 1 "
          f"({fmt(summary['charging']['meter_values'], 0)} MeterValues in the charging "
          "phase, median); medians over the runs\n")
    rows = []
    for name in ("idle", "charging"):
        s = summary[name]
        rows.append((name, mib(s["rss_kib"]), mib(s["rss_max_kib"]), mib(s["hwm_kib"]),
                     fmt(s["cpu_pct"], 2)))
    print(table(("phase", "VmRSS MiB (end)", "VmRSS MiB (max)", "VmHWM MiB",
                 "CPU % of one core"), rows))
    hwm = max(r["charging"]["hwm_kib"] for r in results)
    cpu = max(summary["idle"]["cpu_pct"], summary["charging"]["cpu_pct"])
    print(f"\nTargets: RSS ≤ {TARGET_RSS_MB:.0f} MB: peak VmHWM {mib(hwm)} MiB = "
          f"{fmt(hwm * 1024 / 1e6, 1)} MB, "
          f"{'met' if hwm * 1024 / 1e6 <= TARGET_RSS_MB else 'missed'}; "
          f"CPU ≤ {TARGET_CPU_PCT:.0f} %: {fmt(cpu, 2)} %, "
          f"{'met' if cpu <= TARGET_CPU_PCT else 'missed'}.\n")
    print(f"Import time, median of {imp['runs']}:\n")
    print(table(("what", "median", "min", "max"), [
        ('`python -X importtime -c "import chargepoint.cli"` (total)',
         f"{fmt(median(imp['cli_us']) / 1000, 1)} ms", f"{fmt(min(imp['cli_us']) / 1000, 1)} ms",
         f"{fmt(max(imp['cli_us']) / 1000, 1)} ms"),
        ('`python -X importtime -c "import chargepoint.runtime"` (total)',
         f"{fmt(median(imp['runtime_us']) / 1000, 1)} ms",
         f"{fmt(min(imp['runtime_us']) / 1000, 1)} ms",
         f"{fmt(max(imp['runtime_us']) / 1000, 1)} ms"),
        ("`python -m chargepoint --version` (wall)",
         f"{fmt(median(imp['version_s']) * 1000, 0)} ms",
         f"{fmt(min(imp['version_s']) * 1000, 0)} ms",
         f"{fmt(max(imp['version_s']) * 1000, 0)} ms"),
        ("`python -c pass` (wall, the interpreter alone)",
         f"{fmt(median(imp['python_s']) * 1000, 0)} ms",
         f"{fmt(min(imp['python_s']) * 1000, 0)} ms",
         f"{fmt(max(imp['python_s']) * 1000, 0)} ms"),
    ]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
