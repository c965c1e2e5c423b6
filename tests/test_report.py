"""Reports: report.json is strict JSON (no NaN/Infinity); plots are drawn without layout warnings, whatever
the unit names."""
from __future__ import annotations

import json
import math
import warnings

import pytest

from qslm.report import chosen_methods, plot_bitwidths, plot_sensitivity, report_json


def strict_loads(text: str):
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in report.json"))


def test_report_json_turns_non_finite_measurements_into_null_and_lists_them():
    report = {"baseline": {"metric": 20.0}, "candidates": [{"metric": math.inf, "quality_loss": math.nan},
                                                           {"metric": 21.0, "quality_loss": 0.05}],
              "sensitivity": {"emb": {"2": {"kl": -math.inf}}}, "bit_choices": (2, 8)}
    written = strict_loads(report_json(report))
    assert written["candidates"] == [{"metric": None, "quality_loss": None}, {"metric": 21.0, "quality_loss": 0.05}]
    assert written["sensitivity"]["emb"]["2"]["kl"] is None and written["bit_choices"] == [2, 8]
    assert written["non_finite"] == ["candidates[0].metric", "candidates[0].quality_loss", "sensitivity.emb.2.kl"]
    assert report["candidates"][0]["metric"] == math.inf  # the report itself is left as it was


def test_finite_report_json_is_unchanged():
    report = {"status": "feasible", "final": {"metric": 0.8, "memory_bytes": 10}, "closest": []}
    assert strict_loads(report_json(report)) == report


@pytest.mark.parametrize("bits", [(8,), (2, 3, 4, 5, 6, 8)])
def test_sensitivity_heatmap_fits_the_unit_names(tmp_path, bits):
    """A uniform plan's report has a single bit-width column: the figure must still hold the names."""
    units = ["emb"] + [f"blocks.{i}.{part}" for i in range(4) for part in ("att.receptance", "ffn.value")]
    report = {"sensitivity": {u: {str(b): {"kl": 10.0 ** -(b + i % 3)} for b in bits} for i, u in enumerate(units)}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_sensitivity(report, tmp_path / "sensitivity.png")
    assert (tmp_path / "sensitivity.png").stat().st_size > 1000


def test_the_bit_width_map_names_each_units_method(tmp_path):
    report = {"chosen": {"assignment": {"emb": 3, "blocks.0.key": 2, "blocks.0.value": 2, "head": 32}},
              "methods": {"emb": {"2": "codebook", "3": "rtn"}, "blocks.0.key": {"2": "gptq"},
                          "blocks.0.value": {"2": "codebook"}, "head": {"2": "gptq"}}}
    assert chosen_methods(report) == {"emb": "rtn", "blocks.0.key": "gptq", "blocks.0.value": "codebook"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_bitwidths(report, tmp_path / "bitwidths.png")
    assert (tmp_path / "bitwidths.png").stat().st_size > 1000
    # an older report without methods: everything rtn
    assert set(chosen_methods({"chosen": report["chosen"]}).values()) == {"rtn"}


def test_a_method_no_longer_registered_is_plotted_grey(tmp_path):
    report = {"chosen": {"assignment": {"emb": 3, "head": 2}}, "methods": {"emb": {"3": "gone"}, "head": {"2": "rtn"}}}
    plot_bitwidths(report, tmp_path / "bitwidths.png")
    assert (tmp_path / "bitwidths.png").stat().st_size > 1000
