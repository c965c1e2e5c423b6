"""Block outputs reused across measurements: a block that would compute what it computed before is not
run again.

A search runs the model thousands of times, and most of each run repeats an earlier one: quantizing a
unit of block k leaves blocks 0..k-1 computing what the float model computed, and a module-tier move in
a late block leaves every block before it as in the current plan. ``BlockOutputCache`` memoises the
forward of each block of the hierarchy (and of each child of a block that holds two units or more) on

    (the digest of its arguments, the quantization specs of the units and neurons its forward uses).

So a measurement recomputes only from the first block whose inputs or weights changed, and inside a
changed block only the children that changed. Nothing is approximated: a served output is bit for bit
the output the block would compute, and the cache proves that for each block before using it. On one
calibration input, with the random state and neuron states of a measurement, ``build`` runs every block
and leaves out (with the reason, in ``left_out``) a block that

* draws random numbers (skipping it would shift every later draw),
* changes its arguments in place (skipping it would leave them unchanged),
* gives another output when called again on the same arguments (it keeps state between calls),
* returns something other than tensors, tuples, lists, dicts and plain values,
* computes another output when units it was not seen using are quantized (a weight read in a way the
  trace cannot see); units the trace never saw used are counted as used by every block,

and then checks that the model's outputs with every block served from the cache equal its outputs
computed in full; if they do not (the model reads something a block leaves behind), no block is cached.

Outputs are stored as copies and served as fresh copies, so a caller that changes them in place
changes nothing held here. An output is stored the second time its key is computed, not the first:
most keys of a sensitivity table are seen once (the blocks after a changed one), and copying those
would cost time and push out the ones that repeat. A search's candidates are few and costly, and each
starts from an earlier one, so their outputs are stored at once (``serving(store_first=True)``). ``max_bytes`` bounds the memory held (least recently used
entries go first). Only computations without autograd are cached; with gradients the blocks run as written.

    cache = BlockOutputCache.build(model, hierarchy, calibration[0], reset_neuron_states, max_bytes=2**29)
    with cache.serving():
        ...  # forward passes under any fake-quantized plan
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..analysis.hierarchy import Hierarchy
from ..errors import QslmError
from ..model_inputs import ModelInput, call_model
from ..models.neurons import lif_modules
from ..quant.apply import WeightCache, applied_plan, fake_quantized
from ..quant.plan import QuantPlan
from ..quant.quantizer import QuantSpec
from ..quant.units import Unit, find_units, inside, unit_tensor
from .block_values import Uncacheable, copied, digest_of, identical, nbytes_of

# The perturbation of the dependency check: any quantization that changes every weight will do.
PROBE_SPEC = QuantSpec(bits=2, granularity="per-tensor", symmetric=True, observer="minmax")
MAX_SEEN_KEYS = 1_000_000  # keys of about 100 bytes each: forgotten all at once past this


@dataclass
class Stage:
    """A module whose forward the cache memoises: the units and neurons its output depends on."""
    name: str
    module: nn.Module
    units: tuple[str, ...] = ()
    neurons: tuple[str, ...] = ()


@dataclass
class _Trace:
    """What ``build`` saw of one candidate stage while the model ran."""
    calls: int = 0
    units: set[str] = field(default_factory=set)
    neurons: set[str] = field(default_factory=set)
    problem: str | None = None
    args: tuple | None = None  # the first call's (args, kwargs), for the dependency check
    output: object = None


class _UnitUse(TorchFunctionMode):
    """Records which unit tensors each torch call touches, for every stage running at the time."""

    def __init__(self, tensors: dict[int, str], running: list[str], traces: dict[str, _Trace], seen: set[str]):
        super().__init__()
        self.tensors, self.running, self.traces, self.seen = tensors, running, traces, seen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for value in _leaves((args, kwargs)):
            unit = self.tensors.get(id(value))
            if unit is not None:
                self.seen.add(unit)
                for stage in self.running:
                    self.traces[stage].units.add(unit)
        return func(*args, **kwargs)


def _leaves(value) -> Iterator:
    if isinstance(value, (tuple, list)):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    else:
        yield value


def candidate_stages(model: nn.Module, hierarchy: Hierarchy) -> dict[str, nn.Module]:
    """The hierarchy's blocks and, inside each, the children that hold two units or more (in model order;
    a child with one weight costs about as much to look up as to compute)."""
    modules = dict(model.named_modules())
    stages: dict[str, nn.Module] = {}
    for block in hierarchy.blocks:
        stages[block.name] = modules[block.name]
        for child, module in modules[block.name].named_children():
            path = f"{block.name}.{child}"
            if sum(inside(hierarchy.units[u].module, path) for u in block.modules) >= 2:
                stages[path] = module
    return stages


def _rng_states(devices: set[torch.device]) -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if any(d.type == "cuda" for d in devices) and torch.cuda.is_available():
        states.extend(torch.cuda.get_rng_state_all())
    return states


class BlockOutputCache:
    """Memoised block forwards for one model (see the module docstring)."""

    def __init__(self, model: nn.Module, stages: list[Stage], left_out: dict[str, str], max_bytes: int):
        self.model, self.stages, self.left_out, self.max_bytes = model, stages, left_out, max_bytes
        self.hits = self.misses = 0
        self._entries: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._seen: set[tuple] = set()  # keys computed once, not stored (yet)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def describe(self) -> dict:
        """What the report records: the stages cached, those left out and why, and the bound."""
        return {"stages": [s.name for s in self.stages], "left_out": dict(self.left_out),
                "max_bytes": self.max_bytes}

    # ---- building: trace, checks ------------------------------------------------------------------------
    @classmethod
    def build(cls, model: nn.Module, hierarchy: Hierarchy, sample: ModelInput,
              reset: Callable[[nn.Module], object] | None, max_bytes: int) -> BlockOutputCache:
        """Trace ``model`` on one input ``sample`` (as a measurement runs it: ``reset`` first, no
        gradients) and keep the stages that pass the checks of the module docstring."""
        if applied_plan(model) is not None:
            raise QslmError("the block output cache is built on the float model, but a plan is applied to it")
        candidates = candidate_stages(model, hierarchy)
        if not candidates:
            return cls(model, [], {}, max_bytes)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            units = find_units(model)
            traces = cls._trace(model, candidates, sample, reset, units)
            if reset is not None:
                reset(model)
            all_units = list(units)
            seen = traces.pop("").units
            unseen = [u for u in all_units if u not in seen]
            neurons = list(lif_modules(model))
            probes = WeightCache()  # each unit probe-quantized once, whatever the number of stages
            left_out: dict[str, str] = {}
            stages = []
            for name, module in candidates.items():
                trace = traces[name]
                if trace.problem is None and trace.calls == 0:
                    trace.problem = "it never ran"
                if trace.problem is None:
                    used = tuple(u for u in all_units if u in trace.units or u in unseen)
                    inner = tuple(n for n in neurons if n in trace.neurons or inside(n, name))
                    trace.problem = cls._depends_elsewhere(model, module, all_units, used, trace, probes)
                    if trace.problem is None:
                        stages.append(Stage(name, module, used, inner))
                        continue
                left_out[name] = trace.problem
            cache = cls(model, stages, left_out, max_bytes)
            reason = cache._serving_problem(sample, reset, all_units, probes) if stages else None
            if reason is not None:
                cache = cls(model, [], {**left_out, **{s.name: reason for s in stages}}, max_bytes)
            if reset is not None:
                reset(model)
        return cache

    @staticmethod
    def _trace(model: nn.Module, candidates: dict[str, nn.Module], sample: ModelInput, reset,
               units: dict[str, Unit]) -> dict[str, _Trace]:
        traces = {name: _Trace() for name in candidates}
        everywhere = traces[""] = _Trace()  # units used anywhere in the model
        running: list[str] = []
        tensors = {id(unit_tensor(model, unit)): name for name, unit in units.items() if unit.packed is None}
        devices = {p.device for p in model.parameters()} | {b.device for b in model.buffers()}

        def traced(name: str, forward):
            trace = traces[name]

            def wrapped(*args, **kwargs):
                trace.calls += 1
                try:
                    before = digest_of((args, kwargs))
                except Uncacheable as error:
                    trace.problem = trace.problem or f"it takes an argument of type {error} (not a tensor or plain value)"
                    before = None
                rng = _rng_states(devices)
                running.append(name)
                try:
                    output = forward(*args, **kwargs)
                    if trace.problem is None and any(not torch.equal(a, b) for a, b in zip(rng, _rng_states(devices))):
                        trace.problem = "it draws random numbers"
                    if trace.problem is None and before is not None and digest_of((args, kwargs)) != before:
                        trace.problem = "it changes its arguments in place"
                    if trace.problem is None:
                        try:
                            kept = copied(output)
                        except Uncacheable as error:
                            trace.problem = f"it returns a {error} (not tensors, tuples, lists, dicts or plain values)"
                        else:
                            again = forward(*args, **kwargs)
                            if not identical(kept, again):
                                trace.problem = ("it gives another output when called again on the same "
                                                 "arguments (it keeps state between calls)")
                            elif trace.args is None:
                                trace.args, trace.output = copied((args, kwargs)), kept
                finally:
                    running.pop()
                return output
            return wrapped

        def neuron_called(name: str):
            def hook(_module, _args) -> None:
                for stage in running:
                    traces[stage].neurons.add(name)
            return hook

        neuron_hooks = [module.register_forward_pre_hook(neuron_called(name))
                        for name, module in lif_modules(model).items()]
        running.append("")
        try:
            with _patched({name: (m, traced(name, m.forward)) for name, m in candidates.items()}), \
                    _UnitUse(tensors, running, traces, everywhere.units):
                torch.manual_seed(0)
                if reset is not None:
                    reset(model)
                call_model(model, sample)
        finally:
            for hook in neuron_hooks:
                hook.remove()
        return traces

    @staticmethod
    def _depends_elsewhere(model: nn.Module, module: nn.Module, all_units: list[str], used: tuple[str, ...],
                           trace: _Trace, probes: WeightCache) -> str | None:
        """None if the stage computes its traced output again with every unit it does not use quantized."""
        others = QuantPlan({u: PROBE_SPEC for u in all_units if u not in used})
        if not others.units:
            return None
        args, kwargs = copied(trace.args)
        with fake_quantized(model, others, probes):
            output = module(*args, **kwargs)
        if identical(output, trace.output):
            return None
        return "its output changes with weights the trace did not see it use"

    def _serving_problem(self, sample: ModelInput, reset, all_units: list[str], probes: WeightCache) -> str | None:
        """None if the model's outputs with every stage served from the cache equal those computed, also
        right after a run under another plan has computed every stage (so nothing a block leaves behind
        on a computed run can stand in for what a served one skips)."""
        def run(serve: bool):
            torch.manual_seed(0)
            if reset is not None:
                reset(self.model)
            with self.serving() if serve else nullcontext():
                return copied(call_model(self.model, sample))
        computed = run(False)
        run(True)  # sees every key
        run(True)  # stores every output
        with fake_quantized(self.model, QuantPlan({u: PROBE_SPEC for u in all_units}), probes):
            run(True)  # computes every stage under another plan
        misses = self.misses
        served = run(True)
        repeated, exact = self.misses == misses, identical(computed, served)
        self.clear()
        if not repeated:
            return "the blocks' arguments differ between two runs on the same input"
        if not exact:
            return ("the model's outputs differ when its blocks are served from the cache (it reads something "
                    "a block leaves behind)")
        return None

    # ---- serving -------------------------------------------------------------------------------------
    @contextmanager
    def serving(self, store_first: bool = False) -> Iterator[BlockOutputCache]:
        """Inside the block, the stages' forwards are served from the cache where their key was stored.
        ``store_first`` stores outputs the first time their key is computed (for runs few and costly
        enough that the next one is likely to start from this one, like a search's candidates)."""
        with _patched({s.name: (s.module, self._memoised(s, s.module.forward, store_first)) for s in self.stages}):
            yield self

    def _memoised(self, stage: Stage, forward, store_first: bool):
        def wrapped(*args, **kwargs):
            if torch.is_grad_enabled():
                return forward(*args, **kwargs)
            try:
                key = self._key(stage, digest_of((args, kwargs)))
            except Uncacheable:
                return forward(*args, **kwargs)
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return copied(entry[0])
            self.misses += 1
            output = forward(*args, **kwargs)
            if not store_first and key not in self._seen:
                self._remember(key)
                return output
            try:
                self._store(key, copied(output))
            except Uncacheable:
                pass
            return output
        return wrapped

    def _key(self, stage: Stage, arguments: bytes) -> tuple:
        plan = applied_plan(self.model) or QuantPlan()
        return (stage.name, arguments, tuple(plan.units.get(u) for u in stage.units),
                tuple(plan.neurons.get(n) for n in stage.neurons))

    def _remember(self, key: tuple) -> None:
        if len(self._seen) >= MAX_SEEN_KEYS:
            self._seen.clear()
        self._seen.add(key)

    def _store(self, key: tuple, value) -> None:
        self._seen.discard(key)
        size = nbytes_of(value)
        if size > self.max_bytes:
            return
        self._entries[key] = (value, size)
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted

    def clear(self) -> None:
        self._entries.clear()
        self._seen.clear()
        self._bytes = 0
        self.hits = self.misses = 0


@contextmanager
def _patched(forwards: dict[str, tuple[nn.Module, Callable]]) -> Iterator[None]:
    """Each module's forward replaced (as an instance attribute) inside the block, put back on exit."""
    with ExitStack() as stack:
        for module, forward in forwards.values():
            had = "forward" in module.__dict__
            previous = module.__dict__.get("forward")
            module.forward = forward
            stack.callback(_restore_forward, module, had, previous)
        yield


def _restore_forward(module: nn.Module, had: bool, previous) -> None:
    if had:
        module.forward = previous
    else:
        del module.forward
