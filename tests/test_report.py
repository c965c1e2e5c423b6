"""Reports: report.json is strict JSON (no NaN/Infinity); plots are drawn without layout warnings, whatever
the unit names."""
from __future__ import annotations

import json
import math
import warnings

import pytest

from qslm.report import (
    UNKNOWN_METHOD_COLOUR,
    _calibration_line,
    chosen_methods,
    method_colours,
    plot_bitwidths,
    plot_sensitivity,
    report_json,
)


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


def inside_the_figure(figure, texts) -> bool:
    """Whether every text is drawn wholly inside the saved figure (not cut at its edges), laid out again at
    the dpi the report saves at."""
    figure.set_dpi(110)
    figure.draw_without_rendering()
    box = figure.bbox
    return all(box.x0 <= t.get_window_extent().x0 and t.get_window_extent().x1 <= box.x1 + 0.5
               for t in texts if t.get_text())


@pytest.mark.parametrize("bits", [(8,), (2, 3, 4, 5, 6, 8)])
def test_sensitivity_heatmap_fits_the_unit_names(tmp_path, bits):
    """A uniform plan's report has a single bit-width column: the figure must still hold the names."""
    units = ["emb"] + [f"blocks.{i}.{part}" for i in range(4) for part in ("att.receptance", "ffn.value")]
    report = {"sensitivity": {u: {str(b): {"damage": 10.0 ** -(b + i % 3)} for b in bits} for i, u in enumerate(units)}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = plot_sensitivity(report, tmp_path / "sensitivity.png")
    heat = figure.axes[0].images[0].get_array()
    assert heat.shape == (len(units), len(bits))
    assert heat[0, 0] == pytest.approx(-bits[0]) and heat[2, 0] == pytest.approx(-(bits[0] + 2))  # log10 damage
    labels = figure.axes[0].get_yticklabels()
    assert [t.get_text() for t in labels] == units and inside_the_figure(figure, labels)
    assert (tmp_path / "sensitivity.png").is_file()


def test_the_bit_width_map_names_each_units_method(tmp_path):
    from matplotlib.colors import to_rgba

    report = {"chosen": {"assignment": {"emb": 3, "blocks.0.key": 2, "blocks.0.value": 2, "head": 32}},
              "methods": {"emb": {"2": "codebook", "3": "rtn"}, "blocks.0.key": {"2": "gptq"},
                          "blocks.0.value": {"2": "codebook"}, "head": {"2": "gptq"}}}
    assert chosen_methods(report) == {"emb": "rtn", "blocks.0.key": "gptq", "blocks.0.value": "codebook"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = plot_bitwidths(report, tmp_path / "bitwidths.png")
    bars = figure.axes[0].patches
    assert [b.get_height() for b in bars] == [3, 2, 2, 32]
    colours = [b.get_facecolor() for b in bars]
    palette = method_colours()
    assert colours[:3] == [to_rgba(palette[m]) for m in ("rtn", "gptq", "codebook")]
    assert len(set(colours[:3])) == 3
    assert colours[3] == to_rgba(palette["rtn"])  # a float unit: no method of its own
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["rtn", "gptq", "codebook"]
    # an older report without methods: everything rtn
    assert set(chosen_methods({"chosen": report["chosen"]}).values()) == {"rtn"}


def test_a_method_no_longer_registered_is_plotted_grey(tmp_path):
    report = {"chosen": {"assignment": {"emb": 3, "head": 2}}, "methods": {"emb": {"3": "gone"}, "head": {"2": "rtn"}}}
    from matplotlib.colors import to_rgba

    figure = plot_bitwidths(report, tmp_path / "bitwidths.png")
    assert [b.get_facecolor() for b in figure.axes[0].patches] == [to_rgba(UNKNOWN_METHOD_COLOUR),
                                                                   to_rgba(method_colours()["rtn"])]


@pytest.mark.parametrize("methods, said", [(["rtn"], "the data-driven methods fitted to 64"),
                                           (["rtn", "gptq"], "gptq fitted to 64"),
                                           (["rtn", "gptq", "codebook", "binary", "learned"],
                                            "gptq, codebook and learned fitted to 64")])
def test_the_calibration_line_names_the_methods_fitted_to_the_quantizer_inputs(methods, said):
    line = _calibration_line({"calibration_size": 32, "quantizer_calibration_size": 64, "config": {"methods": methods}})
    assert line == f"- calibration: 32 inferences for the sensitivities; {said}"
    assert _calibration_line({"calibration_size": 32, "config": {}}) == "- calibration: 32 inferences for the sensitivities"
