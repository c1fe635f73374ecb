"""`chargepoint run` as systemd runs it: READY, STATUS and WATCHDOG on a real datagram socket."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_config(tmp_path, url):
    text = (ROOT / "config.toml").read_text()
    text = text.replace('url = "ws://127.0.0.1:9000/ocpp"', f'url = "{url}"')
    text = text.replace("[storage]", f'[storage]\npath = "{tmp_path / "cp.db"}"')
    text = text.replace("[system]", f'[system]\nsim_socket = "{tmp_path / "sim.sock"}"')
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_run_notifies_systemd_and_feeds_the_watchdog_from_the_loop(tmp_path, csms):
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.5)
    config = write_config(tmp_path, csms.url)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="400000")
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "chargepoint", "run", "--config", str(config)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                messages.extend(sock.recv(4096).decode().splitlines())
            except socket.timeout:
                pass
            if (messages.count("WATCHDOG=1") >= 3
                    and any("registration Accepted" in m for m in messages)):
                break
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        try:
            while True:
                messages.extend(sock.recv(4096).decode().splitlines())
        except socket.timeout:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert proc.returncode == 0, out
    assert "READY=1" in messages
    assert any(m.startswith("STATUS=") and "online, registration Accepted" in m
               for m in messages), messages
    assert messages.count("WATCHDOG=1") >= 3
    assert "STOPPING=1" in messages
    assert messages.index("READY=1") < messages.index("STOPPING=1")


def test_a_reset_restarts_in_place_without_telling_systemd_it_stops(tmp_path, csms):
    """STOPPING=1 tells systemd that the service is ending by itself: it then sends no
    SIGTERM of its own (not even for a reboot) and kills the process TimeoutStopSec later.
    A Reset restarts the process in place, the same PID, so it must not say it; the
    restarted process says READY=1 again. Only the final stop says STOPPING=1."""
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(0.2)
    config = write_config(tmp_path, csms.url)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path)
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", "chargepoint", "run", "--config", str(config)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    messages: list[str] = []

    def collect_until(done, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            try:
                messages.extend(sock.recv(4096).decode().splitlines())
            except socket.timeout:
                pass

    try:
        collect_until(lambda: any("registration Accepted" in m for m in messages), 20)
        assert csms.call("CP-1", "Reset", {"type": "Soft"}) == {"status": "Accepted"}
        collect_until(lambda: messages.count("READY=1") >= 2, 30)
        restarted = list(messages)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        collect_until(lambda: False, 0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
    assert proc.returncode == 0, out
    assert restarted.count("READY=1") == 2, (restarted, out)
    assert "STOPPING=1" not in restarted, restarted
    assert messages[len(restarted):].count("STOPPING=1") == 1, messages
