"""Where data lives: ``--data-dir`` wins, then the ``QSLM_DATA_DIR`` environment variable."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import QslmError

DATA_DIR_ENV = "QSLM_DATA_DIR"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if not chosen:
        raise QslmError(f"no data folder given: pass --data-dir DIR or set {DATA_DIR_ENV}")
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise QslmError(f"data folder {path} does not exist or is not a folder")
    return path


# What a path that is not a regular file is, by its stat mode; a folder is told apart before these.
OTHER_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                    (stat.S_ISBLK, "a block device"))


def require_file(path: Path, expected: str, what: str = "data file") -> Path:
    """``path`` when it is a regular file (or a link to one); else an error that says what it is. Only its
    status is read: opening a FIFO to read would wait for a writer."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise QslmError(f"missing {what} {path}: expected {expected}") from None
    except OSError as err:
        raise QslmError(f"cannot read {what} {path} ({err.strerror or err}): expected {expected}") from None
    if stat.S_ISREG(mode):
        return path
    if stat.S_ISDIR(mode):
        raise QslmError(f"{path} is a folder, expected a {what}: {expected}")
    kind = next((name for test, name in OTHER_FILE_KINDS if test(mode)), "a special file")
    raise QslmError(f"{path} is not a regular file ({kind}), expected a {what}: {expected}")
