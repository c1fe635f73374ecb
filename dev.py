#!/usr/bin/env python3
"""Run the demo or the test suite in a project-local virtual environment, lock the
dependencies and build a release.

    python3 dev.py demo     simulated charger against a bundled local CSMS
    python3 dev.py test     the whole test suite (extra arguments go to pytest)
    python3 dev.py lock     requirements/*.txt again from pyproject.toml (--upgrade: newest)
    python3 dev.py release  dist/chargepoint-<version>/: the wheel, the locks, SHA256SUMS

The first use creates `.venv/` and installs the project with its test extras;
later uses reinstall only when pyproject.toml has changed. Needs only Python 3.11+.
The release process is described in docs/release.md.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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


#: The lock tool, installed into .venv only when locking (never a dependency of the
#: firmware); pinned so that the same pyproject.toml gives the same lock files.
UV = "uv==0.13.9"

#: requirements/NAME.txt: the extras locked with the runtime dependencies. The
#: controller is a Raspberry Pi on Python 3.11 (Bookworm); --universal keeps every
#: platform's wheel hashes, so the same file installs on the Pi and on a desktop.
LOCKS = {"runtime": [], "pi": ["pi"]}


def lock(python: Path, extra_args: list[str]) -> int:
    """Write requirements/*.txt with uv: exact pins and every file's sha256 (pip's
    --require-hashes refuses anything else)."""
    uv = VENV / "bin" / "uv"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", UV], check=True)
    (ROOT / "requirements").mkdir(exist_ok=True)
    for name, extras in LOCKS.items():
        cmd = [str(uv), "pip", "compile", "pyproject.toml", "--quiet", "--generate-hashes",
               "--universal", "--python-version", "3.11",
               "--custom-compile-command", "python3 dev.py lock",
               *[f"--extra={extra}" for extra in extras],
               "-o", f"requirements/{name}.txt", *extra_args]
        result = subprocess.run(cmd, cwd=ROOT)
        if result.returncode:
            return result.returncode
        print(f"requirements/{name}.txt")
    return 0


#: Never copied into a build: a stale build/lib would put deleted modules in the wheel.
_NOT_BUILT_FROM = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                         "__pycache__", ".pytest_cache", ".hypothesis",
                                         "var", "*.db", "*.db-wal", "*.db-shm")


def build_wheel(source: Path, wheel_dir: Path, python: str | Path = sys.executable) -> str:
    """Build the wheel of the tree at `source` into `wheel_dir`; returns the build's
    verbose output. Built from a copy, so the tree gets no root-owned build/ or
    *.egg-info and nothing stale from an earlier build gets in."""
    with tempfile.TemporaryDirectory(prefix="chargepoint-build-") as tmp:
        tree = Path(tmp) / "src"
        shutil.copytree(source, tree, ignore=_NOT_BUILT_FROM)
        result = subprocess.run(
            [str(python), "-m", "pip", "wheel", "--no-deps", "--verbose",
             "--disable-pip-version-check", "-w", str(wheel_dir), str(tree)],
            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"building the wheel failed:\n{result.stdout}{result.stderr}")
    return result.stdout + result.stderr


def build_release(source: Path, dist: Path, python: str | Path = sys.executable) -> Path:
    """dist/chargepoint-<version>/: the wheel, the lock files, SHA256SUMS of them all.

    Everything systemd/README-install.md needs on the controller, in one directory."""
    with tempfile.TemporaryDirectory(prefix="chargepoint-wheel-") as tmp:
        build_wheel(source, Path(tmp), python)
        (wheel,) = Path(tmp).glob("chargepoint-*.whl")
        release = dist / wheel.name.split("-py3-")[0]
        if release.exists():
            shutil.rmtree(release)
        release.mkdir(parents=True)
        shutil.copy2(wheel, release / wheel.name)
    for name in LOCKS:
        shutil.copy2(source / "requirements" / f"{name}.txt",
                     release / f"requirements-{name}.txt")
    sums = [f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}\n"
            for f in sorted(release.iterdir())]
    (release / "SHA256SUMS").write_text("".join(sums))
    return release


#: pytest-xdist's worker processes at most: most tests wait on sockets and child
#: processes, so two workers halve the suite's time on two cores.
MAX_WORKERS = 4


def _workers(args: list[str]) -> list[str]:
    """`-n N --dist loadgroup` (one worker per core, up to MAX_WORKERS) unless the
    arguments choose (`-n`, `--dist`, `-p no:xdist`)."""
    if any(a.startswith(("-n", "--numprocesses", "--dist")) or a == "no:xdist" for a in args):
        return []
    workers = min(MAX_WORKERS, os.cpu_count() or 1)
    return ["-n", str(workers), "--dist", "loadgroup"] if workers > 1 else []


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "lock", "release"):
        print(__doc__.strip())
        return 2
    python = ensure_env()
    if argv[0] == "lock":
        return lock(python, argv[1:])
    if argv[0] == "release":
        release = build_release(ROOT, ROOT / "dist", python)
        for path in sorted(release.iterdir()):
            print(path.relative_to(ROOT))
        return 0
    if argv[0] == "demo":
        cmd = [str(python), "-m", "chargepoint", "demo", *argv[1:]]
    else:
        cmd = [str(python), "-m", "pytest", *_workers(argv[1:]), *argv[1:]]
    # Ctrl-C reaches the child too (same process group): let it stop cleanly, then return.
    child = subprocess.Popen(cmd, cwd=ROOT)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
