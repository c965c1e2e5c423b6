"""What a search measures on the model: sensitivity of units and groups to each bit-width (cached on disk),
and candidate plans' metric, each under fake quantization so nothing is copied."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from torch import nn
from tqdm import tqdm

from ..analysis.hierarchy import Hierarchy
from ..analysis.local_sensitivity import BlockLocalSensitivity
from ..analysis.sensitivity import OutputReference, SensitivityCache
from ..quant.apply import QuantContext, WeightCache, fake_quantized
from ..quant.plan import QuantPlan
from ..quant.quantizer import QuantSpec
from ..tasks.base import inputs_digest


class SensitivityTable:
    """Damage of quantizing ``members`` (one unit, or a whole group) to ``bits``, everything else float,
    measured exactly (whole model) or block-locally, and cached in ``cache`` across runs."""

    def __init__(self, model: nn.Module, hierarchy: Hierarchy, reference: OutputReference, method: str,
                 cache: SensitivityCache, model_digest: str, spec_of: Callable[[str, int], QuantSpec],
                 weights: WeightCache, context: QuantContext | None = None):
        self.model, self.reference, self.cache, self.digest = model, reference, cache, model_digest
        self.spec_of, self.weights, self.context = spec_of, weights, context
        self.calibration_digest = inputs_digest(reference.inputs) + f":{reference.measure}"
        self.local = (BlockLocalSensitivity.for_hierarchy(model, hierarchy, reference)
                      if method == "local" and hierarchy.blocks else None)

    def measure(self, members: tuple[str, ...], bits: int) -> dict:
        return self.measure_specs({u: self.spec_of(u, bits) for u in members})

    def measure_specs(self, specs: dict[str, QuantSpec]) -> dict:
        """Damage of quantizing exactly these units with these specs, everything else float."""
        members = tuple(specs)
        block = self.local.block_holding(members) if self.local is not None else None
        method = "local" if block is not None else "exact"  # units outside blocks: measured exactly
        described = {spec.describe() for spec in specs.values()}
        spec_key = described.pop() if len(described) == 1 else "|".join(
            sorted(f"{u}={s.describe()}" for u, s in specs.items()))
        key = SensitivityCache.key(self.digest, self.calibration_digest + (":local" if block else ""), members,
                                   spec_key)
        value = self.cache.get(key)
        if value is None:
            with fake_quantized(self.model, QuantPlan(dict(specs)), self.weights, self.context):
                value = self.local.damage(block) if block is not None else self.reference.damage()
            self.cache.put(key, value)
        return {**value, "method": method}

    def table(self, groups: dict[str, list[str]], units: list[str], bit_choices: list[int], progress: bool
              ) -> dict[str, dict[str, dict]]:
        """Every group and every unit alone at every bit-width: {name: {str(bits): measurement}}."""
        scopes = list(dict.fromkeys([tuple(m) for m in groups.values()] + [(u,) for u in units]))
        table: dict[str, dict[str, dict]] = {}
        with tqdm(total=len(scopes) * len(bit_choices), desc="sensitivity", disable=not progress,
                  leave=False) as bar:
            for members in scopes:
                name = next((g for g, m in groups.items() if tuple(m) == members), members[0])
                table[name] = {}
                for bits in bit_choices:
                    table[name][str(bits)] = self.measure(members, bits)
                    bar.update(1)
        return table


def timed(function):
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def cache_file(cache_dir: Path, model_digest: str) -> Path:
    return Path(cache_dir) / f"sensitivity-{model_digest[:16]}.jsonl"
