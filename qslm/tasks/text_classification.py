"""Text classification as a ``Task``: accuracy (in percent) of labelled examples, scored per example
(100.0 correct, 0.0 wrong) so the search can bound a plan's drop with confidence.

    task = text_classification.task(model, tokenizer, validation_examples, test_examples)

The search measures candidates on the validation examples and sensitivity on the longest of them (or of
``calibration_examples``), where quantization damage shows most; the test examples are measured once,
on the chosen plan.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Tokenizer
from torch import nn

from ..data.examples import Example
from ..errors import QslmError
from .base import Task, check_positive
from .calibration import classification_calibration, output_log_probs
from .evaluation import CLASSIFICATION, classification_inputs, classification_logits, max_input_len

CALIBRATION_BATCH, VALIDATION_BATCH = 64, 128
QUANTIZER_EXAMPLES = 1024  # what gptq and codebook fit to: more than sensitivity needs
PROFILE_EXAMPLES = 64
METRIC = "accuracy (%)"


def longest_first(examples: Sequence[Example]) -> list[Example]:
    """Examples by word count, longest first (stable: ties keep file order)."""
    return sorted(examples, key=lambda ex: -len(ex.sentence.split()))


def check_labels(examples: Sequence[Example], num_classes: int, source: str) -> None:
    """Every label a class of the model: ``0..num_classes-1``."""
    if not examples:
        raise QslmError(f"{source}: no examples")
    for index, example in enumerate(examples):
        if not 0 <= example.label < num_classes:
            raise QslmError(f"{source}: example {index + 1} has label {example.label}, but the model has "
                            f"{num_classes} classes (labels 0..{num_classes - 1})")


def profile_inputs(tokenizer: Tokenizer, examples: Sequence[Example], max_len: int) -> list[tuple]:
    """One (ids, mask) per example, shortest first: what the model reads at batch size 1 (no padding)."""
    _, batches = classification_inputs(tokenizer, list(examples), max_len, batch_size=1)
    return [(ids, mask) for ids, mask, _ in batches]


def task(model: nn.Module, tokenizer: Tokenizer, validation_examples: Sequence[Example],
         test_examples: Sequence[Example] | None = None, calibration_size: int = 128,
         validation_size: int | None = None, test_limit: int | None = None, *,
         calibration_examples: Sequence[Example] | None = None, profile_size: int = PROFILE_EXAMPLES,
         quantizer_examples: Sequence[Example] | None = None, quantizer_size: int = QUANTIZER_EXAMPLES,
         name: str = CLASSIFICATION, test_split: str = "test") -> Task:
    """The task of classifying ``model``'s examples. Validation keeps the ``validation_size`` longest
    examples (all by default); calibration is the ``calibration_size`` longest of those, or of
    ``calibration_examples``; the quantizers (gptq, codebook) fit to the ``quantizer_size`` longest of
    ``quantizer_examples`` (default: of the calibration's source); profiling runs the first
    ``profile_size`` of them in file order."""
    check_positive(calibration_size=calibration_size, validation_size=validation_size, test_limit=test_limit,
                   profile_size=profile_size, quantizer_size=quantizer_size)
    num_classes = model.config.num_classes
    check_labels(validation_examples, num_classes, "validation examples")
    if test_examples is not None:
        check_labels(test_examples, num_classes, "test examples")
    if calibration_examples is not None:
        check_labels(calibration_examples, num_classes, "calibration examples")
    max_len = max_input_len(model)
    validation_set = longest_first(validation_examples)[:validation_size]
    calibration_source = validation_set if calibration_examples is None else calibration_examples
    calibration = classification_calibration(tokenizer, longest_first(calibration_source)[:calibration_size],
                                             max_len, batch_size=CALIBRATION_BATCH)
    validation = classification_calibration(tokenizer, validation_set, max_len, batch_size=VALIDATION_BATCH)
    fitted = classification_calibration(
        tokenizer, longest_first(calibration_source if quantizer_examples is None else quantizer_examples)
        [:quantizer_size], max_len, batch_size=CALIBRATION_BATCH)
    def validation_correct(m: nn.Module) -> torch.Tensor:
        """100.0 or 0.0 per validation example: the mean is accuracy in percent, and the search compares
        plans with the float model example by example."""
        return 100 * torch.cat([lp.argmax(-1) == labels for lp, (_, _, labels)
                                in zip(output_log_probs(m, validation), validation.batches)]).double()

    def test_correct(m: nn.Module) -> torch.Tensor:
        logits, labels = classification_logits(m, tokenizer, list(test_examples)[:test_limit])
        return 100 * (logits.argmax(-1) == labels).double()

    profiled = calibration_source if calibration_examples is not None else validation_examples
    return Task(evaluate=validation_correct, calibration=[(ids, mask) for ids, mask, _ in calibration.batches],
                quantizer_calibration=[(ids, mask) for ids, mask, _ in fitted.batches],
                higher_is_better=True, test=test_correct if test_examples is not None else None, damage_measure="kl",
                profile_inputs=profile_inputs(tokenizer, list(profiled)[:profile_size], max_len), name=name,
                metric_name=METRIC, test_split=test_split,
                fingerprint=f"{name}:correct per example:{validation.digest}")
