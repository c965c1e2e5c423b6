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

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import ordinary_file_permissions, write_text_atomically
from .errors import QslmError
from .folder_lock import LOCK_FILE, FolderLock
from .jsonfile import read_json_file

MANIFEST_FILE = ".qslm-output.json"
MANIFEST_VERSION = 1
KINDS = ("quantize", "search", "train")
STAGING_PREFIX = ".qslm-staging-"
SHOWN_ENTRIES = 5  # of a refused folder's files, named in the message


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
