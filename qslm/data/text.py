"""Plain-text corpora (one sentence or paragraph a line), e.g. ``brown/brown.txt``."""
from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from ..errors import QslmError
from .paths import require_file

# Natural text keeps a paragraph to a line (WikiText-2's longest holds 481 words, the Brown corpus's 180).
# A line of more words than LONG_LINE_WORDS is text without line breaks (text8 is one line of 17M words):
# budgets in lines count it as lines of LINE_PIECE_WORDS words, about a WikiText-2 paragraph, so a long
# line costs what the same words cost in lines instead of being read whole.
LONG_LINE_WORDS = 1000
LINE_PIECE_WORDS = 100
_WORD = re.compile(r"\S+")


def load_text(path: str | Path, expected: str = "a UTF-8 plain-text file") -> str:
    path = require_file(Path(path), expected, "text corpus")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise QslmError(f"{path} is not UTF-8 text ({err}); expected {expected}") from None
    if not text.strip():
        raise QslmError(f"{path} is empty; expected {expected}")
    return text


def budget_lines(text: str) -> Iterator[tuple[str, bool]]:
    """(piece, ends_line) for each line of ``text`` (its end kept) as budgets in lines count them: a line of
    more than ``LONG_LINE_WORDS`` words comes in pieces of ``LINE_PIECE_WORDS`` words, each cut right after
    a word (so the tokens of the pieces are those of the line), and only its last piece ends the line."""
    for line in text.splitlines(keepends=True):
        if not _is_long(line):
            yield line, True
            continue
        start, cut = 0, None
        for count, word in enumerate(_WORD.finditer(line), start=1):
            if count % LINE_PIECE_WORDS == 0:
                if cut is not None:
                    yield line[start:cut], False
                    start = cut
                cut = word.end()
        if line[cut:].strip():
            yield line[start:cut], False
            start = cut
        yield line[start:], True  # the rest, or the last piece with the line's end when only that is left


def _is_long(line: str) -> bool:
    # more than LONG_LINE_WORDS words need twice as many characters; counted only up to the limit
    return len(line) > 2 * LONG_LINE_WORDS and \
        sum(1 for _ in islice(_WORD.finditer(line), LONG_LINE_WORDS + 1)) > LONG_LINE_WORDS


def first_lines(text: str, n: int | None) -> str:
    """The first ``n`` lines of ``text`` (all of it when ``n`` is None); a line too long for a line
    counts as several (``budget_lines``)."""
    return text if n is None else "".join(piece for piece, _ in islice(budget_lines(text), n))


def word_count(text: str) -> int:
    """Words for word-level perplexity: whitespace tokens plus one end-of-line per line."""
    lines = text.splitlines()
    return sum(len(line.split()) for line in lines) + len(lines)
