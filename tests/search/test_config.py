"""SearchConfig: the quantizer methods a search uses by default, and what it refuses."""
from __future__ import annotations

import dataclasses

import pytest

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
