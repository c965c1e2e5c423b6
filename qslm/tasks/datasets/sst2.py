"""GLUE SST-2: TSV files with a header naming the ``sentence`` and ``label`` columns."""
from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Callable

from ...data.examples import Example
from ...data.paths import require_file, resolve_data_dir
from ...errors import QslmError

SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv"}
FORMAT = "a GLUE SST-2 TSV with a header row containing 'sentence' and 'label' (0 or 1)"
# Calibration / search data come from train, never from dev (dev is only for reporting). SST-2 train holds
# every phrase of each treebank sentence, so the held-out slice is made of whole sentences and training loses
# the phrases cut from them alone: a held-out sentence is then as unseen as a dev sentence.
HOLDOUT_SIZE = 800  # sentences; dev has 872
HOLDOUT_SEED = 20260101
HOLDOUT_MIN_WORDS = 4  # the shortest phrase that counts as a sentence (dev's median is 19 words)


def decode_utf8(path: Path) -> str:
    """The text of ``path``; bytes that are not UTF-8 are an error naming the line they are on."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_no = data.count(b"\n", 0, err.start) + 1
        raise QslmError(f"{path}:{line_no}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}); "
                        f"expected {FORMAT}") from None


def read_header(reader, path: Path) -> list[str]:
    header = next(reader, None)
    if header is None or "sentence" not in header or "label" not in header:
        raise QslmError(f"{path}:1: header {header!r:.200} lacks 'sentence' and 'label'; expected {FORMAT}")
    repeated = sorted({name for name in ("sentence", "label") if header.count(name) > 1})
    if repeated:
        raise QslmError(f"{path}:1: header names {repeated} more than once; expected {FORMAT}")
    return header


def read_tsv(path: Path) -> list[Example]:
    require_file(path, FORMAT)
    reader = csv.reader(io.StringIO(decode_utf8(path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    examples = []
    try:
        header = read_header(reader, path)
        s_col, l_col = header.index("sentence"), header.index("label")
        for row in reader:
            line_no = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise QslmError(f"{path}:{line_no}: expected {len(header)} tab-separated columns, got {len(row)}")
            if row[l_col] not in ("0", "1"):
                raise QslmError(f"{path}:{line_no}: label {row[l_col]!r:.60} is not 0 or 1")
            examples.append(Example(row[s_col], int(row[l_col])))
    except csv.Error as err:  # e.g. a field longer than csv reads (binary data without line breaks)
        raise QslmError(f"{path}:{reader.line_num}: not a TSV row ({err}); expected {FORMAT}") from None
    if not examples:
        raise QslmError(f"{path}: no examples; expected {FORMAT}")
    return examples


def load_sst2(split: str, data_dir=None) -> list[Example]:
    if split not in SPLIT_FILES:
        raise QslmError(f"SST-2 split {split!r} unknown; expected one of {sorted(SPLIT_FILES)}")
    return read_tsv(resolve_data_dir(data_dir) / "sst2" / SPLIT_FILES[split])


def _padded(text: str) -> str:
    """``text`` with single spaces between words and one at each end, so that ``" a b " in " x a b y "``
    tests for a run of whole words."""
    return f" {' '.join(text.split())} "


def sentence_indices(train: list[Example], min_words: int = HOLDOUT_MIN_WORDS) -> list[int]:
    """Indices of the whole sentences in ``train``: phrases of ``min_words`` words or more that are no
    word span of a longer phrase (the first of identical phrases stands for them all)."""
    words = [ex.sentence.split() for ex in train]
    padded = [_padded(ex.sentence) for ex in train]
    # Index phrases by each of their word n-grams of length min_words: a phrase can only lie inside the
    # longer phrases that share its first n-gram, so each test looks at a handful of candidates.
    containing: dict[str, list[int]] = {}
    for i, w in enumerate(words):
        for start in range(len(w) - min_words + 1):
            containing.setdefault(" ".join(w[start:start + min_words]), []).append(i)
    seen: set[str] = set()
    sentences = []
    for i, w in enumerate(words):
        if len(w) < min_words or padded[i] in seen:
            continue
        seen.add(padded[i])
        if not any(len(words[j]) > len(w) and padded[i] in padded[j] for j in containing[" ".join(w[:min_words])]):
            sentences.append(i)
    return sentences


def word_spans(sentence: str) -> set[str]:
    """Every contiguous run of words in ``sentence``, the whole sentence included."""
    w = sentence.split()
    return {" ".join(w[a:b]) for a in range(len(w)) for b in range(a + 1, len(w) + 1)}


def split_holdout(train: list[Example], size: int = HOLDOUT_SIZE, seed: int = HOLDOUT_SEED
                  ) -> tuple[list[Example], list[Example]]:
    """(training examples, held-out calibration sentences): a fixed, seeded set of whole sentences of train.

    The training examples leave out the held-out sentences and every phrase that is part of one and of no
    training sentence, so nothing of a held-out sentence is learnt with its label that a dev sentence's
    phrases would not be. A train file with fewer than ``2 * size`` sentences (a slice of SST-2, say)
    gives up half of them instead, so training keeps data and calibration has some.
    """
    sentences = sentence_indices(train)
    size = min(size, len(sentences) // 2)
    if size == 0:
        raise QslmError(f"cannot hold out SST-2 sentences for calibration: {len(sentences)} of {len(train)} "
                        f"training phrases are whole sentences of >= {HOLDOUT_MIN_WORDS} words, need 2 or more")
    held = sorted(random.Random(seed).sample(sentences, size))
    held_set = set(held)
    held_spans = set().union(*(word_spans(train[i].sentence) for i in held))  # the sentences themselves too
    in_training_sentence = phrase_finder([train[i].sentence for i in sentences if i not in held_set])
    # A phrase of a held-out sentence stays when a training sentence holds it too: dev sentences also share
    # such phrases (mostly single words) with train, so the held-out sentences stay as unseen as dev's. A
    # held-out sentence (or a copy of it) is inside no training sentence, as no sentence is inside another.
    rest = [ex for ex in train if (text := " ".join(ex.sentence.split())) not in held_spans
            or in_training_sentence(text)]
    return rest, [train[i] for i in held]


def phrase_finder(sentences: list[str]) -> Callable[[str], bool]:
    """A test of whether a phrase is a word span of one of ``sentences``; it looks only at the sentences
    that hold the phrase's rarest word."""
    holding: dict[str, list[str]] = {}
    for sentence in sentences:
        padded = _padded(sentence)
        for word in set(sentence.split()):
            holding.setdefault(word, []).append(padded)

    def occurs(phrase: str) -> bool:
        rarest = min(phrase.split(), key=lambda w: len(holding.get(w, ())))
        padded = _padded(phrase)
        return any(padded in sentence for sentence in holding.get(rarest, ()))
    return occurs


def calibration_examples(data_dir=None, size: int = HOLDOUT_SIZE) -> list[Example]:
    """The held-out sentences of train used for calibration, sensitivity and search."""
    return train_and_held_out(data_dir)[1][:size]


def train_and_held_out(data_dir=None) -> tuple[list[Example], list[Example]]:
    """(the training examples, the held-out sentences) of the data folder's train split."""
    return split_holdout(load_sst2("train", data_dir))
