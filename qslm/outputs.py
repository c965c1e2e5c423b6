"""Output folders (``--out``) that never cost the user a file.

An output folder is accepted when it is new or empty, or when qslm itself wrote it for the same kind of
job: such a folder carries a manifest, ``.qslm-output.json``::

    {"version": 1, "kind": "quantize", "files": ["config.json", ...], "kept": ["journal.jsonl"]}

``files`` names every file qslm wrote there; ``kept`` the ones a job keeps across runs (a search
journal), which a commit never removes. Anything else (a folder holding other files or another kind's
output, a regular file, the input model's folder or a folder above it) is refused before any work
starts. ``overwrite`` lets a job write into a folder of other files or of another kind, but even then qslm
only replaces the files it writes and removes only files its manifest lists. A regular file, or a folder
that is or contains an input model, is refused even with ``overwrite``.

    with OutputFolder.claim(out, "quantize", overwrite=False, protect=[input_model]) as folder:
        staging = folder.staging()
        ...write config.json, model.safetensors into staging, report.json into staging...
        folder.commit({"config.json": staging / "config.json", ...}, last={"report.json": ...})

``commit`` installs one run's files so that a reader never sees a model beside another run's report:
the previous run's files other than the new model files (its report, plots, stale files) go first, then
the new model files, then ``last`` (report and plots). A kill at any point leaves the previous
consistent set, or model files without a report. Staging folders a crash leaves behind are removed by
the next ``claim``.

One job at a time: a claim holds an advisory lock (``flock``) on ``.qslm-lock`` inside the folder until the
job ends (``release``, or leaving the ``with`` block), taken before the manifest is read, so a second job
claiming the same folder meanwhile is refused with a line naming the holder (pid, host, start, command).
The kernel drops the lock when the holding process dies, however it dies; an orderly release also removes
the file. The lock file is never a user's file, nor one of the run's.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import ordinary_file_permissions, write_text_atomically
from .errors import QslmError
from .jsonfile import read_json_file

MANIFEST_FILE = ".qslm-output.json"
MANIFEST_VERSION = 1
KINDS = ("quantize", "search", "train")
STAGING_PREFIX = ".qslm-staging-"
SHOWN_ENTRIES = 5  # of a refused folder's files, named in the message
LOCK_FILE = ".qslm-lock"
LOCK_ATTEMPTS = 5  # a finishing job may remove the lock file between our open and our flock: try again
SHOWN_COMMAND = 200  # characters of the holder's command line, named in the message


@dataclass
class Manifest:
    kind: str
    files: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"version": MANIFEST_VERSION, "kind": self.kind, "files": sorted(set(self.files)),
                           "kept": sorted(set(self.kept))}, indent=2) + "\n"


def _is_plain_name(name) -> bool:
    """A file directly inside the folder; a manifest naming anything else (``../x``, ``a/b``) is not trusted."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and name not in (MANIFEST_FILE, LOCK_FILE) and not _is_leftover(name))


def _is_ours(name: str) -> bool:
    """Files qslm keeps in every output folder it holds, which are neither a user's nor a run's."""
    return name in (MANIFEST_FILE, LOCK_FILE) or _is_leftover(name)


def _is_leftover(name: str) -> bool:
    """Staging folders and half-written manifests a crash left behind."""
    return name.startswith(STAGING_PREFIX) or (name.startswith(f".{MANIFEST_FILE}.") and name.endswith(".partial"))


def read_manifest(folder: Path) -> Manifest | None:
    """The folder's manifest, None when it has none; QslmError when it is not one qslm wrote."""
    path = folder / MANIFEST_FILE
    if not path.exists():
        return None
    expected = f'expected {{"version": {MANIFEST_VERSION}, "kind": one of {list(KINDS)}, "files": [names]}}'
    try:
        raw = read_json_file(path)
    except OSError as err:
        raise QslmError(f"{path} is not a readable qslm output manifest ({err}); {expected}") from None
    except QslmError as err:
        raise QslmError(f"{err}; {expected}") from None
    if (not isinstance(raw, dict) or raw.get("version") != MANIFEST_VERSION or raw.get("kind") not in KINDS
            or not isinstance(raw.get("files"), list) or not isinstance(raw.get("kept", []), list)
            or not all(_is_plain_name(n) for n in raw["files"] + raw.get("kept", []))):
        raise QslmError(f"{path} is not a qslm output manifest; {expected}")
    return Manifest(raw["kind"], list(raw["files"]), list(raw.get("kept", [])))


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _ensure_folder(path: Path, role: str) -> bool:
    """Create ``path`` (and its parents) unless it is a folder already; True when it was created."""
    if path.is_dir():
        return False
    if path.exists() or path.is_symlink():
        raise QslmError(f"{role} {path} is a file, not a folder; choose a folder (a file is never replaced)")
    ancestor = _nearest_existing(path.parent)
    if ancestor.exists() and not ancestor.is_dir():
        raise QslmError(f"cannot create {role} {path}: {ancestor} is a file, not a folder")
    try:
        path.mkdir(parents=True)
    except OSError as err:
        raise QslmError(f"cannot create {role} {path}: {err.strerror or err}") from None
    return True


def check_writable_folder(path: str | os.PathLike, role: str = "folder") -> Path:
    """Create ``path`` if needed and prove a file can be written in it, before any work depends on it
    (an output or cache folder that is a file, read-only, or under a file is refused up front)."""
    path = Path(path)
    _ensure_folder(path, role)
    try:
        handle, probe = tempfile.mkstemp(prefix=STAGING_PREFIX, dir=path)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise QslmError(f"{role} {path} is not writable: {err.strerror or err}") from None
    return path


def _refuse_protected(path: Path, protect: Iterable[str | os.PathLike]) -> None:
    target = path.resolve()
    for item in protect:
        model = Path(item).resolve()
        if target == model or target in model.parents:
            relation = "is" if target == model else "contains"
            raise QslmError(f"output folder {path} {relation} the input model {model}; choose another folder "
                            f"(refused even with --overwrite)")


def _refusal(path: Path, kind: str, previous: Manifest | None, entries: list[str]) -> str | None:
    """Why ``path`` may not take a ``kind`` output without --overwrite; None when it may."""
    if previous is not None and previous.kind == kind:
        return None
    if not entries:
        return None
    shown = ", ".join(entries[:SHOWN_ENTRIES]) + (", ..." if len(entries) > SHOWN_ENTRIES else "")
    if previous is not None:
        why = f"holds the output of 'qslm {previous.kind}' ({shown}), not of 'qslm {kind}'"
    else:
        why = f"already holds files qslm did not write ({shown})"
    return (f"output folder {path} {why}; choose a new or empty folder, or pass --overwrite to write "
            f"into it (files qslm did not write are never deleted)")


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


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty (another job's files arrived meanwhile): it stays


class OutputFolder:
    """A claimed output folder; see the module docstring for the rules and the commit order."""

    def __init__(self, path: Path, manifest: Manifest, created: bool, had_manifest: bool):
        self.path = path
        self.manifest = manifest
        self.created = created  # by this claim: an abandoned job removes it again
        self.had_manifest = had_manifest
        self.committed = False
        self._staging: list[Path] = []
        self._lock: FolderLock | None = None

    @classmethod
    def claim(cls, path: str | os.PathLike, kind: str, overwrite: bool = False,
              protect: Iterable[str | os.PathLike] = ()) -> OutputFolder:
        """Check that ``path`` may take a ``kind`` output (QslmError naming the folder if not), create
        it, lock it for this job, clean up a crashed run's staging folders and write the manifest."""
        if kind not in KINDS:
            raise ValueError(f"unknown output kind {kind!r}; expected one of {KINDS}")
        path = Path(path)
        _refuse_protected(path, protect)
        existed = path.is_dir()
        if not existed:
            _ensure_folder(path, "output folder")
        lock = None
        try:
            # Locked before the manifest is read: a job refused here has touched nothing of the holder's.
            lock = FolderLock.acquire(path)
            folder = cls._claim_locked(path, kind, overwrite, existed)
        except BaseException:
            if lock is not None:
                lock.release()
            if not existed:
                _remove_if_empty(path)  # a refused job leaves no folder behind
            raise
        folder._lock = lock
        return folder

    @classmethod
    def _claim_locked(cls, path: Path, kind: str, overwrite: bool, existed: bool) -> OutputFolder:
        try:
            previous = read_manifest(path)
        except QslmError as err:
            if not overwrite:
                raise QslmError(f"{err}; pass --overwrite to write into {path} anyway") from None
            previous = None  # unreadable: nothing in it counts as qslm's, so nothing is removed
        entries = sorted(name for name in os.listdir(path) if not _is_ours(name))
        reason = _refusal(path, kind, previous, entries)
        if reason is not None and not overwrite:
            raise QslmError(reason)
        for name in os.listdir(path):
            if _is_leftover(name):
                leftover = path / name
                shutil.rmtree(leftover) if leftover.is_dir() and not leftover.is_symlink() else leftover.unlink()
        manifest = Manifest(kind, previous.files if previous else [], previous.kept if previous else [])
        folder = cls(path, manifest, created=not existed, had_manifest=(path / MANIFEST_FILE).exists())
        try:
            folder._write_manifest()
        except OSError as err:
            raise QslmError(f"output folder {path} is not writable: {err.strerror or err}") from None
        return folder

    # ---- use

    def check_writable(self) -> None:
        check_writable_folder(self.path, "output folder")

    def staging(self) -> Path:
        """A fresh folder inside this one to write a run's files into (same file system, so installing
        them is one rename each)."""
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.path))
        self._staging.append(staging)
        return staging

    def keep(self, *names: str) -> None:
        """Record files the job writes here itself and keeps across runs (e.g. a journal): listed in the
        manifest before they are written, never removed by a commit."""
        for name in names:
            if not _is_plain_name(name):
                raise ValueError(f"kept file {name!r} must be a plain file name inside {self.path}")
        self.manifest.kept = sorted(set(self.manifest.kept) | set(names))
        self.manifest.files = sorted(set(self.manifest.files) | set(names))
        self._write_manifest()

    def commit(self, files: Mapping[str, Path], last: Mapping[str, Path] | None = None) -> None:
        """Install one run's ``files`` (the model), then ``last`` (report, plots), each staged inside this
        folder; the previous run's other files (except kept ones) are removed before anything is
        installed, so a report is never beside a model of another run."""
        last = dict(last or {})
        names = list(files) + list(last)
        self._check_staged({**files, **last}, names)
        previous = set(self.manifest.files)
        kept = set(self.manifest.kept)
        # Every name this commit may leave behind is in the manifest first: a crash mid-way leaves
        # nothing the next run would not recognise as qslm's.
        self.manifest.files = sorted(previous | set(names))
        self._write_manifest()
        for name in sorted(previous - set(files) - kept):
            _remove(self.path / name)
        for name, staged in list(files.items()) + list(last.items()):
            ordinary_file_permissions(staged)
            _install(staged, self.path / name)
        self.manifest.files = sorted(set(names) | kept)
        self._write_manifest()
        self.committed = True
        self._remove_staging()

    def abandon(self) -> None:
        """Undo the claim of a job that failed: staging folders go; a folder (or manifest) the claim
        created goes too while no run's file has been recorded in it."""
        self._remove_staging()
        if self.committed:
            return
        try:
            on_disk = read_manifest(self.path)
        except QslmError:
            return
        others = [name for name in os.listdir(self.path) if not _is_ours(name)]
        if on_disk is None or on_disk.files or others:
            return  # the job wrote something: the manifest stays, so a re-run recognises the folder
        if not self.had_manifest:
            (self.path / MANIFEST_FILE).unlink(missing_ok=True)
        if self.created:
            self.release()  # its lock file goes first, or the folder is not empty
            _remove_if_empty(self.path)

    def release(self) -> None:
        """End this job's hold on the folder: another job may claim it from now on (leaving the ``with``
        block releases it; so does the end of the process, however it ends)."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                self.abandon()
            else:
                self._remove_staging()
        finally:
            self.release()

    # ---- internals

    def _write_manifest(self) -> None:
        write_text_atomically(self.path / MANIFEST_FILE, self.manifest.to_json())

    def _check_staged(self, staged: Mapping[str, Path], names: list[str]) -> None:
        if len(set(names)) != len(names):
            raise ValueError(f"a file is listed twice in one commit: {sorted(names)}")
        root = self.path.resolve()
        for name, path in staged.items():
            if not _is_plain_name(name) or name in self.manifest.kept:
                raise ValueError(f"cannot commit {name!r} into {self.path}: not a plain name, or a kept file")
            if root not in Path(path).resolve().parents or not Path(path).is_file():
                raise ValueError(f"staged file {path} is not a file inside {self.path}")

    def _remove_staging(self) -> None:
        for staging in self._staging:
            shutil.rmtree(staging, ignore_errors=True)
        self._staging.clear()


# One step each, so tests can fail a commit between any two of them.
def _remove(path: Path) -> None:
    if path.is_file() or path.is_symlink():
        path.unlink()


def _install(staged: Path, target: Path) -> None:
    os.replace(staged, target)
