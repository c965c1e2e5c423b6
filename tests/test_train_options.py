"""Training options are checked when made: each bad value is refused naming its flag and the value."""
from __future__ import annotations

import dataclasses
import re

import pytest

from qslm.data.tokenizer import train_tokenizer
from qslm.errors import QslmError
from qslm.train_options import MIN_VOCAB_SIZE, TrainOptions


def make(**changes) -> TrainOptions:
    return TrainOptions(**{"arch": "spikegpt", "task": "sst2", "out": "m", **changes})


def test_defaults_are_valid():
    options = make()
    assert options.steps >= 1 and options.vocab_size >= MIN_VOCAB_SIZE


@pytest.mark.parametrize("changes, message", [
    ({"steps": 0}, "--steps must be a whole number >= 1, got 0"),
    ({"steps": -5}, "--steps must be a whole number >= 1, got -5"),
    ({"steps": 5.0}, "--steps must be a whole number >= 1, got 5.0"),
    ({"batch_size": 0}, "--batch-size must be a whole number >= 1, got 0"),
    ({"lr": float("nan")}, "--lr must be a finite number > 0, got nan"),
    ({"lr": float("inf")}, "--lr must be a finite number > 0, got inf"),
    ({"lr": 0.0}, "--lr must be a finite number > 0, got 0.0"),
    ({"lr": -1e-3}, "--lr must be a finite number > 0, got -0.001"),
    ({"warmup": -1}, "--warmup must be a whole number >= 0, got -1"),
    ({"vocab_size": 0}, f"--vocab-size must be a whole number >= {MIN_VOCAB_SIZE} (the 256 bytes"),
    ({"vocab_size": MIN_VOCAB_SIZE - 1}, f"--vocab-size must be a whole number >= {MIN_VOCAB_SIZE}"),
    ({"checkpoint_every": 0}, "--checkpoint-every must be a whole number >= 1, got 0"),
    ({"eval_every": -2}, "--eval-every must be a whole number >= 1, got -2"),
    ({"distill_weight": -0.1}, "--distill-weight must be a finite number in [0, 1], got -0.1"),
    ({"distill_weight": 1.01}, "--distill-weight must be a finite number in [0, 1], got 1.01"),
    ({"distill_weight": float("nan")}, "--distill-weight must be a finite number in [0, 1], got nan"),
    ({"distill_temperature": 0.0}, "--distill-temperature must be a finite number > 0, got 0.0"),
    ({"distill_temperature": float("nan")}, "--distill-temperature must be a finite number > 0, got nan"),
    ({"distill_temperature": float("inf")}, "--distill-temperature must be a finite number > 0, got inf"),
    ({"ema_decay": 1.0}, "--ema-decay must be a finite number in [0, 1), got 1.0"),
    ({"ema_decay": -0.5}, "--ema-decay must be a finite number in [0, 1), got -0.5"),
    ({"ema_decay": float("nan")}, "--ema-decay must be a finite number in [0, 1), got nan"),
    ({"length_weighting": float("nan")}, "--length-weighting must be a finite number >= 0, got nan"),
    ({"length_weighting": float("inf")}, "--length-weighting must be a finite number >= 0, got inf"),
    ({"weight_decay": float("nan")}, "weight_decay must be a finite number >= 0, got nan"),
    ({"seed": "7"}, "--seed must be a whole number, got '7'"),
])
def test_bad_values_are_refused_naming_the_flag(changes, message):
    with pytest.raises(QslmError, match=re.escape(message)):
        make(**changes)


def test_the_smallest_vocabulary_is_what_the_tokenizer_needs():
    """The named minimum is what byte-level BPE gives when asked for less: every byte plus the specials."""
    assert train_tokenizer(["a few words"], 0).get_vocab_size() == MIN_VOCAB_SIZE
    assert make(vocab_size=MIN_VOCAB_SIZE).vocab_size == MIN_VOCAB_SIZE


def test_changed_options_are_checked_again():
    options = make()
    options.steps = 0
    with pytest.raises(QslmError, match="--steps must be a whole number >= 1, got 0"):
        options.validate()
    with pytest.raises(QslmError, match="--batch-size must be a whole number >= 1, got 0"):
        dataclasses.replace(make(), batch_size=0)


def test_override_strings_are_read_as_their_fields_types():
    options = make(model_overrides={"n_layer": "6", "tau": "1.5", "task": "lm", "v_threshold": "1e-1",
                                    "dropout": 0})
    assert options.model_overrides == {"n_layer": 6, "tau": 1.5, "task": "lm", "v_threshold": 0.1, "dropout": 0.0}
    assert type(options.model_overrides["n_layer"]) is int and type(options.model_overrides["dropout"]) is float
    encoder = make(arch="spiking-encoder", model_overrides={"attention_keys": "8"})
    assert encoder.model_overrides == {"attention_keys": 8}
    assert make(arch="spiking-encoder", model_overrides={"attention_keys": "none"}).model_overrides == {
        "attention_keys": None}


@pytest.mark.parametrize("overrides, message", [
    ({"n_layer": "abc"}, "--set n_layer='abc': config field n_layer must be a whole number"),
    ({"n_layer": "4.0"}, "--set n_layer='4.0': config field n_layer must be a whole number"),
    ({"n_layer": 4.0}, "--set n_layer=4.0: config field n_layer must be a whole number"),
    ({"n_layer": True}, "--set n_layer=True: config field n_layer must be a whole number"),
    ({"tau": "abc"}, "--set tau='abc': config field tau must be a finite number"),
    ({"tau": "nan"}, "--set tau='nan': config field tau must be a finite number"),
    ({"task": 3}, "--set task=3: config field task must be text"),
])
def test_override_values_of_the_wrong_type_are_refused(overrides, message):
    with pytest.raises(QslmError, match=re.escape(message)):
        make(model_overrides=overrides)


def test_an_unknown_override_lists_the_valid_keys():
    with pytest.raises(QslmError, match=re.escape("unknown config fields ['n_experts'] for arch 'spikegpt'")) as info:
        make(model_overrides={"n_experts": "4"})
    assert "n_embd" in str(info.value) and "ctx_len" in str(info.value)
