"""Config dataclasses check their own fields, so the Python API gets the same errors as config.json."""
from __future__ import annotations

import pytest

from qslm.errors import QslmError
from qslm.models.config_checks import ConfigError
from qslm.models.spikegpt import SpikeGPTConfig
from qslm.models.spiking_encoder import SpikingEncoderConfig


@pytest.mark.parametrize("config_cls", [SpikeGPTConfig, SpikingEncoderConfig])
@pytest.mark.parametrize("field, value", [
    ("n_layer", "4"), ("n_layer", 4.0), ("n_layer", True), ("n_embd", -8), ("vocab_size", 10 ** 400),
    ("tau", float("inf")), ("tau", "2.0"), ("v_threshold", float("nan")), ("dropout", -0.1), ("task", "regression"),
    ("task", ["lm"]), ("arch", "transformer"),
])
def test_bad_fields_are_refused_by_the_dataclass(config_cls, field, value):
    with pytest.raises(QslmError, match=f"config field {field} must be") as info:
        config_cls(**{field: value})
    assert isinstance(info.value, ValueError)  # as the model constructors raised before


def test_integers_for_float_fields_are_stored_as_floats():
    config = SpikeGPTConfig(tau=3, dropout=0)
    assert type(config.tau) is float and type(config.dropout) is float
    assert config == SpikeGPTConfig(tau=3.0, dropout=0.0)


def test_encoder_specific_fields():
    with pytest.raises(ConfigError, match=r"n_embd \(18\) must be divisible by n_head \(4\)"):
        SpikingEncoderConfig(n_embd=18, n_head=4)
    with pytest.raises(ConfigError, match="attention_keys must be a positive integer .* or null, got 2.5"):
        SpikingEncoderConfig(attention_keys=2.5)
    with pytest.raises(ConfigError, match="time_steps must be an integer in"):
        SpikingEncoderConfig(time_steps=0)
    assert SpikingEncoderConfig(attention_keys=16).attention_keys == 16


def test_defaults_are_valid():
    SpikeGPTConfig()
    SpikingEncoderConfig()
    SpikeGPTConfig(task="classification", num_classes=5)
