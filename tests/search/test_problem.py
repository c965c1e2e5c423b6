"""``SearchProblem``: the objective ranks candidates by modelled latency, so wall-clock noise in the
measurements never changes the chosen plan; both latencies are recorded."""
from __future__ import annotations

import pytest

from qslm.search.journal import assignment_key
from qslm.search.objective import Constraints
from qslm.search.tiered import tiered_search
from tests.search.conftest import FP32_LATENCY, Synthetic, latency


def latency_weighted_search(tmp_path, noise_seed: int):
    folder = tmp_path / f"noise-{noise_seed}"  # a journal of its own: nothing is resumed from another run
    folder.mkdir()
    problem = Synthetic(folder, timing_noise_seed=noise_seed).problem(
        Constraints(max_drop=1.0, max_memory=0.2), weights="latency=2")
    return problem, tiered_search(problem)


def test_noisy_timings_choose_the_same_plan(tmp_path):
    runs = [latency_weighted_search(tmp_path, seed) for seed in (1, 2, 3)]
    plans = [best.assignment for _, best in runs]
    assert plans[0] == plans[1] == plans[2]
    # the timings really differed between the runs, and the objective did not see them
    measured = [[c.measured_latency_s for c in problem.candidates] for problem, _ in runs]
    assert measured[0] != measured[1] != measured[2]
    objectives = [[c.score.objective for c in problem.candidates] for problem, _ in runs]
    assert objectives[0] == objectives[1] == objectives[2]


def test_candidates_record_modelled_and_measured_latency(tmp_path):
    problem = Synthetic(tmp_path, timing_noise_seed=7).problem(Constraints(), weights="latency=1")
    candidate = problem.evaluate(problem.uniform(4), "uniform")
    assert candidate.modelled_latency_s == pytest.approx(latency(problem.uniform(4)))
    assert candidate.score.latency_fraction == pytest.approx(4 / 32)  # modelled, against FP32's
    assert 0.001 <= candidate.measured_latency_s <= 1.0 and candidate.measured_latency_s != 0.01
    recorded = candidate.to_dict()
    assert recorded["modelled_latency_s"] == candidate.modelled_latency_s
    assert recorded["measured_latency_s"] == candidate.measured_latency_s
    assert recorded["latency_fraction"] == pytest.approx(candidate.modelled_latency_s / FP32_LATENCY)


def test_prefetched_plans_become_candidates_only_when_evaluated(tmp_path):
    synthetic = Synthetic(tmp_path)
    problem = synthetic.problem(Constraints(max_drop=1.0), max_evaluations=3, speculation=2)
    plans = [problem.uniform(bits) for bits in (2, 4, 8)]
    problem.prefetch(plans)
    assert synthetic.measured == plans[:2]  # ``speculation`` of them
    assert problem.candidates == [] and problem.journal.entries == {}
    problem.prefetch(plans)  # already in flight: nothing more
    assert len(synthetic.measured) == 2
    candidate = problem.evaluate(plans[1], "global")
    assert candidate.index == 0 and len(synthetic.measured) == 2  # the measured result, not a new run
    assert list(problem.journal.entries) == [assignment_key(plans[1])]
    problem.prefetch([plans[1], plans[2], plans[0]])  # known ones are skipped; the budget has 2 left
    assert synthetic.measured == plans[:2] + [plans[2]]


def test_evaluate_many_stops_at_the_budget(tmp_path):
    synthetic = Synthetic(tmp_path)
    problem = synthetic.problem(Constraints(max_drop=1.0), max_evaluations=2, speculation=4)
    made = problem.evaluate_many([problem.uniform(bits) for bits in (2, 4, 8)], "uniform")
    assert [c.assignment for c in made] == [problem.uniform(2), problem.uniform(4)]
    assert len(synthetic.measured) == 2  # nothing measured beyond the budget either
