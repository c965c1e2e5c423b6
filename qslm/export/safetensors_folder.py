"""The packed safetensors folder: ``model.safetensors`` (bit-packed codes, scales, zero-points and float
tensors, a tied tensor once) and ``quant_plan.json``, plus ``config.json`` for a model built from a model
folder. ``qslm.load_quantized(MyModel(), folder)`` reads it back."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ..checkpoint import load_quantized, quantized_files_bytes, quantized_files_overhead, write_quantized_files
from ..quant.context import QuantContext
from ..quant.memory import safetensors_tensor_bytes
from ..quant.pack import WEIGHTS_FILE
from ..quant.plan import QuantPlan
from .targets import DEFAULT_TARGET, register_target


class SafetensorsFolder:
    name = DEFAULT_TARGET

    def write(self, model: nn.Module, plan: QuantPlan, folder: Path, context: QuantContext | None = None
              ) -> dict[str, Path]:
        return write_quantized_files(model, plan, folder, context=context)

    def load(self, model: nn.Module, folder: Path) -> nn.Module:
        return load_quantized(model, folder)

    def memory_bytes(self, files: dict[str, Path]) -> int:
        return safetensors_tensor_bytes(files[WEIGHTS_FILE])

    def disk_bytes(self, model: nn.Module, plan: QuantPlan) -> int:
        return quantized_files_bytes(model, plan)

    def overhead_bytes(self, model: nn.Module) -> int:
        return quantized_files_overhead(model)


register_target(SafetensorsFolder())
