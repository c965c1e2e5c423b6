"""Where data lives: ``--data-dir`` wins, then the ``QSLM_DATA_DIR`` environment variable."""
from __future__ import annotations

import os
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


def require_file(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise QslmError(f"missing data file {path}: expected {expected}")
    return path
