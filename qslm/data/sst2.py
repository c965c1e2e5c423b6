"""GLUE SST-2: TSV files with a header naming the ``sentence`` and ``label`` columns."""
from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import QslmError
from .paths import require_file, resolve_data_dir

SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv"}
FORMAT = "a GLUE SST-2 TSV with a header row containing 'sentence' and 'label' (0 or 1)"
# Calibration / search data come from train, never from dev (dev is only for reporting).
HOLDOUT_SIZE = 2000
HOLDOUT_SEED = 20260101
HOLDOUT_MIN_WORDS = 6  # sentence-like phrases, closer to dev than one-word fragments


@dataclass(frozen=True)
class Example:
    sentence: str
    label: int


def read_tsv(path: Path) -> list[Example]:
    require_file(path, FORMAT)
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or "sentence" not in header or "label" not in header:
            raise QslmError(f"{path}: header {header!r} lacks 'sentence' and 'label'; expected {FORMAT}")
        s_col, l_col = header.index("sentence"), header.index("label")
        examples = []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise QslmError(f"{path}:{line_no}: expected {len(header)} tab-separated columns, got {len(row)}")
            if row[l_col] not in ("0", "1"):
                raise QslmError(f"{path}:{line_no}: label {row[l_col]!r} is not 0 or 1")
            examples.append(Example(row[s_col], int(row[l_col])))
    if not examples:
        raise QslmError(f"{path}: no examples; expected {FORMAT}")
    return examples


def load_sst2(split: str, data_dir=None) -> list[Example]:
    if split not in SPLIT_FILES:
        raise QslmError(f"SST-2 split {split!r} unknown; expected one of {sorted(SPLIT_FILES)}")
    return read_tsv(resolve_data_dir(data_dir) / "sst2" / SPLIT_FILES[split])


def split_holdout(train: list[Example], size: int = HOLDOUT_SIZE, seed: int = HOLDOUT_SEED
                  ) -> tuple[list[Example], list[Example]]:
    """(training examples, held-out calibration examples): a fixed, seeded slice of train.

    A train file too small for ``size`` (a slice of SST-2, say) gives up half of its sentence-like
    phrases instead, so training keeps data and calibration still has some.
    """
    candidates = [i for i, ex in enumerate(train) if len(ex.sentence.split()) >= HOLDOUT_MIN_WORDS]
    size = min(size, len(candidates) // 2)
    if size == 0:
        raise QslmError(f"cannot hold out SST-2 examples for calibration: {len(candidates)} of "
                        f"{len(train)} training examples have >= {HOLDOUT_MIN_WORDS} words, need 2 or more")
    held = set(random.Random(seed).sample(candidates, size))
    rest = [ex for i, ex in enumerate(train) if i not in held]
    return rest, [train[i] for i in sorted(held)]


def calibration_examples(data_dir=None, size: int = HOLDOUT_SIZE) -> list[Example]:
    """The held-out slice of train used for calibration, sensitivity and search."""
    _, held = split_holdout(load_sst2("train", data_dir))
    return held[:size]
