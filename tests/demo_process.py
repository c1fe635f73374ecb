"""`python -m chargepoint …` (the demo, or `run` against a CSMS of one's own) as a real
process in its own session, read line by line as its terminal would show it, with its
operator's stdin: the launcher of the tests that run the command itself."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]


class ChargepointProcess:
    def __init__(self, args: list[str], cwd: Path, env: dict,
                 command: Optional[list] = None):
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self.proc = subprocess.Popen(
            command or [sys.executable, "-m", "chargepoint", *args], cwd=cwd, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    @property
    def text(self) -> str:
        with self._seen:
            return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        with self._seen:
            assert self._seen.wait_for(lambda: any(text in line for line in self.lines),
                                       timeout), f"{text!r} not in the output:\n{self.text}"

    def wait_line(self, pattern: str, timeout: float = 30) -> re.Match:
        """The first line matching `pattern` (a regular expression), once there is one."""
        found: list[re.Match] = []

        def seen() -> bool:
            found[:] = [m for m in (re.search(pattern, line) for line in self.lines) if m]
            return bool(found)

        with self._seen:
            assert self._seen.wait_for(seen, timeout), \
                f"{pattern!r} not in the output:\n{''.join(self.lines)}"
        return found[0]

    def type(self, line: str) -> None:
        """What its operator types at the demo's prompt."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C, as a terminal sends it (SIGINT to the process group); its exit status.
        Killed, and the test failed, when it does not end within `timeout`."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


class Demo(ChargepointProcess):
    """`chargepoint demo ARGS`."""

    def __init__(self, args: list[str], cwd: Path, env: dict):
        super().__init__(["demo", *args], cwd, env)
