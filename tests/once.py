"""What a test run makes once, whichever of its pytest-xdist workers asks first.

A module-scoped fixture runs once per worker that runs one of the module's tests, and
pytest-xdist's `xdist_group` no longer keeps a module on one worker (pytest 9.2). Work
that is slow (the benchmarks) or that must not run twice at a time (the install guide
makes a system user) goes through `once_per_run`: the first worker does it behind a lock
file in the folder the run's workers share (conftest.py `run_dir`) and keeps its result
there; the others wait for the lock and read it."""
from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any, Callable


def once_per_run(run_dir: Path, name: str, make: Callable[[Path], Any]) -> Any:
    """`make(folder)`'s result (JSON: tuples come back as lists), made once per run in
    `run_dir/name`. A `make` that raises leaves nothing, and the next worker tries again."""
    folder = run_dir / name
    folder.mkdir(exist_ok=True)
    done = folder / "result.json"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            result = make(folder)
            partial = folder / "result.json.part"
            partial.write_text(json.dumps(result))
            partial.replace(done)
        return json.loads(done.read_text())
