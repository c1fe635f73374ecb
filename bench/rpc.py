"""CALL round trips per second, beside the raw WebSocket echo rate of the same stack.

Why: OCPP-J allows one outstanding CALL per direction, so every exchange with the CSMS
is a strict ping-pong and its rate is set by the round trip. The physical limit of a
round trip is what the WebSocket stack itself needs: a frame from the server to a
websocket-client peer and back. This measures both in the same run, alternating:

- echo: `RawCsms.echo_loop` sends a frame the size of the CALL below to a separate
  process that runs websocket-client as chargepoint/transport.py does and sends every
  text frame straight back (bench/_common.py `ECHO_CLIENT`);
- firmware: the real `python -m chargepoint run` process; `RawCsms.call_loop` sends
  `GetConfiguration {"key": ["HeartbeatInterval"]}` and waits for each CALLRESULT before
  the next. The firmware's transport thread reads the frame, its loop parses and
  validates the CALL, runs the handler, checks and encodes the answer, and sends it.

Both run against `RawCsms`: a minimal `websockets` server with no `ocpp` library and no
thread hop per message. The bundled CSMS (chargepoint/csms/server.py `LocalCsms.call`)
validates every payload with the `ocpp` library, hops threads and logs each frame;
against it the CSMS is the bottleneck, not the charger. Its rate is shown for
comparison (fewer calls, one round).

Also reported: the CPU time per round trip of the client side (utime + stime of the
firmware process, all threads, or of the echo process, from /proc), which is what a
slower controller pays per CALL.

    .venv/bin/python bench/rpc.py                   # 5 rounds of 5,000 round trips each
    .venv/bin/python bench/rpc.py --rounds 9 --count 10000
    .venv/bin/python bench/rpc.py --quick           # 1 round of 300: a smoke test

Prints Markdown; `--json FILE` also writes the figures.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (CP_ID, ECHO_CLIENT, FirmwareProcess, RawCsms, Workdir, fmt,  # noqa: E402
                     machine, machine_lines, median, proc_cpu_s, quiet_csms, table)

TARGET_RATIO = 0.5
ACTION = "GetConfiguration"
PAYLOAD = {"key": ["HeartbeatInterval"]}


def measure_raw(workdir: Path, rounds: int, count: int) -> dict:
    raw = RawCsms().start()
    fw = echo = None
    try:
        fw = FirmwareProcess(workdir, raw.url, log_level="warning").start()
        raw.wait_for("BootNotification", timeout=20)
        raw.wait_for("StatusNotification", count=2, timeout=20)   # connectors 0 and 1
        echo = subprocess.Popen([sys.executable, "-c", ECHO_CLIENT, raw.url + "/ECHO"],
                                stdout=subprocess.PIPE, text=True)
        if echo.stdout.readline().strip() != "connected":
            raise RuntimeError("the echo client did not connect")
        raw.wait_connected("ECHO")
        frame = json.dumps([2, f"b{count}", ACTION, PAYLOAD], separators=(",", ":"))
        # Warm both paths up (first validator use, caches) before anything counts.
        raw.echo_loop("ECHO", min(200, count), frame)
        raw.call_loop(CP_ID, min(200, count), ACTION, PAYLOAD)
        echo_rates, fw_rates, ratios, cpu_us, echo_cpu_us = [], [], [], [], []
        for _ in range(rounds):
            cpu0 = proc_cpu_s(echo.pid)
            echo_s = raw.echo_loop("ECHO", count, frame)
            echo_cpu_us.append((proc_cpu_s(echo.pid) - cpu0) / count * 1e6)
            cpu0 = proc_cpu_s(fw.pid)
            fw_s = raw.call_loop(CP_ID, count, ACTION, PAYLOAD)
            cpu_us.append((proc_cpu_s(fw.pid) - cpu0) / count * 1e6)
            echo_rates.append(count / echo_s)
            fw_rates.append(count / fw_s)
            ratios.append(echo_s / fw_s)
        if fw.proc.poll() is not None:
            raise RuntimeError("the firmware stopped:\n" + fw.tail())
        return {"echo_per_s": echo_rates, "firmware_per_s": fw_rates, "ratio": ratios,
                "firmware_cpu_us_per_call": cpu_us, "echo_cpu_us_per_round_trip": echo_cpu_us,
                "frame_bytes": len(frame)}
    finally:
        if echo is not None:
            echo.kill()
            echo.wait()
        if fw is not None:
            fw.stop()
        raw.stop()


def measure_bundled(workdir: Path, count: int) -> float:
    csms = quiet_csms()
    fw = FirmwareProcess(workdir, csms.url, log_level="warning")
    try:
        fw.start()
        csms.wait_for("StatusNotification", cp_id=CP_ID, timeout=20)
        for _ in range(min(100, count)):
            csms.call(CP_ID, ACTION, PAYLOAD)
        started = time.perf_counter()
        for _ in range(count):
            csms.call(CP_ID, ACTION, PAYLOAD)
        return count / (time.perf_counter() - started)
    finally:
        fw.stop()
        csms.stop(graceful=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating echo/firmware "
                        "rounds")
    parser.add_argument("--count", type=int, default=5000, help="round trips per round")
    parser.add_argument("--quick", action="store_true", help="1 round of 300 (smoke test)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--dir", help="work directory (default: a new one in $TMPDIR)")
    args = parser.parse_args(argv)
    rounds, count = (1, 300) if args.quick else (args.rounds, args.count)

    with Workdir("bench-rpc-", base=args.dir) as root:
        raw = measure_raw(root / "raw", rounds, count)
        bundled = measure_bundled(root / "bundled", max(100, count // 5))

    ratio = median(raw["ratio"])
    out = {"machine": machine(), "rounds": rounds, "count": count, **raw,
           "bundled_csms_per_s": bundled, "median": {
               "echo_per_s": median(raw["echo_per_s"]),
               "firmware_per_s": median(raw["firmware_per_s"]), "ratio": ratio,
               "firmware_cpu_us_per_call": median(raw["firmware_cpu_us_per_call"]),
               "echo_cpu_us_per_round_trip": median(raw["echo_cpu_us_per_round_trip"])},
           "target_ratio": TARGET_RATIO}
    print("### Sequential CALL round trips over loopback\n")
    print("\n".join(machine_lines()))
    print(f"- {rounds} round(s) of {count:,} round trips each, echo and firmware "
          f"alternating; frame of {raw['frame_bytes']} bytes; medians over the rounds\n")
    print(table(("path", "round trips/s (median)", "min", "max",
                 "client CPU µs per round trip"), [
        ("raw WebSocket echo (websockets server ↔ websocket-client)",
         fmt(median(raw["echo_per_s"]), 0), fmt(min(raw["echo_per_s"]), 0),
         fmt(max(raw["echo_per_s"]), 0), fmt(median(raw["echo_cpu_us_per_round_trip"]), 0)),
        (f"firmware answering {ACTION} (raw websockets server)",
         fmt(median(raw["firmware_per_s"]), 0), fmt(min(raw["firmware_per_s"]), 0),
         fmt(max(raw["firmware_per_s"]), 0),
         fmt(median(raw["firmware_cpu_us_per_call"]), 0)),
        (f"firmware answering {ACTION} (bundled CSMS, `LocalCsms.call`)",
         fmt(bundled, 0), "", "", "–"),
    ]))
    print(f"\nFirmware ÷ echo, median of the per-round ratios: {fmt(ratio * 100, 0)} % "
          f"(target ≥ {TARGET_RATIO * 100:.0f} %: "
          f"{'met' if ratio >= TARGET_RATIO else 'missed'}).")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
