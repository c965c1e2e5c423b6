"""Cost models: operation counts measured with hooks, energy from the hardware profile, latency."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from qslm.analysis.cost import (
    HARDWARE_DIR,
    OpCounts,
    energy_per_inference,
    hardware_profile_from_dict,
    latency_per_inference,
    list_hardware_profiles,
    load_hardware_profile,
    measure_latency,
    measure_op_counts,
    power_mw,
)
from qslm.analysis.hierarchy import build_hierarchy
from qslm.checkpoint import load_model
from qslm.errors import QslmError

SPIKES = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])  # 2 time steps, 3 spikes
TOKENS = torch.tensor([1, 4, 7])


class Tiny(nn.Module):
    """emb reads 3 rows of 4; spike_fc sees spikes; dense_fc sees spike_fc's (non-binary) output."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.spike_fc = nn.Linear(4, 3, bias=False)
        self.dense_fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.spike_fc.weight.fill_(0.25)

    def forward(self, ids, spikes):
        self.emb(ids)
        return self.dense_fc(self.spike_fc(spikes))


def one_inference(model):
    def run():
        model(TOKENS, SPIKES)
        return 1
    return run


@pytest.fixture
def tiny_ops() -> OpCounts:
    model = Tiny()
    return measure_op_counts(model, one_inference(model))


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


def test_energy_by_hand_from_the_profile(tiny_ops):
    raw = json.loads((HARDWARE_DIR / "default_45nm.json").read_text())
    mac, ac = raw["float"]["mac_pj"], raw["float"]["ac_pj"]
    per_bit = raw["weight_memory"]["pj_per_access"] / raw["weight_memory"]["bits_per_access"]
    energy = energy_per_inference(tiny_ops, None, "default_45nm")
    assert energy.compute_pj == pytest.approx(12 * mac + 9 * ac)
    assert energy.memory_pj == pytest.approx((12 + 6 + 12) * 32 * per_bit)
    assert energy.total_pj == pytest.approx(12 * 4.6 + 9 * 0.9 + 30 * 32 / 64 * 10)  # 213.3 pJ

    # 8-bit weights, 32-bit activations: MAC = mult(8 x 32 product) + add(40 bits), AC = add(32)
    add32 = raw["integer_add"]["anchors_pj"]["32"]
    mult_8x32 = 0.2 + 2.9 * (8 * 32 - 64) / (1024 - 64)  # quadratic anchors: 0.78 pJ
    add40 = 0.03 + 0.07 * (40 - 8) / (32 - 8)
    energy8 = energy_per_inference(tiny_ops, {u: 8 for u in tiny_ops.units}, "default_45nm")
    assert energy8.compute_pj == pytest.approx(12 * (mult_8x32 + add40) + 9 * add32)
    assert energy8.memory_pj == pytest.approx(30 * 8 * per_bit)
    assert energy8.units["emb"].bits == 8


def test_integer_ops_follow_the_anchors():
    profile = load_hardware_profile("default_45nm")
    assert profile.add_pj(8) == pytest.approx(0.03) and profile.add_pj(32) == pytest.approx(0.1)
    assert profile.mult_pj(8) == pytest.approx(0.2) and profile.mult_pj(32) == pytest.approx(3.1)
    assert profile.add_pj(20) == pytest.approx(0.065)  # linear
    assert profile.mult_pj(16) == pytest.approx(0.2 + 2.9 * (256 - 64) / (1024 - 64))  # quadratic
    assert profile.mac_pj(None) == 4.6 and profile.ac_pj(None) == 0.9


@pytest.mark.parametrize("profile", ["default_45nm", "neuromorphic"])
def test_fewer_bits_cost_less_energy(tiny_encoder, profile):
    loaded = load_model(tiny_encoder)
    model = loaded.model
    with torch.no_grad():
        model.emb.weight.normal_(std=2.0)  # make the random model spike
    ids = torch.randint(0, model.config.vocab_size, (1, 6))
    ops = measure_op_counts(model, lambda: model(ids), inferences=1)
    assert ops.acs > 0 and ops.macs > 0  # spiking blocks and a dense classifier
    totals = [energy_per_inference(ops, {u: bits for u in ops.units}, profile).total_pj
              for bits in (None, 16, 8, 6, 4, 3, 2)]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == len(totals)
    block = build_hierarchy(model).blocks[0].modules
    only_block = energy_per_inference(ops, {u: 4 for u in block}, profile)
    assert totals[-1] < only_block.total_pj < totals[0]
    by_group = only_block.by_group(build_hierarchy(model).groups())
    assert sum(by_group.values()) == pytest.approx(only_block.total_pj)


def test_swapping_the_profile_changes_the_numbers(tiny_ops):
    assert set(list_hardware_profiles()) >= {"default_45nm", "neuromorphic"}
    bits = {u: 8 for u in tiny_ops.units}
    default = energy_per_inference(tiny_ops, bits, "default_45nm")
    neuromorphic = energy_per_inference(tiny_ops, bits, load_hardware_profile("neuromorphic"))
    assert neuromorphic.profile == "neuromorphic"
    assert neuromorphic.memory_pj < default.memory_pj
    assert neuromorphic.compute_pj < default.compute_pj  # narrower accumulators
    assert default.total_pj != neuromorphic.total_pj


def test_profile_from_a_file(tmp_path):
    raw = json.loads((HARDWARE_DIR / "default_45nm.json").read_text())
    raw["name"], raw["weight_memory"]["pj_per_access"] = "cheap-sram", 1.0
    path = tmp_path / "cheap.json"
    path.write_text(json.dumps(raw))
    profile = load_hardware_profile(path)
    assert profile.name == "cheap-sram" and profile.read_pj(64) == 1.0


def broken(tmp_path, edit) -> str:
    raw = json.loads((HARDWARE_DIR / "default_45nm.json").read_text())
    edit(raw)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(raw))
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.pop("accumulator_bits"), "missing key 'accumulator_bits'"),
    (lambda r: r["weight_memory"].pop("pj_per_access"), "missing key 'weight_memory.pj_per_access'"),
    (lambda r: r["float"].update(mac_pj=-1), "float.mac_pj must be a positive number, got -1"),
    (lambda r: r["float"].update(ac_pj="0.9"), "float.ac_pj must be a positive number, got '0.9'"),
    (lambda r: r["integer_add"].update(anchors_pj={"8": 0.03}), "needs exactly two distinct bit-widths"),
    (lambda r: r["integer_mult"].update(anchors_pj={"8": 3.1, "32": 0.2}), "must give positive energies"),
    (lambda r: r.pop("latency"), "missing key 'latency.integer'"),
    (lambda r: r["latency"].pop("weight_memory_bytes_per_s"), "missing key 'latency.weight_memory_bytes_per_s'"),
    (lambda r: r["latency"]["integer"].pop("32"), "latency.integer needs bit-width classes up to 32 bits"),
    (lambda r: r["latency"]["integer"].update({"x": {}}), "latency.integer must map bit-widths to rates"),
    (lambda r: r["latency"]["float"].update(acs_per_s=0), "latency.float.acs_per_s must be a positive number"),
    (lambda r: r["latency"]["integer"]["8"].pop("macs_per_s"), "missing key 'latency.integer.8.macs_per_s'"),
], ids=["missing", "missing-nested", "negative", "string", "one-anchor", "decreasing", "no-latency",
        "no-bandwidth", "classes-too-narrow", "class-not-a-width", "zero-rate", "missing-rate"])
def test_bad_profile_is_a_clear_error(tmp_path, edit, message):
    path = broken(tmp_path, edit)
    with pytest.raises(QslmError, match=rf"hardware profile {path}: .*{message[:20]}") as err:
        load_hardware_profile(path)
    assert message in str(err.value)


def test_unreadable_or_unknown_profile(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(QslmError, match="is not valid JSON"):
        load_hardware_profile(path)
    with pytest.raises(QslmError, match="'tpu' is neither a JSON file nor a bundled profile"):
        load_hardware_profile("tpu")


def test_a_profile_with_a_key_twice_is_refused(tmp_path):
    path = tmp_path / "twice.json"
    text = (HARDWARE_DIR / "default_45nm.json").read_text()
    path.write_text(text.replace("{", '{"name": "a", ', 1))
    with pytest.raises(QslmError, match="twice.json: key 'name' appears more than once"):
        load_hardware_profile(path)


def test_bad_bits_and_unknown_units(tiny_ops):
    with pytest.raises(QslmError, match=r"unknown units \['head'\]"):
        energy_per_inference(tiny_ops, {"head": 8})
    with pytest.raises(QslmError, match="bit-width of 'emb' must be an integer in 1..32 or None"):
        energy_per_inference(tiny_ops, {"emb": 0})


def test_stored_bytes_set_the_weight_traffic(tiny_ops):
    plain = energy_per_inference(tiny_ops, {"spike_fc": 4})
    # 12 weights at 4 bits = 6 bytes, plus 3 fp32 scales = 18 bytes = 12 bits per weight
    stored = energy_per_inference(tiny_ops, {"spike_fc": 4}, unit_bytes={"spike_fc": 18})
    assert stored.units["spike_fc"].memory_pj == pytest.approx(3 * plain.units["spike_fc"].memory_pj)
    assert stored.units["spike_fc"].compute_pj == plain.units["spike_fc"].compute_pj


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


def test_power_at_a_fixed_rate():
    assert power_mw(1e9, 1.0) == pytest.approx(1.0)  # 1 mJ per inference at 1 Hz
    profile = load_hardware_profile()
    assert power_mw(1e6, profile) == pytest.approx(1e6 * 1e-12 * profile.inference_rate_hz * 1e3)


def test_latency_by_hand_from_the_profile(tiny_ops):
    """Each unit takes the longer of its compute and its weight traffic; units add up."""
    raw = json.loads((HARDWARE_DIR / "default_45nm.json").read_text())
    rates, bandwidth = raw["latency"], raw["latency"]["weight_memory_bytes_per_s"]
    float_macs, float_acs = rates["float"]["macs_per_s"], rates["float"]["acs_per_s"]
    # emb: 12 weights read, no ops; spike_fc: 9 ACs, 12 weights; dense_fc: 12 MACs, 6 weights
    expected = (12 * 4 / bandwidth + max(9 / float_acs, 12 * 4 / bandwidth)
                + max(12 / float_macs, 6 * 4 / bandwidth))
    assert latency_per_inference(tiny_ops, None, "default_45nm") == pytest.approx(expected)
    # 8-bit weights: the AC runs in the 32-bit class (32-bit accumulator), the MAC at sqrt(8 x 32) = 16 bits
    int32_acs, int16_macs = rates["integer"]["32"]["acs_per_s"], rates["integer"]["16"]["macs_per_s"]
    expected8 = 12 / bandwidth + max(9 / int32_acs, 12 / bandwidth) + max(12 / int16_macs, 6 / bandwidth)
    assert latency_per_inference(tiny_ops, {u: 8 for u in tiny_ops.units}, "default_45nm") == pytest.approx(expected8)

    # with unlimited bandwidth only the compute is left
    raw["latency"]["weight_memory_bytes_per_s"] = 1e30
    fast_memory = hardware_profile_from_dict(raw)
    assert latency_per_inference(tiny_ops, None, fast_memory) == pytest.approx(9 / float_acs + 12 / float_macs)
    int8_macs = rates["integer"]["8"]["macs_per_s"]  # 2-bit weights: sqrt(2 x 32) = 8 bits
    assert latency_per_inference(tiny_ops, {"dense_fc": 2}, fast_memory) == pytest.approx(
        9 / float_acs + 12 / int8_macs)


def test_latency_classes_are_the_narrowest_that_fit():
    raw = json.loads((HARDWARE_DIR / "neuromorphic.json").read_text())["latency"]["integer"]
    profile = load_hardware_profile("neuromorphic")  # 16-bit accumulators, 32-bit activations
    assert profile.ac_rate(4) == raw["16"]["acs_per_s"] and profile.ac_rate(16) == raw["16"]["acs_per_s"]
    assert profile.ac_rate(17) == raw["32"]["acs_per_s"]
    assert profile.mac_rate(2) == raw["8"]["macs_per_s"] and profile.mac_rate(8) == raw["16"]["macs_per_s"]
    assert profile.mac_rate(16) == raw["32"]["macs_per_s"]  # sqrt(16 x 32) = 22.6 bits
    assert profile.mac_rate(None) < profile.mac_rate(2)


def test_stored_bytes_set_the_modelled_weight_traffic(tiny_ops):
    raw = json.loads((HARDWARE_DIR / "default_45nm.json").read_text())
    bandwidth = raw["latency"]["weight_memory_bytes_per_s"]
    plain = latency_per_inference(tiny_ops, {"emb": 4})
    stored = latency_per_inference(tiny_ops, {"emb": 4}, unit_bytes={"emb": 100})  # 40 weights: 20 bits each
    assert stored - plain == pytest.approx(12 * (20 - 4) / 8 / bandwidth)


@pytest.mark.parametrize("profile", ["default_45nm", "neuromorphic"])
def test_fewer_bits_are_never_slower_and_the_model_is_deterministic(tiny_encoder, profile):
    model = load_model(tiny_encoder).model
    with torch.no_grad():
        model.emb.weight.normal_(std=2.0)  # make the random model spike
    ops = measure_op_counts(model, lambda: model(torch.randint(0, model.config.vocab_size, (1, 6))), inferences=1)
    totals = [latency_per_inference(ops, {u: bits for u in ops.units}, profile) for bits in (None, 16, 8, 4, 2)]
    assert totals == sorted(totals, reverse=True) and totals[-1] < totals[0]
    assert totals == [latency_per_inference(ops, {u: bits for u in ops.units}, profile)
                      for bits in (None, 16, 8, 4, 2)]
    with pytest.raises(QslmError, match=r"unknown units \['head'\]"):
        latency_per_inference(ops, {"head": 8}, profile)


def test_latency_is_a_median_of_runs():
    model = Tiny()
    calls = []
    seconds = measure_latency(model, lambda: calls.append(model(TOKENS, SPIKES)), repeats=3, warmup=1)
    assert len(calls) == 4 and seconds > 0
    with pytest.raises(QslmError, match="repeats >= 1"):
        measure_latency(model, lambda: None, repeats=0)


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
