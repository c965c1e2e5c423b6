"""What a search measures on the model: ``Measurements`` (one replica, uncached), ``Damages`` (cached on
disk, keyed by model, calibration, units and spec) and ``SensitivityTable`` (each unit's spec at a width,
every ask recorded for the report)."""
from __future__ import annotations

import pytest
import torch

import qslm
from qslm.analysis.hierarchy import build_hierarchy
from qslm.analysis.sensitivity import SensitivityCache, model_hash
from qslm.quant.plan import QuantPlan
from qslm.quant.quantizer import QuantSpec
from qslm.search.config import SearchConfig
from qslm.search.executors import InProcess
from qslm.search.measure import Damages, Measurements, SensitivityTable, cache_file
from qslm.search.methods import base_spec_of
from tests.handwritten import HandwrittenSpikingClassifier, accuracy, make_data, train


class Counting(InProcess):
    """The in-process executor, counting the damages it is asked to measure."""

    def __init__(self, measurements):
        super().__init__(measurements)
        self.damages_measured = 0

    def damage(self, specs):
        self.damages_measured += 1
        return super().damage(specs)


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    ids, labels = make_data()
    model = train(HandwrittenSpikingClassifier(), ids[:96], labels[:96], steps=40)
    task = qslm.Task(evaluate=lambda m: accuracy(m, ids[96:], labels[96:]), calibration=[ids[:32], ids[32:64]])
    return model, task


def damages_of(model, task, tmp_path, config=SearchConfig(bit_choices=(2, 4, 8))):
    measurements = Measurements(model, task, build_hierarchy(model, "m"), config)
    executor = Counting(measurements)
    digest = model_hash(model)
    return Damages(measurements, SensitivityCache(cache_file(tmp_path, digest)), digest, executor), executor


def test_damage_grows_as_the_width_shrinks(classifier, tmp_path):
    model, task = classifier
    damages, _ = damages_of(model, task, tmp_path)
    unit = "stages.body.0.w_in"
    by_bits = [damages.measure_specs([{unit: QuantSpec(b)}])[0]["damage"] for b in (8, 4, 2)]
    assert 0 <= by_bits[0] < by_bits[1] < by_bits[2]


def test_damages_are_cached_on_disk_and_read_back_by_a_new_search(classifier, tmp_path):
    model, task = classifier
    damages, executor = damages_of(model, task, tmp_path)
    jobs = [{"classify": QuantSpec(2)}, {"embed": QuantSpec(4), "classify": QuantSpec(4)}]
    first = damages.measure_specs(jobs)
    assert executor.damages_measured == 2
    assert damages.measure_specs(jobs) == first and executor.damages_measured == 2  # this process's cache
    again, fresh = damages_of(model, task, tmp_path)
    assert again.measure_specs(jobs) == first and fresh.damages_measured == 0  # the file's
    assert [r["method"] for r in first] == ["exact", "exact"]


def test_a_measurement_does_not_depend_on_what_ran_before_it(classifier):
    model, task = classifier
    measurements = Measurements(model, task, build_hierarchy(model, "m"), SearchConfig(bit_choices=(2, 4, 8)))
    plan = QuantPlan({"stages.body.1.w_out": QuantSpec(2)})
    first, _ = measurements.metric_of(plan)
    measurements.damage_of({"embed": QuantSpec(2)})
    measurements.metric_of(QuantPlan({"classify": QuantSpec(2)}))
    again, _ = measurements.metric_of(plan)
    assert again.metric == first.metric
    assert measurements.metric_of(QuantPlan())[0].metric == task.evaluate(model)  # float: the model's own metric


def test_the_table_takes_each_units_spec_at_a_width_and_records_every_ask_in_model_order(classifier, tmp_path):
    model, task = classifier
    damages, _ = damages_of(model, task, tmp_path)
    asked_specs = []

    def spec_of(unit, bits):
        asked_specs.append((unit, bits))
        return base_spec_of(SearchConfig().base_spec)(unit, bits)

    table = SensitivityTable(damages, spec_of)
    groups = {"stages.body.0": ["stages.body.0.w_in", "stages.body.0.w_out"]}
    table.measure(("classify",), 2)
    table.measure(tuple(groups["stages.body.0"]), 4)
    table.measure(("embed",), 8)
    assert asked_specs == [("classify", 2), ("stages.body.0.w_in", 4), ("stages.body.0.w_out", 4), ("embed", 8)]
    reported = table.asked_table(groups, ["embed", "stages.body.0.w_in", "classify"], [2, 4, 8])
    assert list(reported) == ["stages.body.0", "embed", "classify"]  # groups first, then units in model order
    assert list(reported["stages.body.0"]) == ["4"] and list(reported["classify"]) == ["2"]
