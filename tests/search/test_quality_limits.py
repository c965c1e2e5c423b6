"""Quality limits through the engine, on a spiking classifier written outside qslm: per-example scores
bounded with confidence end to end (journal, resume, report), one number still accepted with no bound
and said so, a test split that breaks the limit named in the headline, and too little validation data
named with what it can certify."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import qslm
from qslm.quant.apply import applied_plan
from tests.handwritten import HandwrittenSpikingClassifier, make_data, train


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    ids, labels = make_data(n=1600)
    return train(HandwrittenSpikingClassifier(), ids[:160], labels[:160], steps=120), ids, labels


def correct(model, ids, labels) -> torch.Tensor:
    with torch.no_grad():
        return 100.0 * (model(ids).argmax(-1) == labels)


def task_of(model, ids, labels, **overrides) -> qslm.Task:
    fields = dict(evaluate=lambda m: correct(m, ids[160:960], labels[160:960]), calibration=[ids[:64], ids[64:128]],
                  test=lambda m: correct(m, ids[960:], labels[960:]), profile_inputs=[ids[i:i + 1] for i in range(4)])
    return qslm.Task(**{**fields, **overrides})


def search(model, task, out, cache, **constraints):
    # the symmetric grid alone: with every grid this small model's plans all fail on the confirmation half
    # (bounded at drops of 2.4-2.8 against the limit of 2), and these tests need a plan to judge
    return qslm.search(model, task, out=out, progress=False, cache_dir=cache, grids=("sym",),
                       constraints=qslm.Constraints(**{"max_memory": 0.3, **constraints}))


@pytest.mark.slow
def test_per_example_scores_are_bounded_end_to_end_and_resume(classifier, tmp_path):
    model, ids, labels = classifier
    task = task_of(model, ids, labels)
    result = search(model, task, tmp_path / "out", tmp_path / "cache", max_drop=2.0, confidence=0.9)
    report, quality = result.report, result.report["quality"]
    assert report["status"] == "feasible"
    assert quality["bounded"] and quality["confidence"] == 0.9 and quality["limit"] == 2.0
    assert report["environment"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert quality["search_examples"] + quality["confirmation_examples"] == 800
    chosen = report["chosen"]
    assert chosen["quality_bound"] <= 2.0 and chosen["quality_bound"] > chosen["quality_loss"]
    assert quality["selection"]["confirmation"]["upper"] <= 2.0
    for part in ("validation", "test"):
        low, high = quality[part]["interval95"]
        assert low <= quality[part]["estimate"] <= high
    assert quality["test"]["examples"] == 640 and quality["test"]["estimate"] == pytest.approx(
        report["final"]["quality_loss"])
    # every infeasible candidate failed on its bound, not its estimate
    assert any(c["quality_loss"] <= 2.0 < c["quality_bound"] for c in report["candidates"])
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert report["headline"][0] in markdown and "95% interval" in markdown and "at 0.9 confidence" in markdown
    # the journal keeps every candidate's scores: a rerun with another confidence re-judges them unmeasured
    lines = (tmp_path / "out" / "journal.jsonl").read_text().splitlines()[1:]
    assert all("scores" in json.loads(line) for line in lines)
    again = search(model, task, tmp_path / "out", tmp_path / "cache", max_drop=2.0, confidence=0.9).report
    assert again["evaluations"]["new"] == 0 and again["chosen"]["assignment"] == chosen["assignment"]
    assert [c["quality_bound"] for c in again["candidates"]] == [c["quality_bound"] for c in report["candidates"]]
    looser = search(model, task, tmp_path / "out", tmp_path / "cache", max_drop=2.0, confidence=0.5).report
    assert looser["chosen"]["memory_bytes"] <= chosen["memory_bytes"]


@pytest.mark.slow
def test_one_number_still_works_and_the_report_says_no_bound_was_applied(classifier, tmp_path):
    model, ids, labels = classifier
    task = task_of(model, ids, labels, evaluate=lambda m: float(correct(m, ids[160:960], labels[160:960]).mean()))
    report = search(model, task, tmp_path / "out", tmp_path / "cache", max_drop=2.0).report
    assert report["status"] == "feasible" and not report["quality"]["bounded"]
    assert report["chosen"]["quality_bound"] is None
    assert any("No confidence bound could be applied" in line for line in report["headline"])
    assert "No confidence bound could be applied" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.slow
def test_a_test_split_that_breaks_the_limit_is_named_in_the_headline(classifier, tmp_path):
    model, ids, labels = classifier
    right = np.full(200, 100.0)
    wrong = right.copy()
    wrong[:20] = 0.0  # every quantized model loses 10 points on test
    task = task_of(model, ids, labels, test=lambda m: right if m is model else wrong)
    report = search(model, task, tmp_path / "out", tmp_path / "cache", max_drop=2.0).report
    assert report["final"]["quality_within_limit"] is False and report["quality"]["test_within_limit"] is False
    assert report["headline"][0].startswith("Status: **over the limit on test**: the plan shows a drop of 10 points on test")
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "**feasible**" not in markdown and "over the limit on test" in markdown.splitlines()[2]


def test_too_little_validation_data_says_what_it_can_certify(classifier, tmp_path, capsys):
    model, ids, labels = classifier
    base = np.tile([100.0, 100.0, 100.0, 0.0], 6)
    noisy = base.copy()
    flipped = [0, 3, 5, 10, 15, 19, 20]  # lost and gained in every block: a wide bound
    noisy[flipped] = 100.0 - noisy[flipped]
    task = task_of(model, ids, labels, evaluate=lambda m: base if applied_plan(m) is None else noisy)
    report = search(model, task, tmp_path / "out", tmp_path / "cache", max_drop=1.0).report
    assert report["status"] == "infeasible"
    certifiable = report["quality"]["certifiable"]
    assert certifiable["certifiable_loss"] > 1.0 and certifiable["examples_needed"] > 24
    assert f"needs about {certifiable['examples_needed']:,} validation examples" in report["headline"][1]
