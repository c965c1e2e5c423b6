"""Bit-packed storage of quantized units: pack/unpack table, packed modules, export and load.

Bit layout: code i of a stream occupies bits ``[i*b, (i+1)*b)`` counted from the least significant bit
of byte 0 (little-endian bit order), so n codes take exactly ``ceil(n*b/8)`` bytes. 3-, 5-, 6- (and 7-)
bit codes straddle byte boundaries; 2- and 4-bit codes fill 4 and 2 per byte; 16-bit codes are two
little-endian bytes. Every packed stream is a uint8 tensor.

A quantized unit ``NAME`` (weight shape S, spec s, G = group_count(S, s) groups) is stored as

* ``NAME.weight_codes``      uint8 [ceil(numel(S) * bits / 8)]  codes in ``grouped`` order (row-major);
* ``NAME.weight_scale``      float32 [G];
* ``NAME.weight_zero_point`` uint8 [ceil(G * bits / 8)], zero-points packed like codes (asymmetric only);
* ``NAME.bias``              float32, as in the float model.

Everything else in the state dict is stored as float32 (non-float buffers keep their dtype). Shapes
come from the model built from ``config.json``; ``quant_plan.json`` says which units are packed how.
"""
from __future__ import annotations

import json
import math
import os
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer
from torch import nn

from ..errors import QslmError
from ..models.neurons import lif_modules
from .plan import QuantPlan
from .quantizer import QuantSpec, QuantizedTensor, dequantize_groups, group_count, quantize_tensor
from .units import PackedUnit

PLAN_FILE = "quant_plan.json"
SCALE_BYTES = 4  # float32 scales; see quantizer.py for why not fp16


# --- bit packing -------------------------------------------------------------------------------

def packed_size(n_codes: int, bits: int) -> int:
    """Bytes that ``n_codes`` codes of ``bits`` bits take."""
    return math.ceil(n_codes * bits / 8)


def _check_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    flat = codes.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 2 ** bits):
        raise ValueError(f"{bits}-bit codes must lie in [0, {2 ** bits - 1}], got [{int(flat.min())}, "
                         f"{int(flat.max())}]")
    return flat


def _check_packed(data: torch.Tensor, n_codes: int, bits: int) -> None:
    if data.dtype != torch.uint8 or data.dim() != 1 or data.numel() != packed_size(n_codes, bits):
        raise ValueError(f"{n_codes} codes of {bits} bits need a 1-D uint8 tensor of {packed_size(n_codes, bits)} "
                         f"bytes, got {data.dtype} {list(data.shape)}")


def _pack_sub_byte(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Eight codes form one ``8*bits``-bit word (at most 56 bits, so int64 never overflows), written as
    ``bits`` bytes; the tail of the last word is cut off."""
    flat = _check_codes(codes, bits)
    n = flat.numel()
    words = F.pad(flat, (0, -n % 8)).view(-1, 8)
    word = (words << (torch.arange(8, device=flat.device) * bits)).sum(dim=1)
    data = (word[:, None] >> (torch.arange(bits, device=flat.device) * 8)) & 0xFF
    return data.reshape(-1)[:packed_size(n, bits)].to(torch.uint8)


def _unpack_sub_byte(data: torch.Tensor, n_codes: int, bits: int) -> torch.Tensor:
    _check_packed(data, n_codes, bits)
    raw = F.pad(data.to(torch.int64), (0, -data.numel() % bits)).view(-1, bits)
    word = (raw << (torch.arange(bits, device=data.device) * 8)).sum(dim=1)
    codes = (word[:, None] >> (torch.arange(8, device=data.device) * bits)) & (2 ** bits - 1)
    return codes.reshape(-1)[:n_codes].to(torch.int32)


def _pack_8(codes: torch.Tensor) -> torch.Tensor:
    return _check_codes(codes, 8).to(torch.uint8)


def _unpack_8(data: torch.Tensor, n_codes: int) -> torch.Tensor:
    _check_packed(data, n_codes, 8)
    return data.to(torch.int32)


def _pack_16(codes: torch.Tensor) -> torch.Tensor:
    flat = _check_codes(codes, 16)
    return torch.stack([flat & 0xFF, flat >> 8], dim=1).reshape(-1).to(torch.uint8)


def _unpack_16(data: torch.Tensor, n_codes: int) -> torch.Tensor:
    _check_packed(data, n_codes, 16)
    pairs = data.to(torch.int32).view(-1, 2)
    return pairs[:, 0] | (pairs[:, 1] << 8)


Packer = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor, int], torch.Tensor]]
PACKERS: dict[int, Packer] = {
    **{bits: (partial(_pack_sub_byte, bits=bits), partial(_unpack_sub_byte, bits=bits)) for bits in range(1, 8)},
    8: (_pack_8, _unpack_8),
    16: (_pack_16, _unpack_16),
}


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes in [0, 2**bits) (any shape, flattened row-major) -> packed uint8 stream."""
    return PACKERS[bits][0](codes)


def unpack_codes(data: torch.Tensor, bits: int, n_codes: int) -> torch.Tensor:
    """Packed uint8 stream -> the first ``n_codes`` codes as a flat int32 tensor."""
    return PACKERS[bits][1](data, n_codes)


def stored_weight_bytes(shape: torch.Size | tuple[int, ...], spec: QuantSpec) -> int:
    """Exact bytes of a quantized weight on disk and in RAM: codes + scales + zero-points."""
    n_groups = group_count(shape, spec)
    zero_points = 0 if spec.symmetric else packed_size(n_groups, spec.bits)
    return packed_size(math.prod(shape), spec.bits) + SCALE_BYTES * n_groups + zero_points


# --- packed modules ----------------------------------------------------------------------------

class _PackedWeight(PackedUnit):
    """Holds a weight as packed codes + scales (+ zero-points) buffers; dequantizes it on use."""

    def __init__(self, spec: QuantSpec, weight_shape: torch.Size, bias: torch.Tensor | None):
        super().__init__()
        self.spec = spec
        self.weight_shape = torch.Size(weight_shape)
        n_groups = group_count(self.weight_shape, spec)
        self.register_buffer("weight_codes", torch.zeros(packed_size(self.weight_shape.numel(), spec.bits),
                                                         dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.zeros(n_groups, dtype=torch.float32))
        if not spec.symmetric:
            self.register_buffer("weight_zero_point", torch.zeros(packed_size(n_groups, spec.bits), dtype=torch.uint8))
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(torch.float32).clone(),
                                                           requires_grad=False)

    def store(self, quantized: QuantizedTensor) -> None:
        self.weight_codes.copy_(pack_codes(quantized.codes, self.spec.bits))
        self.weight_scale.copy_(quantized.scale)
        if quantized.zero_point is not None:
            self.weight_zero_point.copy_(pack_codes(quantized.zero_point, self.spec.bits))

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight (computed on every access; only the packed form is kept)."""
        n_groups = self.weight_scale.numel()
        codes = unpack_codes(self.weight_codes, self.spec.bits, self.weight_shape.numel()).view(n_groups, -1)
        zero_point = (None if self.spec.symmetric
                      else unpack_codes(self.weight_zero_point, self.spec.bits, n_groups))
        return dequantize_groups(codes, self.weight_scale, zero_point, self.spec).view(self.weight_shape)

    def extra_repr(self) -> str:
        return f"{list(self.weight_shape)}, {self.spec.describe()}, bias={self.bias is not None}"


class PackedLinear(_PackedWeight):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class PackedEmbedding(_PackedWeight):
    def __init__(self, spec: QuantSpec, weight_shape: torch.Size, padding_idx: int | None):
        super().__init__(spec, weight_shape, None)
        self.padding_idx = padding_idx

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.weight, self.padding_idx)


class PackedConv(_PackedWeight):
    def __init__(self, spec: QuantSpec, weight_shape: torch.Size, bias: torch.Tensor | None, conv: nn.Module):
        super().__init__(spec, weight_shape, bias)
        self.conv = F.conv1d if isinstance(conv, nn.Conv1d) else F.conv2d
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype),
                         self.stride, self.padding, self.dilation, self.groups)


def packed_like(module: nn.Module, spec: QuantSpec, name: str) -> _PackedWeight:
    """An empty packed stand-in for float ``module`` (buffers to be filled by ``store`` or a state dict)."""
    shape = module.weight.shape
    if isinstance(module, nn.Embedding):
        if module.max_norm is not None:
            raise QslmError(f"unit {name!r}: Embedding with max_norm (renormalises weights in place) cannot be packed")
        return PackedEmbedding(spec, shape, module.padding_idx)
    if isinstance(module, nn.Linear):
        return PackedLinear(spec, shape, module.bias)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise QslmError(f"unit {name!r}: only numeric zero padding can be packed, got padding="
                            f"{module.padding!r}, padding_mode={module.padding_mode!r}")
        return PackedConv(spec, shape, module.bias, module)
    raise QslmError(f"unit {name!r} is a {type(module).__name__}; packable units are Linear, Embedding, Conv1d/2d")


# --- export and load ---------------------------------------------------------------------------

def _fp32(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().cpu()
    return (t.to(torch.float32) if t.is_floating_point() else t).contiguous()


def packed_state_dict(model: nn.Module, plan: QuantPlan) -> dict[str, torch.Tensor]:
    """What ``model.safetensors`` holds for ``model`` quantized by ``plan`` (float weights of a model
    currently fake-quantized are taken from the saved originals)."""
    from .apply import float_weight  # apply builds on plan and pack's sibling modules; import on use

    plan.validate(model)
    units = dict(model.named_modules())
    state = {key: _fp32(value) for key, value in model.state_dict().items()}
    for name, spec in plan.quantized.items():
        module = units[name]
        packed = packed_like(module, spec, name)
        packed.store(quantize_tensor(float_weight(model, name), spec))
        prefix = f"{name}." if name else ""
        for key in module.state_dict():
            del state[prefix + key]
        state.update({prefix + key: _fp32(value) for key, value in packed.state_dict().items()})
    return state


def write_quantized_files(model: nn.Module, plan: QuantPlan, tokenizer: Tokenizer, folder: Path) -> dict[str, Path]:
    """Write a quantized model's files (config.json, model.safetensors packed, quant_plan.json,
    tokenizer.json) into ``folder`` (e.g. an output folder's staging folder); returns name -> path."""
    from ..models.zoo import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, write_config

    state = packed_state_dict(model, plan)
    write_config(folder, model.config)
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})  # one key: safetensors orders several at random
    (folder / PLAN_FILE).write_text(plan.to_json())
    tokenizer.save(str(folder / TOKENIZER_FILE))
    return {name: folder / name for name in (CONFIG_FILE, WEIGHTS_FILE, PLAN_FILE, TOKENIZER_FILE)}


def export_quantized(model: nn.Module, plan: QuantPlan, tokenizer: Tokenizer, out_dir: str | os.PathLike,
                     overwrite: bool = False, protect: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Write a quantized model into output folder ``out_dir`` (a ``quantize`` output, see
    ``qslm.outputs``: new, empty, or an earlier quantize output unless ``overwrite``). The model is left
    as it was."""
    from ..outputs import OutputFolder

    plan.validate(model)  # a bad plan is refused before the folder is touched
    with OutputFolder.claim(out_dir, "quantize", overwrite=overwrite, protect=protect) as folder:
        folder.commit(write_quantized_files(model, plan, tokenizer, folder.staging()))
    return Path(out_dir)


def set_neuron_quantizers(model: nn.Module, plan: QuantPlan) -> None:
    """Fixed-point state for every LIF the plan names (range from each neuron's own threshold)."""
    neurons = lif_modules(model)
    for name, spec in plan.neurons.items():
        neurons[name].state_quantizer = spec.quantizer(neurons[name].v_threshold)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def load_packed_into(model: nn.Module, state_dict: dict[str, torch.Tensor], plan_path: str | os.PathLike) -> None:
    """Turn float ``model`` (just built from its config) into the packed model ``plan_path`` describes
    and load ``state_dict`` into it strictly. Quantized units become packed modules of the same name
    that keep only codes and scales in memory."""
    plan = QuantPlan.load(plan_path)
    plan.validate(model)
    units = dict(model.named_modules())
    for name, spec in plan.quantized.items():
        if not name:
            raise QslmError(f"{plan_path}: the whole model cannot be one packed unit")
        replace_module(model, name, packed_like(units[name], spec, name))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise QslmError(f"packed weights do not match {plan_path}: {err}") from None
    set_neuron_quantizers(model, plan)
