"""Files written whole or not at all, and on the card before the call returns.

A power cut may follow any write: a temporary file beside the target, its bytes synced,
one rename over the target, then the directory synced so that the rename itself survives.
A reader finds the old file or the new one, never a mix, and never a `.tmp` named as the
file. (The release guard and the S0 meter keep their own copies of these few lines: the
guard runs where no release can be imported, and `hal` imports nothing of `chargepoint`.)
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Optional


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make the names in `directory` (a rename, a new file, a deletion) survive a cut."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_whole(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data`, created with `mode` (never wider for a moment)."""
    with replacing(path, mode) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


@contextlib.contextmanager
def replacing(path: str | os.PathLike, mode: Optional[int] = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; when the block ends, it is synced
    and renamed over `path`. If the block raises, the temporary file is removed and
    `path` is untouched."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        os.close(fd)
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
