"""Confidence bounds of a plan's quality loss from paired per-example scores, checked by hand: the
blocks, the split into a search and a confirmation part, the three kinds of loss, and what data can
certify."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from qslm.errors import QslmError
from qslm.search.confidence import MIN_EXAMPLES, QualityJudge, blocks
from qslm.tasks.scores import Measured


def test_blocks_are_contiguous_near_equal_and_about_sqrt_n():
    cut = blocks(100)
    assert len(cut) == 10 and all(len(b) == 10 for b in cut)
    assert np.array_equal(np.concatenate(cut), np.arange(100))
    assert len(blocks(8)) == 4 and len(blocks(900)) == 30 and len(blocks(1000)) == 32 and len(blocks(10_000)) == 32


def test_the_split_is_seeded_and_disjoint():
    reference = Measured(50.0, np.tile([100.0, 0.0], 200))
    one, again, other = (QualityJudge(reference, True, False, 0.9, seed) for seed in (0, 0, 1))
    parts = [np.concatenate(j.search_blocks) for j in (one, again, other)]
    assert np.array_equal(parts[0], parts[1]) and not np.array_equal(parts[0], parts[2])
    everything = np.concatenate([*one.search_blocks, *one.confirmation_blocks])
    assert sorted(everything.tolist()) == list(range(400))
    assert one.describe() == {"confidence": 0.9, "bounded": True, "search_examples": 200,
                              "confirmation_examples": 200, "blocks": 20}


def test_a_drop_is_bounded_by_batch_means_and_student_t():
    rng = np.random.default_rng(0)
    base = 100.0 * (rng.random(100) < 0.8)
    plan = base.copy()
    plan[rng.choice(100, 6, replace=False)] = 0.0
    judge = QualityJudge(Measured(base.mean(), base), True, False, 0.9, seed=0)
    bound = judge.whole(Measured(plan.mean(), plan))
    lost = (base - plan).reshape(10, 10).mean(1)  # 10 blocks of 10
    error = lost.std(ddof=1) / math.sqrt(10)
    assert bound.estimate == pytest.approx((base - plan).mean())
    assert bound.upper == pytest.approx(bound.estimate + student_t.ppf(0.9, 9) * error)
    half = student_t.ppf(0.975, 9) * error
    assert bound.interval == pytest.approx((bound.estimate - half, bound.estimate + half))
    assert bound.examples == 100


def test_confidence_half_judges_the_estimate():
    base = np.tile([100.0, 0.0, 100.0, 100.0], 25)
    plan = base.copy()
    plan[::7] = 0.0
    judge = QualityJudge(Measured(base.mean(), base), True, False, 0.5, seed=0)
    bound = judge.search(Measured(plan.mean(), plan))
    assert bound.upper == pytest.approx(bound.estimate) and bound.judged == bound.upper


def test_a_perplexity_ratio_is_the_exponentiated_bound_of_nll_differences():
    rng = np.random.default_rng(1)
    base = rng.gamma(2.0, 2.0, 400)
    plan = base + rng.normal(0.05, 0.3, 400)
    judge = QualityJudge(Measured(math.exp(base.mean()), base), False, True, 0.9, seed=0)
    bound = judge.whole(Measured(math.exp(plan.mean()), plan))
    assert bound.estimate == pytest.approx(math.exp(plan.mean() - base.mean()) - 1)
    # the same bound computed directly: mean difference + t * batch-means error, exponentiated
    means = (plan - base).reshape(20, 20).mean(1)
    upper = (plan - base).mean() + student_t.ppf(0.9, 19) * means.std(ddof=1) / math.sqrt(20)
    assert bound.upper == pytest.approx(math.expm1(upper))


def test_a_mean_ratio_is_bounded_by_the_delta_method():
    rng = np.random.default_rng(2)
    base = rng.gamma(3.0, 1.0, 400)
    plan = base * rng.normal(1.05, 0.1, 400)
    judge = QualityJudge(Measured(base.mean(), base), False, False, 0.9, seed=0)
    bound = judge.whole(Measured(plan.mean(), plan))
    ratio = plan.sum() / base.sum()
    residual = (plan - ratio * base).reshape(20, 20).sum(1)
    error = math.sqrt((residual ** 2).sum() * 20 / 19) / base.sum()
    assert bound.estimate == pytest.approx(ratio - 1)
    assert bound.upper == pytest.approx(ratio - 1 + student_t.ppf(0.9, 19) * error)


def test_one_number_gets_no_bound():
    judge = QualityJudge(Measured(80.0), True, False, 0.9, seed=0)
    bound = judge.search(Measured(79.0))
    assert not judge.bounded and not bound.bounded and bound.judged == 1.0
    assert judge.confirmation(Measured(79.0)) is None and judge.describe() == {"confidence": 0.9, "bounded": False}


def test_too_few_scores_are_refused():
    with pytest.raises(QslmError, match=f"Task.evaluate returned 3 scores; at least {MIN_EXAMPLES} are needed"):
        QualityJudge(Measured(50.0, np.array([100.0, 0.0, 50.0])), True, False, 0.9, seed=0)


def test_what_the_data_can_certify():
    base = np.tile([100.0, 0.0], 200)
    plan = base.copy()
    plan[::13] = 100.0 - plan[::13]  # flips both ways
    judge = QualityJudge(Measured(base.mean(), base), True, False, 0.9, seed=0)
    bound = judge.search(Measured(plan.mean(), plan))
    found = judge.certifiable(bound, limit=0.5)
    assert found["certifiable_loss"] == bound.upper
    assert found["examples_needed"] == math.ceil(400 * ((bound.upper - bound.estimate) / (0.5 - bound.estimate)) ** 2)
    assert judge.certifiable(bound, limit=bound.estimate - 1)["examples_needed"] is None
