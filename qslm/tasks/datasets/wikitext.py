"""WikiText-2 (tokenized v1 text): ``wiki.{split}.tokens`` or ``{split}.txt`` inside ``wikitext-2/``."""
from __future__ import annotations

from pathlib import Path

from ...data.paths import resolve_data_dir
from ...data.text import first_lines, load_text, word_count  # noqa: F401  (re-exported)
from ...errors import QslmError

SPLITS = ("train", "valid", "test")
FOLDER_NAMES = ("wikitext-2", "wikitext2", "wikitext-2-v1")
# Language-model calibration and search use the tail of valid (held out of training);
# test is only for reporting.
CALIBRATION_FRACTION = 0.1


def wikitext_dir(data_dir=None) -> Path:
    root = resolve_data_dir(data_dir)
    for name in FOLDER_NAMES:
        if (root / name).is_dir():
            return root / name
    raise QslmError(f"no WikiText-2 folder in {root}: expected one of {', '.join(FOLDER_NAMES)}")


def split_path(split: str, data_dir=None) -> Path:
    if split not in SPLITS:
        raise QslmError(f"WikiText-2 split {split!r} unknown; expected one of {SPLITS}")
    folder = wikitext_dir(data_dir)
    candidates = [folder / f"wiki.{split}.tokens", folder / f"{split}.txt"]
    for path in candidates:
        if path.is_file():
            return path
    raise QslmError(f"WikiText-2 {split} split missing: expected {candidates[0]} or {candidates[1]}")


def has_split(split: str, data_dir=None) -> bool:
    try:
        split_path(split, data_dir)
        return True
    except QslmError:
        return False


def load_wikitext(split: str, data_dir=None) -> str:
    return load_text(split_path(split, data_dir), "WikiText-2 plain text")




def split_lines(text: str, fraction: float = CALIBRATION_FRACTION) -> tuple[str, str]:
    """(head, tail) of a text split on a line boundary; the tail is the last ``fraction`` of lines."""
    lines = text.splitlines(keepends=True)
    cut = len(lines) - max(1, int(len(lines) * fraction))
    return "".join(lines[:cut]), "".join(lines[cut:])


def calibration_text(data_dir=None) -> str:
    """Held-out text for calibration/search: the tail of valid, which training never sees."""
    return split_lines(load_wikitext("valid", data_dir))[1]


def training_text(data_dir=None) -> str:
    """Text the search never checks on, for fitting quantizers to: train when the folder has it, else the
    head of valid (the part of valid that is not held out)."""
    if has_split("train", data_dir):
        return load_wikitext("train", data_dir)
    return split_lines(load_wikitext("valid", data_dir))[0]
