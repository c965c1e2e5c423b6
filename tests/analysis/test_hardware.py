"""Hardware profiles: bundled or from a file, every constant checked, integer ops between their anchors."""
from __future__ import annotations

import json

import pytest

from qslm.analysis.hardware import HARDWARE_DIR, load_hardware_profile
from qslm.errors import QslmError


def test_integer_ops_follow_the_anchors():
    profile = load_hardware_profile("default_45nm")
    assert profile.add_pj(8) == pytest.approx(0.03) and profile.add_pj(32) == pytest.approx(0.1)
    assert profile.mult_pj(8) == pytest.approx(0.2) and profile.mult_pj(32) == pytest.approx(3.1)
    assert profile.add_pj(20) == pytest.approx(0.065)  # linear
    assert profile.mult_pj(16) == pytest.approx(0.2 + 2.9 * (256 - 64) / (1024 - 64))  # quadratic
    assert profile.mac_pj(None) == 4.6 and profile.ac_pj(None) == 0.9


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


def test_latency_classes_are_the_narrowest_that_fit():
    raw = json.loads((HARDWARE_DIR / "neuromorphic.json").read_text())["latency"]["integer"]
    profile = load_hardware_profile("neuromorphic")  # 16-bit accumulators, 32-bit activations
    assert profile.ac_rate(4) == raw["16"]["acs_per_s"] and profile.ac_rate(16) == raw["16"]["acs_per_s"]
    assert profile.ac_rate(17) == raw["32"]["acs_per_s"]
    assert profile.mac_rate(2) == raw["8"]["macs_per_s"] and profile.mac_rate(8) == raw["16"]["macs_per_s"]
    assert profile.mac_rate(16) == raw["32"]["macs_per_s"]  # sqrt(16 x 32) = 22.6 bits
    assert profile.mac_rate(None) < profile.mac_rate(2)
