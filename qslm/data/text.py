"""Plain-text corpora (one sentence or paragraph a line), e.g. ``brown/brown.txt``."""
from __future__ import annotations

from pathlib import Path

from ..errors import QslmError


def load_text(path: str | Path, expected: str = "a UTF-8 plain-text file") -> str:
    path = Path(path)
    if not path.is_file():
        raise QslmError(f"missing text corpus {path}: expected {expected}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise QslmError(f"{path} is not UTF-8 text ({err}); expected {expected}") from None
    if not text.strip():
        raise QslmError(f"{path} is empty; expected {expected}")
    return text


def first_lines(text: str, n: int | None) -> str:
    """The first ``n`` lines of ``text`` (all of it when ``n`` is None)."""
    return text if n is None else "".join(text.splitlines(keepends=True)[:n])


def word_count(text: str) -> int:
    """Words for word-level perplexity: whitespace tokens plus one end-of-line per line."""
    lines = text.splitlines()
    return sum(len(line.split()) for line in lines) + len(lines)
