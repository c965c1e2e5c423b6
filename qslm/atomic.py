"""Folders written all at once: fill a temporary sibling, then swap it into place, so a crash or
Ctrl-C never leaves a half-written model or data set behind."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_folder(out: Path) -> Path:
    """A temporary sibling of ``out`` to fill; ``commit_folder`` moves it into place."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))


def _ordinary_permissions(folder: Path) -> None:
    """What ``mkdir`` and ``open`` would have given: temporary folders, and files some writers (safetensors)
    stage through temporary files, are private to their owner."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~mask)


def commit_folder(tmp: Path, out: Path) -> None:
    """Replace ``out`` (if any) by ``tmp``, with ordinary permissions."""
    out = Path(out)
    _ordinary_permissions(tmp)
    if out.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, backup / "old")
        os.replace(tmp, out)
        shutil.rmtree(backup)
    else:
        os.replace(tmp, out)
