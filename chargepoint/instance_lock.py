"""One firmware process per database: an exclusive `flock` on `<database>.lock`.

A second process on the same database would salvage or recover the first one's live
file and stop its running transactions with PowerLoss while they go on charging. The
lock is taken before anything reads the database and is held until the process ends
(the kernel drops it with the process, so a SIGKILL leaves no stale lock behind). The
holder's pid is written into the file so the refusal can name it.
"""
from __future__ import annotations

import errno
import fcntl
import os
from typing import Optional

#: Exit status of `chargepoint run` when another process holds the database (EX_TEMPFAIL).
EXIT_IN_USE = 75


class AlreadyRunning(Exception):
    """Another process holds the database's lock."""

    def __init__(self, database: str, pid: Optional[int]):
        holder = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"{database} is in use by another chargepoint process ({holder}); "
                         f"not starting")
        self.database = database
        self.pid = pid


class InstanceLock:
    """The lock beside `database`; `held` is False where no lock file can exist yet (a
    read-only or missing directory): nothing can be written there by anyone then."""

    def __init__(self, database: str):
        self.database = database
        self.path = database + ".lock"
        self._fd: Optional[int] = None
        self._ident: Optional[tuple[int, int]] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock. Returns False if no lock file can be opened; raises
        AlreadyRunning if another process holds it."""
        if self._fd is not None:
            return True
        fd = self._open()
        if fd is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise AlreadyRunning(self.database, pid) from None
            raise
        self._fd = fd
        st = os.fstat(fd)
        self._ident = (st.st_dev, st.st_ino)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass                # read-only lock file, or no space: the lock holds anyway
        return True

    def _open(self) -> Optional[int]:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            try:                # a read-only filesystem still lets an existing file be locked
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        try:
            if os.fstat(fd).st_mode & 0o077:
                os.fchmod(fd, 0o600)
        except OSError:
            pass
        return fd

    def renew(self) -> None:
        """If the lock file was deleted or replaced (the directory emptied under the running
        firmware), lock a new one, so a second process cannot take the database meanwhile.
        Raises AlreadyRunning if one already did. Where no lock could be had at start (a
        read-only directory), tries again."""
        if self._fd is None:
            self.acquire()
            return
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == self._ident:
                return
        except OSError:
            pass
        old, self._fd = self._fd, None
        try:
            if not self.acquire():
                self._fd = old          # nowhere to put a new one: keep holding the old
                return
        except BaseException:
            os.close(old)
            raise
        os.close(old)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)          # closing the descriptor drops the flock
            self._fd = None


def _read_pid(fd: int) -> Optional[int]:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
