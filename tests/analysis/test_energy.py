"""Energy and latency per inference from op counts and the hardware profile, checked by hand."""
from __future__ import annotations

import json

import pytest
import torch

from qslm.analysis.energy import energy_per_inference, latency_per_inference, measure_latency, power_mw
from qslm.analysis.hardware import (HARDWARE_DIR, hardware_profile_from_dict, list_hardware_profiles,
                                    load_hardware_profile)
from qslm.analysis.hierarchy import build_hierarchy
from qslm.analysis.ops import measure_op_counts
from qslm.checkpoint import load_model
from qslm.errors import QslmError
from tests.analysis.tiny_model import SPIKES, TOKENS, Tiny


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
