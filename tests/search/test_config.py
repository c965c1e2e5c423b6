"""SearchConfig: the quantizer methods a search uses by default, and what it refuses."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

import qslm
from qslm.errors import QslmError
from qslm.search.config import BASE_SPEC, DEFAULT_METHODS, SearchConfig


def test_every_method_by_default():
    assert DEFAULT_METHODS == ("rtn", "gptq", "codebook")
    assert SearchConfig().methods == DEFAULT_METHODS
    assert SearchConfig(methods=("rtn",)).methods == ("rtn",)
    assert SearchConfig(methods="gptq").methods == ("gptq",)


def test_the_default_leaves_the_codebook_out_where_the_base_spec_asks_for_what_it_ignores():
    for base in (dataclasses.replace(BASE_SPEC, symmetric=False), dataclasses.replace(BASE_SPEC, observer="minmax")):
        assert SearchConfig(base_spec=base).methods == ("rtn", "gptq")
        with pytest.raises(QslmError, match="method codebook cannot take the base spec .* makes no sense with method"):
            SearchConfig(base_spec=base, methods=("rtn", "codebook"))


def test_the_methods_round_trip_through_json():
    config = SearchConfig()
    assert config.to_dict()["methods"] == list(DEFAULT_METHODS)
    assert SearchConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("methods", [(), ("rtn", "rtn"), ("awq",)])
def test_bad_methods_are_refused_by_name(methods):
    with pytest.raises(QslmError, match="methods must be distinct names"):
        SearchConfig(methods=methods)


def test_settings_given_as_keywords_build_the_config():
    from qslm.search.config import config_from

    assert config_from(None, {"strategy": "random", "seed": 3}) == SearchConfig(strategy="random", seed=3)
    assert config_from(None, {"sensitivity_method": "local"}) == SearchConfig(sensitivity="local")  # former name
    assert config_from(None, {}) == SearchConfig()


@pytest.mark.parametrize("settings, said", [
    ({"strategy": "random"}, "config= and strategy= both set search settings"),
    ({"sensitivity": "local"}, "config= and sensitivity= both set search settings"),
])
def test_a_config_and_a_keyword_setting_together_are_refused_naming_both(settings, said):
    from qslm.search.config import config_from

    with pytest.raises(QslmError, match=said):
        config_from(SearchConfig(), settings)


def test_one_setting_under_two_names_and_unknown_settings_are_refused():
    from qslm.search.config import config_from

    with pytest.raises(QslmError, match="sensitivity= and sensitivity_method= both set the sensitivity_method setting"):
        config_from(None, {"sensitivity_method": "local", "sensitivity": "exact"})
    with pytest.raises(QslmError, match="weights= and objective_weights= both set the objective_weights setting"):
        qslm.SearchConfig(weights="memory=2", objective_weights={"memory": 3.0})
    assert qslm.SearchConfig(weights="memory=2").objective_weights["memory"] == 2.0  # the former name
    assert qslm.SearchConfig.from_dict({"sensitivity": "local"}).sensitivity_method == "local"  # an older report
    with pytest.raises(QslmError, match=r"unknown search setting strategies=; the settings are bit_choices, "):
        config_from(None, {"strategies": "random"})


@pytest.mark.slow
def test_a_config_names_a_strategy_without_loading_the_strategies_or_the_executors():
    """The name is checked where strategies run (``check_strategy``), so a config imports neither."""
    code = ("import sys; from qslm.search.config import SearchConfig; SearchConfig(strategy='anneal'); "
            "print(sorted(m for m in sys.modules if m in ('qslm.search.strategies', 'qslm.search.executors')))")
    assert subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout == "[]\n"


def test_every_grid_by_default_on_the_symmetric_base_spec_and_round_trip():
    assert SearchConfig().grids == ("sym", "signed", "asym", "ternary") and SearchConfig(methods=("rtn",)).chooses_per_unit
    assert SearchConfig(bit_choices=(3, 4)).grids == ("sym", "signed", "asym")  # ternary holds at two bits only
    assert SearchConfig(methods=("ternary", "codebook")).grids == ("sym",)  # the grids some method takes
    signed = SearchConfig(base_spec=dataclasses.replace(BASE_SPEC, all_levels=True))
    assert signed.grids == ("signed",)  # a base spec on another grid keeps it
    config = SearchConfig(methods=("rtn",), grids=("sym",))
    assert not config.chooses_per_unit and config.to_dict()["grids"] == ["sym"]
    assert SearchConfig.from_dict(config.to_dict()) == config
    raw = config.to_dict()
    del raw["grids"]  # a config written before grids were chosen: today's default
    assert SearchConfig.from_dict(raw).grids == ("sym", "signed", "asym", "ternary")


@pytest.mark.parametrize("grids, said", [((), "grids must be distinct names"), (("sym", "sym"), "grids must be distinct"),
                                         (("skewed",), "among ['sym', 'signed', 'asym', 'ternary']"),
                                         (("ternary",), "the ternary grid holds at 2 bits only; name another grid")])
def test_bad_grids_are_refused_by_name(grids, said):
    with pytest.raises(QslmError, match=re.escape(said)):
        SearchConfig(grids=grids)


def test_the_ternary_grid_needs_two_bits():
    config = SearchConfig(grids=("sym", "ternary"))
    assert config.grids == ("sym", "ternary") and SearchConfig.from_dict(config.to_dict()) == config
    with pytest.raises(QslmError, match=re.escape("grid 'ternary' holds at 2 bits only, which bit_choices [3, 4]")):
        SearchConfig(grids=("sym", "ternary"), bit_choices=(3, 4))
    with pytest.raises(QslmError, match="grid 'ternary' is taken by none of the methods \\['ternary', 'codebook'\\]"):
        SearchConfig(methods=("ternary", "codebook"), grids=("sym", "ternary"))


def test_a_grid_no_method_can_take_is_refused():
    with pytest.raises(QslmError, match="grid 'asym' is taken by none of the methods \\['ternary', 'codebook'\\]"):
        SearchConfig(methods=("ternary", "codebook"), grids=("sym", "asym"))
