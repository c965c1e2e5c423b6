"""Constraints, objective weights and the score every strategy ranks candidates by, checked by hand."""
from __future__ import annotations

import pytest

from qslm.errors import QslmError
from qslm.search.confidence import Bound, loss_of
from qslm.search.objective import DEFAULT_WEIGHTS, Baseline, Constraints, parse_weights, score

ACCURACY = Baseline(metric=90.0, higher_is_better=True, memory_bytes=1000, energy_pj=2000.0, latency_s=0.5)
PERPLEXITY = Baseline(metric=20.0, higher_is_better=False, memory_bytes=1000, energy_pj=2000.0, latency_s=0.5)


def _loss(metric: float, baseline: Baseline) -> Bound:
    """A plan's loss as one number (no per-example scores, so no bound)."""
    return Bound(loss_of(metric, baseline.metric, baseline.higher_is_better))


@pytest.mark.parametrize("name", ["max_drop", "max_relative_increase", "max_memory", "max_energy"])
def test_negative_constraint_is_an_error(name):
    with pytest.raises(QslmError, match=name):
        Constraints(**{name: -0.5})


@pytest.mark.parametrize("name", ["max_memory", "max_energy"])
def test_zero_memory_or_energy_is_an_error(name):
    with pytest.raises(QslmError, match=f"{name} must be > 0"):
        Constraints(**{name: 0})


def test_zero_quality_loss_is_allowed():
    assert Constraints(max_drop=0.0).max_drop == 0.0 and Constraints(max_relative_increase=0).max_relative_increase == 0


def test_limits_fraction_or_absolute():
    assert Constraints().memory_limit_bytes(1000) is None and Constraints().energy_limit_pj(2000.0) is None
    assert Constraints(max_memory=0.125).memory_limit_bytes(8000) == 1000
    assert Constraints(max_memory=1.0).memory_limit_bytes(8000) == 8000  # 1 is a fraction: all of FP32
    assert Constraints(max_memory="12.5%").memory_limit_bytes(8000) == 1000
    assert Constraints(max_memory="5000B").memory_limit_bytes(8000) == 5000
    assert Constraints(max_memory="5kB").memory_limit_bytes(8000) == 5000
    assert Constraints(max_energy=0.5).energy_limit_pj(2000.0) == 1000.0
    assert Constraints(max_energy="1.5nJ").energy_limit_pj(2000.0) == 1500.0


@pytest.mark.parametrize("name", ["max_memory", "max_energy"])
def test_bare_number_over_one_is_ambiguous(name):
    """2.0 used to mean 2 bytes (or 2 pJ) without a word; now it must say which."""
    with pytest.raises(QslmError, match=f"constraint {name} 2.0 is ambiguous.*add a unit"):
        Constraints(**{name: 2.0})


@pytest.mark.parametrize("name", ["max_drop", "max_relative_increase", "max_memory", "max_energy"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan", "-inf"])
def test_non_finite_constraint_is_an_error(name, value):
    with pytest.raises(QslmError, match=f"constraint {name} must be a finite number"):
        Constraints(**{name: value})


def test_constraints_keep_what_was_asked_and_give_the_limits():
    constraints = Constraints(max_drop=1, max_memory="12.5%", max_energy="1.5nJ")
    assert constraints.max_drop == 1.0 and isinstance(constraints.max_drop, float)
    assert constraints.to_dict() == {"max_drop": 1.0, "max_relative_increase": None, "max_memory": "12.5%",
                                     "max_energy": "1.5nJ", "confidence": 0.9}
    assert constraints.to_dict(8000, 2000.0) == {**constraints.to_dict(), "memory_limit_bytes": 1000.0,
                                                 "energy_limit_pj": 1500.0}
    assert Constraints().to_dict(8000, 2000.0)["memory_limit_bytes"] is None
    assert Constraints(max_memory="12.5%") == Constraints(max_memory="12.5%")  # still a value: comparable


def test_parse_weights():
    assert parse_weights(None) == DEFAULT_WEIGHTS
    assert parse_weights("") == DEFAULT_WEIGHTS
    assert parse_weights("memory=2, energy = 0") == {**DEFAULT_WEIGHTS, "memory": 2.0, "energy": 0.0}
    assert parse_weights({"latency": 1}) == {**DEFAULT_WEIGHTS, "latency": 1.0}
    parse_weights("quality=3")
    assert DEFAULT_WEIGHTS["quality"] == 1.0  # defaults are not mutated


@pytest.mark.parametrize("text, message", [
    ("speed=1", "unknown objective weight 'speed'"),
    ("memory=abc", "memory='abc' is not a number"),
    ("memory", "is not a number"),
    ("energy=-1", "must be >= 0"),
    ("latency=nan", "weight latency must be a finite number"),
    ("memory=inf", "weight memory must be a finite number"),
])
def test_parse_weights_errors(text, message):
    with pytest.raises(QslmError, match=message):
        parse_weights(text)


def test_non_finite_weight_in_a_dict_is_an_error():
    with pytest.raises(QslmError, match="weight quality must be a finite number"):
        parse_weights({"quality": float("nan")})


def test_quality_loss():
    assert _loss(88.0, ACCURACY).estimate == pytest.approx(2.0)  # points
    assert _loss(91.0, ACCURACY).estimate == pytest.approx(-1.0)
    assert _loss(21.0, PERPLEXITY).estimate == pytest.approx(0.05)  # relative


def test_a_bounded_loss_is_judged_by_its_upper_bound():
    bounded = Bound(0.5, upper=1.2, interval=(0.0, 1.4), examples=100)
    result = score(bounded, 100, 100.0, 0.1, ACCURACY, Constraints(max_drop=1.0, confidence=0.8), parse_weights(None))
    assert not result.feasible and result.quality_loss == 0.5 and result.quality_bound == 1.2
    assert result.violations == ["quality loss bound 1.2 (at 0.8 confidence) > 1 points"]
    assert score(Bound(0.5, upper=0.9), 100, 100.0, 0.1, ACCURACY, Constraints(max_drop=1.0),
                 parse_weights(None)).feasible


@pytest.mark.parametrize("value", [0.4, 1.0, 1.5, "0.9", True, float("nan")])
def test_confidence_out_of_range_is_an_error(value):
    with pytest.raises(QslmError, match="constraint confidence must be a number in \\[0.5, 1\\)"):
        Constraints(max_drop=1.0, confidence=value)


def test_accuracy_score_by_hand():
    weights = parse_weights(None)
    result = score(_loss(89.5, ACCURACY), 250, 500.0, 0.25, ACCURACY, Constraints(max_drop=1.0, max_memory=0.5), weights)
    assert result.feasible and result.violations == []
    assert result.quality_loss == pytest.approx(0.5)
    assert (result.memory_fraction, result.energy_fraction, result.latency_fraction) == (0.25, 0.25, 0.5)
    # quality 0.5 / 1.0 + memory 0.25 + 0.5 * energy 0.25 + 0 * latency
    assert result.objective == pytest.approx(0.5 + 0.25 + 0.125)


def test_accuracy_violations():
    result = score(_loss(88.0, ACCURACY), 600, 1500.0, 0.5, ACCURACY,
                   Constraints(max_drop=1.0, max_memory=0.5, max_energy="1000pJ"), parse_weights(None))
    assert not result.feasible
    assert len(result.violations) == 3
    assert result.violations[0].startswith("quality loss 2 > 1 points")
    assert result.violations[1] == "memory 600 B > 500 B"
    assert result.violations[2].startswith("energy 1500 pJ > 1000 pJ")
    assert result.objective == pytest.approx(2.0 + 0.6 + 0.5 * 0.75)


def test_quality_exactly_at_the_limit_is_feasible():
    result = score(_loss(89.0, ACCURACY), 100, 100.0, 0.1, ACCURACY, Constraints(max_drop=1.0), parse_weights(None))
    assert result.feasible and result.quality_loss == pytest.approx(1.0)


def test_perplexity_score_by_hand():
    weights = parse_weights("quality=2,memory=1,energy=0,latency=1")
    ok = score(_loss(20.4, PERPLEXITY), 200, 100.0, 1.0, PERPLEXITY, Constraints(max_relative_increase=0.03), weights)
    assert ok.feasible and ok.quality_loss == pytest.approx(0.02)
    assert ok.objective == pytest.approx(2 * 0.02 / 0.03 + 0.2 + 2.0)
    bad = score(_loss(21.0, PERPLEXITY), 200, 100.0, 1.0, PERPLEXITY, Constraints(max_relative_increase=0.03), weights)
    assert not bad.feasible and bad.violations[0].endswith("> 0.03 relative")
    # a max_drop (accuracy points) says nothing about perplexity
    assert score(_loss(40.0, PERPLEXITY), 200, 100.0, 1.0, PERPLEXITY, Constraints(max_drop=0.1), weights).feasible


def test_quality_term_without_constraint_and_for_improvements():
    weights = {"quality": 1.0, "memory": 0.0, "energy": 0.0, "latency": 0.0}
    # no limit: accuracy loss per point, perplexity loss per 1%
    assert score(_loss(87.0, ACCURACY), 1, 1.0, 0.1, ACCURACY, Constraints(), weights).objective == pytest.approx(3.0)
    assert score(_loss(20.2, PERPLEXITY), 1, 1.0, 0.1, PERPLEXITY, Constraints(), weights).objective == pytest.approx(1.0)
    # doing better than the float model earns nothing
    assert score(_loss(95.0, ACCURACY), 1, 1.0, 0.1, ACCURACY, Constraints(max_drop=1.0), weights).objective == 0.0


def test_zero_baseline_latency_gives_neutral_fraction():
    baseline = Baseline(0.9, True, 1000, 2000.0, 0.0)
    assert score(Bound(0.0), 500, 1000.0, 0.3, baseline, Constraints(), parse_weights(None)).latency_fraction == 1.0
