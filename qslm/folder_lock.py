"""One job per output folder: an advisory lock (``flock``) on ``LOCK_FILE`` inside the folder, held from
the claim (before the manifest is read) to the job's end, so a second job claiming the same folder
meanwhile is refused with a line naming the holder (pid, host, start, command). The kernel drops the lock
when the holding process dies, however it dies; an orderly release also removes the file."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import sys
import threading
import time
import weakref
from pathlib import Path

from .errors import QslmError

LOCK_FILE = ".qslm-lock"
LOCK_ATTEMPTS = 5  # a finishing job may remove the lock file between our open and our flock: try again
SHOWN_COMMAND = 200  # characters of the holder's command line, named in the message


class FolderLock:
    """The advisory lock (``flock``) on an output folder's ``LOCK_FILE``, held while one job writes there.

    Claims of one folder nested in one thread (the command line claims ``--out`` before it loads anything,
    then the library function it calls claims the folder again) share the lock; any other claim, in this
    process or another, opens the file anew, which is a separate open file description, and is refused
    while the lock is held."""

    # held lock files by (device, inode, thread); an inode stays in use while its lock is open, so a key
    # never names a deleted folder's lock
    _held: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
    _guard = threading.Lock()

    def __init__(self, path: Path, fd: int, key: tuple[int, int, int]):
        self.path, self.fd, self.key, self.users = path, fd, key, 1

    @classmethod
    def acquire(cls, folder: Path) -> FolderLock:
        """Lock ``folder`` for this job, or raise QslmError naming the job that holds it."""
        path = folder / LOCK_FILE
        try:
            existing = os.stat(path)
        except OSError:
            existing = None
        if existing is not None:
            with cls._guard:
                held = cls._held.get((existing.st_dev, existing.st_ino, threading.get_ident()))
                if held is not None and held.fd is not None:
                    held.users += 1
                    return held
        for _ in range(LOCK_ATTEMPTS):
            fd = _open_lock_file(folder, path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise QslmError(f"output folder {folder} is in use by another qslm job ({holder}); wait for it "
                                f"to end, or choose another folder") from None
            except OSError as err:
                os.close(fd)
                raise QslmError(f"cannot lock output folder {folder}: {err.strerror or err}") from None
            if _same_file(fd, path):
                break
            os.close(fd)  # the job that held it ended and removed this file after we opened it: lock anew
        else:
            raise QslmError(f"cannot lock output folder {folder}: its lock file {LOCK_FILE} keeps being replaced")
        _write_holder(fd)
        status = os.fstat(fd)
        lock = cls(path, fd, (status.st_dev, status.st_ino, threading.get_ident()))
        with cls._guard:
            cls._held[lock.key] = lock
        return lock

    def release(self) -> None:
        """One user fewer; the last removes the lock file while still holding the lock, then unlocks (a
        job that opened the file meanwhile sees it is gone and locks a new one)."""
        with self._guard:
            self.users -= 1
            if self.users > 0 or self.fd is None:
                return
            fd, self.fd = self.fd, None
            self._held.pop(self.key, None)
        try:
            if _same_file(fd, self.path):
                self.path.unlink()
        except OSError:
            pass  # the folder went read-only or away: the lock is dropped all the same
        finally:
            # unlocked explicitly: a forked child (a data loader worker) shares this open file and would
            # otherwise keep the lock after the close below
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __del__(self) -> None:
        # a claim dropped without release (no ``with``): the lock goes with its last reference, the file
        # stays and is taken over by the next claim
        fd, self.fd = getattr(self, "fd", None), None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


def _open_lock_file(folder: Path, path: Path) -> int:
    try:
        # O_NOFOLLOW: a link planted under the lock file's name is never written through
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
    except OSError as err:
        raise QslmError(f"output folder {folder} is not writable: {err.strerror or err}") from None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except OSError:
        return False


def _one_line(text: object, limit: int) -> str:
    return " ".join(str(text).split())[:limit]


def _write_holder(fd: int) -> None:
    """Who holds the lock, for the message a refused job prints: pid, host, start time, command line."""
    status = os.fstat(fd)
    if not (stat.S_ISREG(status.st_mode) and status.st_nlink == 1):
        return  # not a plain file of its own (a hard link to some other file): never written
    argv = sys.argv or ["python"]
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": _one_line(" ".join([os.path.basename(argv[0]), *argv[1:]]), SHOWN_COMMAND)}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    except OSError:
        pass  # a full disk: the lock holds without its note


def _holder(fd: int) -> str:
    """The job holding a lock, from what it wrote into the lock file."""
    try:
        raw = json.loads(os.pread(fd, 4096, 0).decode())
        pid, host, started, command = (_one_line(raw[key], SHOWN_COMMAND)
                                       for key in ("pid", "host", "started", "command"))
    except (OSError, ValueError, KeyError, TypeError):
        return "which has not recorded its pid yet"
    return f"pid {pid} on {host}, started {started}: {command}"
