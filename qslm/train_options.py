"""Training options, checked when they are made (command line and Python API alike), before any work."""
from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import pre_tokenizers

from .data.tokenizer import SPECIAL_TOKENS
from .errors import QslmError
from .models.zoo import ARCHITECTURES

TASKS = ("wikitext2", "sst2")
# A byte-level BPE vocabulary holds at least every byte and the special tokens; a smaller
# --vocab-size cannot be honoured (the tokenizer trainer would silently give this many).
MIN_VOCAB_SIZE = len(pre_tokenizers.ByteLevel.alphabet()) + len(SPECIAL_TOKENS)
WHOLE_NUMBER = re.compile(r"[+-]?\d+")
KIND_NAMES = {int: "a whole number", float: "a finite number", str: "text", type(None): "none"}


@dataclass
class TrainOptions:
    arch: str
    task: str  # "wikitext2" (language modelling) or "sst2" (classification)
    out: Path
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    seed: int = 0
    vocab_size: int = 2048
    # Config fields, e.g. n_embd, n_layer; strings (as --set gives them) are read as the field's type.
    model_overrides: dict = field(default_factory=dict)
    init: str | None = None  # start from this model's weights and tokenizer
    corpora: list[str] = field(default_factory=list)  # extra LM text files (default: brown/brown.txt)
    wikitext_weight: int = 1  # times the WikiText-2 text appears in the LM stream (it is the test domain)
    # SST-2: draw each training example with probability proportional to words ** length_weighting.
    # Train is mostly short phrases while dev is whole sentences; 0 keeps plain shuffled epochs.
    length_weighting: float = 0.0
    # Keep an exponential moving average of the weights (decay per step) and write it as the model;
    # 0 writes the last step's weights. Validation then measures the average too.
    ema_decay: float = 0.0
    # SST-2: learn also from a trained classifier's outputs (knowledge distillation, as SpikeBERT trains its
    # spiking encoder): loss = (1 - w) * cross-entropy(labels) + w * T^2 * KL(teacher || student) at
    # temperature T. The teacher may be any classifier folder or bundled name, of any architecture.
    teacher: str | None = None
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    checkpoint_every: int = 200
    eval_every: int = 500
    data_dir: str | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse options training cannot honour; read ``model_overrides`` strings as their fields' types."""
        if self.arch not in ARCHITECTURES:
            raise QslmError(f"unknown arch {self.arch!r}; expected one of {sorted(ARCHITECTURES)}")
        if self.task not in TASKS:
            raise QslmError(f"unknown task {self.task!r}; expected wikitext2 or sst2")
        for flag, value, minimum in (("--steps", self.steps, 1), ("--batch-size", self.batch_size, 1),
                                     ("--warmup", self.warmup, 0), ("--vocab-size", self.vocab_size, MIN_VOCAB_SIZE),
                                     ("--checkpoint-every", self.checkpoint_every, 1),
                                     ("--eval-every", self.eval_every, 1),
                                     ("--wikitext-weight", self.wikitext_weight, 1)):
            _check_whole_number(flag, value, minimum)
        _check_whole_number("--seed", self.seed, None)
        _check_number("--lr", self.lr, "> 0", lambda v: v > 0)
        _check_number("weight_decay", self.weight_decay, ">= 0", lambda v: v >= 0)
        _check_number("--length-weighting", self.length_weighting, ">= 0", lambda v: v >= 0)
        _check_number("--ema-decay", self.ema_decay, "in [0, 1)", lambda v: 0 <= v < 1)
        _check_number("--distill-weight", self.distill_weight, "in [0, 1]", lambda v: 0 <= v <= 1)
        _check_number("--distill-temperature", self.distill_temperature, "> 0", lambda v: v > 0)
        if self.length_weighting and self.task != "sst2":
            raise QslmError(f"--length-weighting applies to sst2 training only, not {self.task!r}")
        if self.wikitext_weight != 1 and self.task != "wikitext2":
            raise QslmError(f"--wikitext-weight applies to wikitext2 training only, not {self.task!r}")
        if self.teacher is not None and self.task != "sst2":
            raise QslmError(f"--teacher applies to sst2 training only, not {self.task!r}")
        self.model_overrides = typed_overrides(self.arch, self.model_overrides)


def _check_whole_number(flag: str, value, minimum: int | None) -> None:
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not whole or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        why = (f" (the {MIN_VOCAB_SIZE - len(SPECIAL_TOKENS)} bytes of the byte-level tokenizer and its "
               f"{len(SPECIAL_TOKENS)} special tokens)" if flag == "--vocab-size" else "")
        raise QslmError(f"{flag} must be a whole number{bound}{why}, got {value!r}")


def _check_number(flag: str, value, expected: str, holds) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    # NaN fails every comparison, but an infinity passes "> 0": both are refused explicitly.
    if not (number and math.isfinite(value) and holds(value)):
        raise QslmError(f"{flag} must be a finite number {expected}, got {value!r}")


def typed_overrides(arch: str, overrides: dict) -> dict:
    """``overrides`` with each value checked against (and strings read as) its config field's type."""
    config_cls, _ = ARCHITECTURES[arch]
    types_by_field = typing.get_type_hints(config_cls)
    unknown = sorted(set(overrides) - set(types_by_field))
    if unknown:
        raise QslmError(f"unknown config fields {unknown} for arch {arch!r}; "
                        f"expected some of {sorted(types_by_field)}")
    return {key: _typed_value(key, value, types_by_field[key]) for key, value in overrides.items()}


def _typed_value(key: str, value, annotation):
    allowed = set(typing.get_args(annotation)) if isinstance(annotation, types.UnionType) else {annotation}
    if type(None) in allowed and (value is None or (isinstance(value, str) and value.lower() == "none")):
        return None
    if int in allowed and _is_whole(value):
        return int(value)
    if float in allowed and _is_finite(value):
        return float(value)
    if str in allowed and isinstance(value, str):
        return value
    expected = " or ".join(name for kind, name in KIND_NAMES.items() if kind in allowed)
    raise QslmError(f"--set {key}={value!r}: config field {key} must be {expected}")


def _is_whole(value) -> bool:
    if isinstance(value, str):
        return WHOLE_NUMBER.fullmatch(value.strip()) is not None
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return False
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
