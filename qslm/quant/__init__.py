"""Post-training weight quantization: specs and plans, fake quantization for search, bit-packed storage,
exact memory accounting. Model folders (export, load) are ``qslm.checkpoint``."""
from .api import QuantizeResult, build_plan, quantize
from .apply import WeightCache, applied_plan, apply_plan, fake_quantized, float_weight, restore
from .memory import fixed_bytes, memory_report, plan_bytes, plan_bytes_by_unit, unit_bytes
from .bits import pack_codes, unpack_codes
from .pack import PLAN_FILE, load_packed_into
from .plan import QuantPlan
from .quantizer import QuantizedTensor, QuantSpec, fake_quantize, quantize_tensor
from .neuron_spec import NeuronSpec
from .units import find_units, quantizable_units

__all__ = ["PLAN_FILE", "NeuronSpec", "QuantPlan", "QuantSpec", "QuantizeResult", "QuantizedTensor", "WeightCache",
           "applied_plan", "apply_plan", "build_plan", "fake_quantize", "fake_quantized", "find_units", "fixed_bytes",
           "float_weight", "load_packed_into", "memory_report", "pack_codes", "plan_bytes", "plan_bytes_by_unit",
           "quantizable_units", "quantize", "quantize_tensor", "restore", "unit_bytes", "unpack_codes"]
