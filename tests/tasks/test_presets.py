"""The sst2 / wikitext2 presets give the search exactly the data of the code path it replaces (compared
with the functions qslm.search.run uses), and build_task dispatches and refuses what does not fit."""
from __future__ import annotations

import copy

import pytest
import torch

from qslm.checkpoint import load_model
from qslm.errors import QslmError
from qslm.tasks import language_modeling, presets
from qslm.tasks.calibration import classification_calibration, lm_calibration, output_log_probs
from qslm.tasks.datasets import sst2, wikitext
from qslm.tasks.evaluation import evaluate_classification, evaluate_lm, max_input_len


@pytest.fixture(scope="module")
def classifier(tiny_classifier):
    return load_model(tiny_classifier)


@pytest.fixture(scope="module")
def lm(tiny_lm):
    return load_model(tiny_lm)


def fed_inputs(model, run) -> list[tuple]:
    """The positional inputs of every forward of ``model`` while ``run()`` runs."""
    fed = []
    handle = model.register_forward_pre_hook(lambda _m, inputs: fed.append(inputs))
    try:
        run()
    finally:
        handle.remove()
    return fed


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for row_a, row_b in zip(a, b) for x, y in zip(row_a, row_b))


# What the searches of the bundled models were run with (their recorded plans depend on these).
RECORDED = {"sst2": {"calibration": 128, "validation": sst2.HOLDOUT_SIZE, "profile": 64, "quantizer": 1024,
                     "split": "dev"},
            "wikitext2": {"calibration": 2048, "validation": 8000, "profile": 40, "quantizer": 16384,
                          "split": "test"}}


def test_defaults_are_the_search_defaults():
    for name in presets.PRESETS:
        sizes = presets.DEFAULT_SIZES[name]
        assert {**sizes, "split": presets.REPORTED_SPLIT[name]} == RECORDED[name]


@pytest.mark.slow
def test_sst2_matches_the_search_data(classifier, small_data_dir):
    model, tokenizer = classifier.model, classifier.tokenizer
    task = presets.build_task("sst2", classifier, data_dir=small_data_dir, test_limit=30)
    assert (task.name, task.test_split, task.metric_name) == ("sst2", "dev", "accuracy (%)")
    held = sst2.calibration_examples(small_data_dir)
    held_out = sorted(held, key=lambda ex: -len(ex.sentence.split()))[:sst2.HOLDOUT_SIZE]
    calibration = classification_calibration(tokenizer, held_out[:128], max_input_len(model))
    assert same(task.calibration, [(ids, mask) for ids, mask, _ in calibration.batches])

    validation = classification_calibration(tokenizer, held_out, max_input_len(model), batch_size=128)

    def correct(m) -> torch.Tensor:
        return torch.cat([lp.argmax(-1) == labels for lp, (_, _, labels)
                          in zip(output_log_probs(m, validation), validation.batches)]).float()

    assert torch.equal(task.evaluate(model), 100 * correct(model).double())  # per example, in percent
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.classifier.weight.mul_(-1)
    assert torch.equal(task.evaluate(other), 100 * correct(other).double())
    dev = evaluate_classification(model, tokenizer, sst2.load_sst2("dev", small_data_dir)[:30], "dev")
    assert task.test(model).shape == (30,)
    assert task.metric_of(task.test(model)) == pytest.approx(100 * dev.accuracy)

    today = fed_inputs(model, lambda: evaluate_classification(model, tokenizer, held[:64], "c", batch_size=1))
    assert same(task.profiling, today)

    # the quantizers fit to the longest training sentences, none of them held out for the search
    training, held_again = sst2.train_and_held_out(small_data_dir)
    assert held_again == held
    fitted = classification_calibration(tokenizer, sorted(training, key=lambda ex: -len(ex.sentence.split()))[:1024],
                                        max_input_len(model))
    assert same(task.quantizer_inputs, [(ids, mask) for ids, mask, _ in fitted.batches])
    assert not {ex.sentence for ex in held} & {ex.sentence for ex in training}
    smaller = presets.build_task("sst2", classifier, data_dir=small_data_dir, quantizer_size=40)
    assert sum(ids.shape[0] for ids, _ in smaller.quantizer_inputs) == 40


@pytest.mark.slow
def test_wikitext2_matches_the_search_data(lm, small_data_dir):
    model, tokenizer = lm.model, lm.tokenizer
    task = presets.build_task("wikitext2", lm, data_dir=small_data_dir, validation_size=500, test_limit=9)
    assert (task.name, task.test_split, task.metric_name) == ("wikitext2", "test", "word perplexity")
    held = wikitext.calibration_text(small_data_dir)
    calibration = lm_calibration(tokenizer, held, lm.config.ctx_len, 2048)
    assert same([(ids,) for ids in task.calibration], [(ids,) for ids, _, _ in calibration.batches])
    assert task.metric_of(task.evaluate(model)) == pytest.approx(
        evaluate_lm(model, tokenizer, language_modeling.leading_words(held, 500), "validation").perplexity)
    test_text = wikitext.first_lines(wikitext.load_wikitext("test", small_data_dir), 9)
    assert task.metric_of(task.test(model)) == pytest.approx(evaluate_lm(model, tokenizer, test_text, "test").perplexity)
    today = fed_inputs(model, lambda: evaluate_lm(model, tokenizer, wikitext.first_lines(held, 40), "c", batch_size=1))
    assert same([(ids,) for ids in task.profiling], today)

    # the quantizers fit to the head of valid (this folder has no train split), which the search never reads
    head = wikitext.training_text(small_data_dir)
    assert head + held == wikitext.load_wikitext("valid", small_data_dir)
    fitted = lm_calibration(tokenizer, head, lm.config.ctx_len, 16384)
    assert same([(ids,) for ids in task.quantizer_inputs], [(ids,) for ids, _, _ in fitted.batches])


def test_file_kinds(classifier, lm, tmp_path, small_data_dir):
    val, test = tmp_path / "val.csv", tmp_path / "test.jsonl"
    val.write_text("review,stars\n" + "".join(f"review number {i} is {'good' if i % 2 else 'bad'},"
                                              f"{'pos' if i % 2 else 'neg'}\n" for i in range(12)))
    test.write_text('{"review": "fine", "stars": "pos"}\n{"review": "awful", "stars": "neg"}\n')
    task = presets.build_task("text-classification", classifier, {"validation": val, "test": test},
                              text_column="review", label_column="stars", labels=["neg", "pos"])
    assert (task.name, task.test_split) == ("text-classification", "test")
    assert sum(ids.shape[0] for ids, _ in task.calibration) == 12 and len(task.profiling) == 12
    assert same(task.quantizer_inputs, task.calibration)  # no calibration file: both read the validation file
    assert 0 <= task.metric_of(task.test(classifier.model)) <= 100
    text = tmp_path / "corpus.txt"
    text.write_text(wikitext.load_wikitext("valid", small_data_dir))
    lm_task = presets.build_task("language-modeling", lm, {"validation": text})
    assert not lm_task.higher_is_better and lm_task.test is None


@pytest.mark.parametrize("model, name, options, message", [
    ("classifier", "wikitext2", {}, "is a classifier; it cannot be searched on task 'wikitext2'"),
    ("lm", "text-classification", {}, "is a language model; it cannot be searched on task 'text-classification'"),
    ("classifier", "imdb", {}, "unknown task 'imdb'; expected one of sst2, wikitext2, text-classification"),
    ("classifier", "sst2", {"data_files": {"test": "t.csv"}}, "--data-files: task sst2 reads its own files"),
    ("classifier", "sst2", {"labels": ["a", "b"]}, "--labels: task sst2 reads its own files"),
    ("lm", "language-modeling", {"data_files": {"validation": "v.txt"}, "text_column": "x"},
     "--text-column: language-modeling reads plain text files"),
    ("classifier", "text-classification", {}, "task text-classification reads your files: give --data-files"),
    ("classifier", "text-classification", {"data_files": {"validation": "v.csv"}, "data_dir": "data"},
     "--data-dir: task text-classification reads the files of --data-files"),
    ("classifier", "text-classification", {"data_files": {"test": "t.csv"}}, "--data-files names no validation file"),
    ("classifier", "text-classification", {"data_files": {"valid": "t.csv"}}, "unknown role 'valid'"),
    ("classifier", "text-classification", {"data_files": {"validation": "v.csv"}, "labels": ["a", "b", "c"]},
     "--labels names 3 classes \\(a, b, c\\), but model .* has 2"),
    ("classifier", "sst2", {"calibration_size": 0}, "calibration size must be positive, got 0"),
])
def test_refusals(request, model, name, options, message):
    loaded = request.getfixturevalue(model)
    with pytest.raises(QslmError, match=message):
        presets.build_task(name, loaded, **options)


def test_labels_beyond_the_model_classes(classifier, tmp_path):
    val = tmp_path / "val.tsv"
    val.write_text("sentence\tlabel\na b\t0\nc d\t3\n")
    with pytest.raises(QslmError, match="example 2 has label 3, but the model has 2 classes"):
        presets.build_task("text-classification", classifier, {"validation": val})
    with pytest.raises(QslmError, match=f"{val}: example 2 has label 3"):
        presets.split_data(classifier, "text-classification", "validation", {"validation": val})


def test_evaluate_split_reads_a_preset(lm, small_data_dir):
    result = presets.evaluate_split(lm.model, lm.tokenizer, "wikitext2", "test", small_data_dir, limit=5)
    text = "".join(wikitext.load_wikitext("test", small_data_dir).splitlines(keepends=True)[:5])
    assert (result.task, result.split, result.n) == ("wikitext2", "test", wikitext.word_count(text))
    assert result.perplexity == pytest.approx(evaluate_lm(lm.model, lm.tokenizer, text, "test").perplexity)
