"""language_modeling.task on the tiny language model: windows, word perplexity, test and profile inputs."""
from __future__ import annotations

import pytest
import torch

from qslm.checkpoint import load_model
from qslm.errors import QslmError
from qslm.tasks import language_modeling
from qslm.tasks.datasets.wikitext import load_wikitext
from qslm.tasks.evaluation import evaluate_lm


@pytest.fixture(scope="module")
def loaded(tiny_lm):
    return load_model(tiny_lm)


@pytest.fixture(scope="module")
def text(small_data_dir) -> str:
    return load_wikitext("valid", small_data_dir)


def test_leading_words_keeps_whole_lines():
    text = "a b c\nd e\nf g h i\n"
    assert language_modeling.leading_words(text, 4) == "a b c\n"  # 3 words + end of line
    assert language_modeling.leading_words(text, 5) == "a b c\nd e\n"
    assert language_modeling.leading_words(text, 100) == text


def test_calibration_windows_from_the_start(loaded, text):
    task = language_modeling.task(loaded.model, loaded.tokenizer, text, calibration_tokens=32 * 10)
    assert not task.higher_is_better and task.damage_measure == "kl" and task.metric_name == "word perplexity"
    ids = torch.tensor(loaded.tokenizer.encode("\n" + text).ids)
    windows = torch.cat(task.calibration)
    assert windows.shape == (10, 32) and [w.shape[0] for w in task.calibration] == [8, 2]
    assert torch.equal(windows, ids[:320].reshape(10, 32))


def test_evaluate_and_test_are_word_perplexities(loaded, text, small_data_dir):
    test_text = load_wikitext("test", small_data_dir)
    task = language_modeling.task(loaded.model, loaded.tokenizer, text, test_text, validation_words=300,
                                  test_limit=7)
    head = language_modeling.leading_words(text, 300)
    assert 300 <= sum(len(line.split()) + 1 for line in head.splitlines()) < 300 + 200
    assert task.scores_are_nll and task.metric_of(task.evaluate(loaded.model)) == pytest.approx(
        evaluate_lm(loaded.model, loaded.tokenizer, head, "validation").perplexity)
    first = "".join(test_text.splitlines(keepends=True)[:7])
    assert task.metric_of(task.test(loaded.model)) == pytest.approx(evaluate_lm(loaded.model, loaded.tokenizer, first, "t").perplexity)


def test_profile_inputs_are_the_windows_of_the_first_lines(loaded, text):
    calibration = "\n\n" + text
    task = language_modeling.task(loaded.model, loaded.tokenizer, text, calibration_text=calibration,
                                  profile_lines=6)
    fed = []
    handle = loaded.model.register_forward_pre_hook(lambda _m, inputs: fed.append(inputs[0]))
    try:
        evaluate_lm(loaded.model, loaded.tokenizer, "".join(calibration.splitlines(keepends=True)[:6]), "c",
                    batch_size=1)
    finally:
        handle.remove()
    assert len(fed) == len(task.profiling) > 1
    assert all(torch.equal(a, b) for a, b in zip(fed, task.profiling))


@pytest.mark.parametrize("options, message", [
    ({"validation_text": " \n"}, "the validation text is empty"),
    ({"calibration_text": "short"}, r"the calibration text has \d+ tokens; one calibration window needs 33"),
    ({"quantizer_text": "short"},
     r"the quantizer calibration text has \d+ tokens; one quantizer calibration window needs 33"),
    ({"quantizer_text": " \n"}, "the quantizer calibration text is empty"),
    ({"quantizer_tokens": 0}, "quantizer tokens must be positive, got 0"),
    ({"calibration_text": "\n" * 50 + "x " * 40, "profile_lines": 5}, "the first 5 lines of the calibration text"),
    ({"validation_words": -3}, "validation words must be positive, got -3"),
])
def test_bad_input(loaded, text, options, message):
    arguments = {"validation_text": text, **options}
    with pytest.raises(QslmError, match=message):
        language_modeling.task(loaded.model, loaded.tokenizer, **arguments)


def test_one_long_line_costs_what_its_words_cost_in_lines(loaded, text):
    """A 100 KB line (a corpus without line breaks) is windowed like the same words in lines: the search
    scores and profiles a slice of it, not the whole line."""
    corpus = text.split()
    words = (corpus * (100_000 // len(" ".join(corpus)) + 1))[:20_000]
    one_line = " ".join(words) + "\n"
    assert len(one_line) > 100_000
    in_lines = "".join(" ".join(words[i:i + 100]) + "\n" for i in range(0, len(words), 100))
    calls = []
    handle = loaded.model.register_forward_pre_hook(lambda _m, inputs: calls.append(inputs[0].shape))
    try:
        costs = {}
        for name, corpus_text in (("one line", one_line), ("lines", in_lines)):
            task = language_modeling.task(loaded.model, loaded.tokenizer, corpus_text, validation_words=1500,
                                          profile_lines=5)
            calls.clear()
            scores = task.evaluate(loaded.model)
            costs[name] = (len(calls), len(scores), len(task.profiling))
    finally:
        handle.remove()
    (line_calls, line_tokens, line_profile), (calls_in_lines, tokens_in_lines, profile_in_lines) = costs.values()
    # the same 1500 words either way; the lines' 15 line breaks are the only extra tokens
    assert abs(line_calls - calls_in_lines) <= 1 and abs(line_tokens - tokens_in_lines) <= 3 * 15
    assert abs(line_profile - profile_in_lines) <= 2
    assert line_tokens < len(loaded.tokenizer.encode(one_line).ids) / 5
