"""text_classification.task on the tiny classifier: calibration, the paired accuracy, test and profile inputs."""
from __future__ import annotations

import copy

import pytest
import torch

from qslm.checkpoint import load_model
from qslm.errors import QslmError
from qslm.tasks import text_classification
from qslm.tasks.base import Task
from qslm.tasks.datasets.sst2 import Example, load_sst2
from qslm.tasks.evaluation import evaluate_classification


@pytest.fixture(scope="module")
def loaded(tiny_classifier):
    return load_model(tiny_classifier)


@pytest.fixture(scope="module")
def examples(small_data_dir) -> list[Example]:
    return load_sst2("dev", small_data_dir)[:90]


def perturbed(model):
    """A copy of ``model`` that predicts differently on some examples."""
    torch.manual_seed(1)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.classifier.weight.add_(torch.randn_like(other.classifier.weight) * 3)
    return other


def test_calibration_is_the_longest_examples_shortest_first(loaded, examples):
    task = text_classification.task(loaded.model, loaded.tokenizer, examples, calibration_size=70)
    assert isinstance(task, Task) and task.higher_is_better and task.damage_measure == "kl"
    assert task.metric_name == "accuracy (%)" and task.name == "text-classification"
    words = sorted((len(ex.sentence.split()) for ex in examples), reverse=True)
    assert [ids.shape[0] for ids, _ in task.calibration] == [64, 6]  # batches of 64
    lengths = torch.cat([mask.sum(1) for _, mask in task.calibration])
    assert lengths.tolist() == sorted(lengths.tolist())  # shortest first
    token_counts = sorted(len(loaded.tokenizer.encode(ex.sentence).ids[:48]) for ex in
                          sorted(examples, key=lambda ex: -len(ex.sentence.split()))[:70])
    assert lengths.tolist() == token_counts
    assert min(words[:70]) >= max(words[70:])  # the 70 longest by word count


@pytest.mark.slow
def test_evaluate_is_correctness_per_example_in_percent(loaded, examples):
    task = text_classification.task(loaded.model, loaded.tokenizer, examples, validation_size=80)
    kept = sorted(examples, key=lambda ex: -len(ex.sentence.split()))[:80]
    float_result = evaluate_classification(loaded.model, loaded.tokenizer, kept, "validation")
    assert task.metric_of(task.evaluate(loaded.model)) == pytest.approx(100 * float_result.accuracy)
    other = perturbed(loaded.model)
    other_logits = torch.cat([other(ids, mask) for ids, mask in _batches(loaded, kept)])
    labels = torch.tensor([ex.label for ex in kept])
    correct_other = 100 * (other_logits.argmax(-1) == labels).double()
    scores = task.evaluate(other)  # one per example, in the order the validation batches hold them
    assert scores.shape == (80,) and set(scores.tolist()) <= {0.0, 100.0}
    assert float(scores.sum()) == float(correct_other.sum())
    assert task.test is None


@torch.no_grad()
def _batches(loaded, examples):
    for ex in examples:
        ids = torch.tensor([loaded.tokenizer.encode(ex.sentence).ids[:48]])
        yield ids, torch.ones_like(ids)


def test_test_is_plain_accuracy_of_the_first_examples(loaded, examples):
    task = text_classification.task(loaded.model, loaded.tokenizer, examples, examples[::-1], test_limit=25)
    expected = evaluate_classification(loaded.model, loaded.tokenizer, examples[::-1][:25], "test").accuracy
    assert task.metric_of(task.test(loaded.model)) == pytest.approx(100 * expected)


def test_profile_inputs_are_single_examples_in_length_order(loaded, examples):
    task = text_classification.task(loaded.model, loaded.tokenizer, examples, profile_size=10)
    assert len(task.profiling) == 10
    assert all(ids.shape[0] == 1 and bool(mask.all()) for ids, mask in task.profiling)
    expected = sorted(len(loaded.tokenizer.encode(ex.sentence).ids[:48]) for ex in examples[:10])
    assert [ids.shape[1] for ids, _ in task.profiling] == expected


def test_calibration_examples_replace_the_validation_ones(loaded, examples):
    task = text_classification.task(loaded.model, loaded.tokenizer, examples[:40], calibration_size=5,
                                    calibration_examples=examples[40:])
    chosen = sorted(examples[40:], key=lambda ex: -len(ex.sentence.split()))[:5]
    expected = sorted(len(loaded.tokenizer.encode(ex.sentence).ids[:48]) for ex in chosen)
    assert task.calibration[0][1].sum(1).tolist() == expected


def test_fingerprint_follows_the_validation_examples(loaded, examples):
    first = text_classification.task(loaded.model, loaded.tokenizer, examples)
    again = text_classification.task(loaded.model, loaded.tokenizer, list(examples))
    other = text_classification.task(loaded.model, loaded.tokenizer, examples[:50])
    assert first.identity() == again.identity() != other.identity()


@pytest.mark.parametrize("options, message", [
    ({"test_examples": [Example("a b c", 2)]}, "test examples: example 1 has label 2, but the model has 2 classes"),
    ({"calibration_examples": [Example("a", -1)]}, "calibration examples: example 1 has label -1"),
    ({"validation_examples": []}, "validation examples: no examples"),
    ({"calibration_size": 0}, "calibration size must be positive, got 0"),
])
def test_bad_input(loaded, examples, options, message):
    arguments = {"validation_examples": examples, **options}
    with pytest.raises(QslmError, match=message):
        text_classification.task(loaded.model, loaded.tokenizer, **arguments)
