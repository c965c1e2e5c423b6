"""Type and range checks for model config fields, run by each config dataclass's ``__post_init__`` so
config.json, ``qslm train --set`` and the Python API all get the same checks before a model is built.

The upper limits lie far above any spike-driven language model (SpikeGPT-216M is 768 wide, 18 layers
deep, with a 50k vocabulary); they exist so a typo cannot ask for a model that takes minutes to build
(the RWKV initialisation loops in Python over the width of every layer).
"""
from __future__ import annotations

import math

from ..errors import QslmError

MAX_VOCAB = 2 ** 21
MAX_WIDTH = 16384
MAX_LAYERS = 256
MAX_LENGTH = 2 ** 20
MAX_MULT = 64
MAX_CLASSES = 2 ** 16
MAX_TIME_STEPS = 1024


class ConfigError(QslmError, ValueError):
    """A config field of the wrong type or out of range. Also a ValueError, as the model constructors
    raised before these checks existed, so callers catching that keep working."""


def is_int(value: object) -> bool:
    """A real integer: JSON ``4.0``, ``"4"`` and ``true`` are not."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(config: object, name: str, low: int, high: int) -> None:
    value = getattr(config, name)
    if not is_int(value) or not low <= value <= high:
        raise ConfigError(f"config field {name} must be an integer in [{low}, {high}], got {value!r}")


def check_float(config: object, name: str, low: float, high: float, *, low_open: bool = False,
                high_open: bool = False) -> None:
    """A finite number in the interval; an integer is accepted and stored as a float."""
    value = getattr(config, name)
    number_ok = is_int(value) or isinstance(value, float)
    above = number_ok and (value > low if low_open else value >= low)
    below = number_ok and (value < high if high_open else value <= high)
    if not (number_ok and above and below and math.isfinite(value)):  # range first: 10**400 has no float
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"config field {name} must be a finite number in {interval}, got {value!r}")
    setattr(config, name, float(value))


def check_choice(config: object, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"config field {name} must be {' or '.join(map(repr, choices))}, got {value!r}")


def check_shared_fields(config: object) -> None:
    """The fields both architectures have. LIF neurons need tau > 1 to leak; a threshold <= 0 fires always."""
    check_int(config, "vocab_size", 1, MAX_VOCAB)
    check_int(config, "n_embd", 1, MAX_WIDTH)
    check_int(config, "n_layer", 1, MAX_LAYERS)
    check_int(config, "num_classes", 2, MAX_CLASSES)
    check_float(config, "tau", 1.0, 1e6, low_open=True)
    check_float(config, "v_threshold", 0.0, 1e6, low_open=True)
    check_float(config, "dropout", 0.0, 1.0, high_open=True)
