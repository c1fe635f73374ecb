"""The README's demo command, run for real: boot, heartbeat, sim control, clean Ctrl-C."""
import os
import signal
import subprocess
import sys
import time
from tests.demo_process import ROOT, Demo


def test_demo_boots_heartbeats_obeys_sim_commands_and_stops_on_ctrl_c(tmp_path):
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    demo = Demo(["--heartbeat", "1"], cwd=ROOT, env=env)
    try:
        demo.wait_for("→ BootNotification")
        demo.wait_for("connector 1: Available")
        demo.wait_for("→ Heartbeat")
        sim = subprocess.run([sys.executable, "-m", "chargepoint", "sim", "plug", "1"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
        assert sim.returncode == 0, sim.stdout + sim.stderr
        demo.wait_for("connector 1: Preparing")
        status = subprocess.run([sys.executable, "-m", "chargepoint", "sim", "status"],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
        assert status.returncode == 0 and "B" in status.stdout
    finally:
        code = demo.interrupt(timeout=20)
    assert code == 0
    assert "Demo stopped." in demo.text
    assert "Traceback" not in demo.text


def test_readme_demo_command_returns_only_after_the_demo_stopped(tmp_path):
    """`python3 dev.py demo` + Ctrl-C (SIGINT to the whole process group, as a terminal
    sends it): the command returns once the firmware has stopped cleanly."""
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "dev.py", "demo", "--heartbeat", "1"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    out = b""
    try:
        deadline = time.monotonic() + 60
        while b"connector 1: Available" not in out and time.monotonic() < deadline:
            out += proc.stdout.read1(4096)
        assert b"connector 1: Available" in out, out.decode()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        os.set_blocking(proc.stdout.fileno(), False)
        out += proc.stdout.read() or b""
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert b"Demo stopped." in out, out.decode()
