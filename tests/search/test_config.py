"""SearchConfig: the quantizer methods a search uses by default, and what it refuses."""
from __future__ import annotations

import dataclasses
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
