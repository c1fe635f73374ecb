#!/usr/bin/env python3
"""Run the demo or the test suite in a project-local virtual environment.

    python3 dev.py demo     simulated charger against a bundled local CSMS
    python3 dev.py test     the whole test suite (extra arguments go to pytest)

The first use creates `.venv/` and installs the project with its test extras;
later uses reinstall only when pyproject.toml has changed. Needs only Python 3.11+.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".installed-from"


def _venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_env() -> Path:
    if sys.version_info < (3, 11):
        sys.exit(f"Python 3.11 or newer is needed; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    python = _venv_python()
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return python
    if not python.exists():
        print(f"Creating virtual environment in {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    print("Installing chargepoint and its test tools (first use only) ...", flush=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-e", f"{ROOT}[test]"],
        check=True,
    )
    STAMP.write_text(wanted)
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__.strip())
        return 2
    python = ensure_env()
    if argv[0] == "demo":
        cmd = [str(python), "-m", "chargepoint", "demo", *argv[1:]]
    else:
        cmd = [str(python), "-m", "pytest", *argv[1:]]
    # Ctrl-C reaches the child too (same process group): let it stop cleanly, then return.
    child = subprocess.Popen(cmd, cwd=ROOT)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
