"""`python -m chargepoint demo …` as a real process in its own session, read line by line
as its terminal would show it, with its operator's stdin: the demo tests' one launcher."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]


class Demo:
    def __init__(self, args: list[str], cwd: Path, env: dict, command: Optional[list] = None):
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self.proc = subprocess.Popen(
            command or [sys.executable, "-m", "chargepoint", "demo", *args], cwd=cwd, env=env,
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
                                       timeout), f"{text!r} not in demo output:\n{self.text}"

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
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
