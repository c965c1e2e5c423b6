"""Operation counts measured while the model runs: ACs on spikes, MACs on dense inputs, weight reads."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from qslm.analysis.ops import OpCounts, measure_op_counts
from qslm.checkpoint import load_model
from qslm.errors import QslmError
from tests.analysis.tiny_model import SPIKES, TOKENS, Tiny, one_inference


def test_op_counts_by_hand(tiny_ops):
    spike_fc, dense_fc, emb = (tiny_ops.units[n] for n in ("spike_fc", "dense_fc", "emb"))
    assert spike_fc.input == "spikes"
    assert spike_fc.acs == 3 * 3  # nonzero inputs x fan-out
    assert spike_fc.macs == 0
    assert spike_fc.input_rate == 3 / 8
    assert spike_fc.weight_reads == 12
    assert dense_fc.input == "dense"
    assert dense_fc.macs == 2 * 3 * 2  # input vectors x in x out
    assert dense_fc.acs == 0
    assert dense_fc.weight_reads == 6  # weights only; the bias is not a quantized weight
    assert emb.input == "ids"
    assert emb.macs == emb.acs == 0
    assert emb.weight_reads == 3 * 4  # looked-up rows only
    assert (tiny_ops.macs, tiny_ops.acs) == (12, 9)


def test_op_counts_are_per_inference_whatever_the_batch():
    model = Tiny()

    def run_batch_of_two():
        model(TOKENS.repeat(2, 1), SPIKES.repeat(2, 1, 1))
        return 2

    batched = measure_op_counts(model, run_batch_of_two)
    single = measure_op_counts(model, one_inference(model))
    for name in single.units:
        for key in ("macs", "acs", "weight_reads", "input_elements", "nonzero_inputs"):
            assert getattr(batched.units[name], key) == getattr(single.units[name], key), (name, key)
    assert batched.forwards == 1 and batched.inferences == 2


def test_conv_counts():
    conv = nn.Conv1d(2, 3, kernel_size=3, padding=1)
    dense = measure_op_counts(conv, lambda: conv(torch.randn(1, 2, 5)), inferences=1)
    assert dense.units["weight"].macs == (3 * 5) * (2 * 3)  # output elements x fan-in
    spikes = torch.zeros(1, 2, 5)
    spikes[0, 0, 1] = spikes[0, 1, 3] = 1.0
    sparse = measure_op_counts(conv, lambda: conv(spikes), inferences=1)
    assert sparse.units["weight"].acs == pytest.approx(90 * 2 / 10)


def test_op_counts_round_trip_through_json(tiny_ops):
    again = OpCounts.from_dict(json.loads(json.dumps(tiny_ops.to_dict())))
    assert again == tiny_ops


def test_run_must_say_how_many_inferences():
    model = Tiny()
    with pytest.raises(QslmError, match="run_fn must return how many inferences .* it returned a Tensor"):
        measure_op_counts(model, lambda: model(TOKENS, SPIKES))
    with pytest.raises(QslmError, match="must be a positive integer, got 0"):
        measure_op_counts(model, lambda: model(TOKENS, SPIKES), inferences=0)
    counts = measure_op_counts(model, lambda: model(TOKENS, SPIKES), inferences=1)
    assert counts.acs == 9
    with pytest.raises(QslmError, match="never called the model"):
        measure_op_counts(model, lambda: 1)


def test_packed_model_counts_like_the_float_one(tiny_encoder, tmp_path):
    from qslm.quant import quantize

    quantize(tiny_encoder, bits=8, out=tmp_path / "q8")
    ids = torch.randint(0, 100, (1, 6))
    counts = {}
    for label, folder in (("float", tiny_encoder), ("packed", tmp_path / "q8")):
        model = load_model(folder).model
        counts[label] = measure_op_counts(model, lambda: model(ids), inferences=1)
    for name, ops in counts["float"].units.items():
        packed = counts["packed"].units[name]
        assert (packed.weights, packed.fan_in, packed.input, packed.weight_reads, packed.macs) == (
            ops.weights, ops.fan_in, ops.input, ops.weight_reads, ops.macs), name
