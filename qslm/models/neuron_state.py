"""Neuron state between forward passes: SpikingJelly and snnTorch neurons keep their membrane on the module,
so every independent pass (a calibration batch, a measurement) starts from a reset."""
from __future__ import annotations

from torch import nn


def _is_memory_module(module: nn.Module) -> bool:
    """SpikingJelly's MemoryModule (neurons, stateful layers): states in ``_memories``, ``reset()`` restores them.

    Checked by shape rather than by import, and ``reset()`` is only called on such modules: elsewhere a
    method of that name may mean anything (re-initialising weights, say).
    """
    return isinstance(getattr(module, "_memories", None), dict) and callable(getattr(module, "reset", None))


def _keeps_snntorch_state(module: nn.Module) -> bool:
    """snnTorch neurons keep their hidden state (mem, syn, spk) on the module; ``reset_mem()`` zeroes it."""
    return callable(getattr(module, "reset_mem", None))


def reset_neuron_states(model: nn.Module) -> list[str]:
    """Put every stateful neuron of ``model`` back to its initial state; returns the names of those reset.

    Call it before each independent forward pass: SpikingJelly and snnTorch neurons otherwise start
    from the membrane the previous pass left. Modules that keep no state between calls are left alone.
    """
    reset: list[str] = []
    for name, module in model.named_modules():
        if _is_memory_module(module):
            module.reset()
        elif _keeps_snntorch_state(module):
            module.reset_mem()
        else:
            continue
        reset.append(name)
    return reset
