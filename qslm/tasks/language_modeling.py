"""Language modeling as a ``Task``: word-level perplexity of text (lower is better), scored per token
(``word_scaled_nll``) so the search can bound a plan's relative increase with confidence.

    task = language_modeling.task(model, tokenizer, validation_text, test_text)

The search measures candidates on the first ``validation_words`` words of the validation text and
sensitivity on non-overlapping windows from the start of the calibration text (default: the validation
text); the test text is measured once, on the chosen plan.
"""
from __future__ import annotations

import hashlib

import torch
from tokenizers import Tokenizer
from torch import nn

from ..data.text import budget_lines, first_lines
from ..errors import QslmError
from ..data.text import word_count
from .base import Task, check_positive
from .calibration import lm_calibration
from .evaluation import LANGUAGE_MODELING, lm_token_nll, lm_windows

PROFILE_LINES = 40
QUANTIZER_TOKENS = 16384  # what gptq and codebook fit to: more than sensitivity needs
METRIC = "word perplexity"


def leading_words(text: str, words: int) -> str:
    """The first whole lines of ``text`` holding at least ``words`` words (an end-of-line counts as one,
    as in word perplexity), or all of it. A line too long to be a paragraph is cut between words
    (``budget_lines``): one line of a whole corpus is not read whole."""
    pieces, count = [], 0
    for piece, ends_line in budget_lines(text):
        pieces.append(piece)
        count += len(piece.split()) + ends_line
        if count >= words:
            break
    return "".join(pieces)


def word_scaled_nll(model: nn.Module, tokenizer: Tokenizer, text: str) -> torch.Tensor:
    """Each token's NLL times tokens / words of ``text``: exp of their mean is the word-level perplexity,
    and the search pairs them token by token with the float model's."""
    nll = lm_token_nll(model, tokenizer, text).double()
    return nll * (len(nll) / word_count(text))


def profile_inputs(tokenizer: Tokenizer, text: str, ctx_len: int) -> list:
    """The token windows (one per input) that perplexity reads at batch size 1."""
    _, batches = lm_windows(tokenizer, text, ctx_len, batch_size=1)
    return [batch[:, :-1] for batch, _ in batches]


def _check_text(text: str, source: str) -> None:
    if not text.strip():
        raise QslmError(f"{source} is empty; expected plain text")


def task(model: nn.Module, tokenizer: Tokenizer, validation_text: str, test_text: str | None = None, *,
         calibration_text: str | None = None, calibration_tokens: int = 2048, validation_words: int = 8000,
         test_limit: int | None = None, profile_lines: int = PROFILE_LINES, quantizer_text: str | None = None,
         quantizer_tokens: int = QUANTIZER_TOKENS, name: str = LANGUAGE_MODELING, test_split: str = "test") -> Task:
    """The task of modelling ``validation_text``; profiling runs the first ``profile_lines`` lines of the
    calibration text; the quantizers (gptq, codebook) fit to windows of the first ``quantizer_tokens``
    tokens of ``quantizer_text`` (default: the calibration text); ``test_limit`` keeps the first lines of
    the test text."""
    check_positive(calibration_tokens=calibration_tokens, validation_words=validation_words,
                   test_limit=test_limit, profile_lines=profile_lines, quantizer_tokens=quantizer_tokens)
    _check_text(validation_text, "the validation text")
    calibration_text = validation_text if calibration_text is None else calibration_text
    _check_text(calibration_text, "the calibration text")
    quantizer_text = calibration_text if quantizer_text is None else quantizer_text
    _check_text(quantizer_text, "the quantizer calibration text")
    if test_text is not None:
        _check_text(test_text, "the test text")
    ctx_len = model.config.ctx_len
    calibration = lm_calibration(tokenizer, calibration_text, ctx_len, calibration_tokens)
    fitted = lm_calibration(tokenizer, quantizer_text, ctx_len, quantizer_tokens, what="quantizer calibration")
    profiled = first_lines(calibration_text, profile_lines)
    if not profiled.strip():
        raise QslmError(f"the first {profile_lines} lines of the calibration text are blank; profile more lines")
    validation = leading_words(validation_text, validation_words)

    test = None if test_text is None else first_lines(test_text, test_limit)

    def validation_nll(m: nn.Module) -> torch.Tensor:
        return word_scaled_nll(m, tokenizer, validation)

    def test_nll(m: nn.Module) -> torch.Tensor:
        return word_scaled_nll(m, tokenizer, test)

    return Task(evaluate=validation_nll, calibration=[ids for ids, _, _ in calibration.batches],
                quantizer_calibration=[ids for ids, _, _ in fitted.batches],
                higher_is_better=False, test=test_nll if test_text is not None else None, damage_measure="kl",
                scores_are_nll=True,
                profile_inputs=profile_inputs(tokenizer, profiled, ctx_len), name=name, metric_name=METRIC,
                test_split=test_split,
                fingerprint=f"{name}:{METRIC} of per-token NLL:{hashlib.sha256(validation.encode()).hexdigest()}")
