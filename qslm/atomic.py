"""Files and folders written all at once, so a crash or Ctrl-C never leaves a half-written one behind.

``atomic_folder``/``commit_folder`` swap a whole folder into place and are meant for folders qslm owns
whole (a fetched data set, replaced only on ``--force``). Output folders the user names (``--out``) go
through ``qslm.outputs``, which never replaces a folder wholesale."""
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


def ordinary_file_permissions(path: Path) -> None:
    """What ``open`` would have given ``path``: some writers (safetensors, ``mkstemp``) leave files
    private to their owner."""
    os.chmod(path, 0o666 & ~_umask())


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by a file holding ``text``: a reader sees the old content or the new, never part."""
    path = Path(path)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        ordinary_file_permissions(Path(tmp_name))
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


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
