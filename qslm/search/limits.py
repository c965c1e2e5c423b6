"""Memory and energy limits as people write them, parsed in one place for the CLI and the Python API.

A limit is either relative to the FP32 model or an amount with a unit:

* a fraction of FP32 in (0, 1]: ``0.125`` (a float, or the same text),
* a percentage of FP32 in (0, 100]: ``"12.5%"``,
* memory with a unit: ``"3MB"``, ``"512kB"``, ``"3MiB"``, ``"3145728B"`` (decimal kB/MB/GB are 1000^n
  bytes, binary KiB/MiB/GiB 1024^n, B bytes; units are read case-insensitively),
* energy per inference with a unit: ``"250pJ"``, ``"1.5nJ"``, ``"2uJ"`` (or ``µJ``), ``"mJ"``, ``"J"``.

A bare number above 1 is refused: ``2.0`` could mean 2 bytes or 200% and nothing tells which.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import QslmError

MEMORY_UNITS = {"b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2.0 ** 10, "mib": 2.0 ** 20, "gib": 2.0 ** 30}
ENERGY_UNITS = {"pj": 1.0, "nj": 1e3, "uj": 1e6, "µj": 1e6, "mj": 1e9, "j": 1e12}  # in pJ
_AMOUNT = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(%|[A-Za-zµ]+)?\s*$")


@dataclass(frozen=True)
class Limit:
    """One memory or energy limit: what was asked, and either a fraction of FP32 or an absolute amount
    (bytes or pJ)."""
    asked: float | str
    fraction: float | None = None
    amount: float | None = None

    def resolve(self, fp32_value: float) -> float:
        """The limit in bytes / pJ for a model whose FP32 value is ``fp32_value``."""
        return self.fraction * fp32_value if self.fraction is not None else self.amount

    def __str__(self) -> str:
        return str(self.asked).strip() + ("" if self.fraction is None else " of FP32")


def parse_memory_limit(value, name: str = "max_memory") -> Limit | None:
    return _parse_limit(value, name, MEMORY_UNITS, "bytes", ("B", "MB"), "e.g. 3MB, 3MiB, 3145728B")


def parse_energy_limit(value, name: str = "max_energy") -> Limit | None:
    return _parse_limit(value, name, ENERGY_UNITS, "pJ", ("pJ", "nJ"), "pJ, nJ or uJ, e.g. 250nJ")


def parse_quality_limit(value, name: str) -> float | None:
    """A quality constraint (points or relative): None (no limit) or a finite number >= 0 (0: no loss)."""
    if value is None:
        return None
    number = finite_number(value, name)
    if number < 0:
        raise QslmError(f"{name} must be >= 0, got {value!r}")
    return number


def finite_number(value, name: str) -> float:
    """``value`` as a float, refusing booleans, text that is not a number, NaN and infinities."""
    if isinstance(value, bool):
        raise QslmError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise QslmError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise QslmError(f"{name} must be a finite number, got {value!r}")
    return number


def _parse_limit(value, name: str, units: dict[str, float], unit_name: str, suggested: tuple[str, str],
                 unit_hint: str) -> Limit | None:
    if value is None or isinstance(value, Limit):
        return value
    expected = (f"expected a fraction of FP32 in (0, 1] (e.g. 0.125), a percentage (e.g. 12.5%) "
                f"or an amount in {unit_name} with a unit ({unit_hint})")
    if isinstance(value, str):
        match = _AMOUNT.match(value)
        if match is None:
            if _is_float_text(value):  # 'nan', 'inf': say why rather than only what is expected
                raise QslmError(f"{name} must be a finite number, got {value!r}")
            raise QslmError(f"{name} {value!r} is not a limit; {expected}")
        number, unit = finite_number(match.group(1), name), match.group(2)
    else:
        number, unit = finite_number(value, name), None
    if number <= 0:
        raise QslmError(f"{name} must be > 0 (nothing runs in {value!r}); {expected}")
    if unit == "%":
        if number > 100:
            raise QslmError(f"{name} {value!r} is over 100% of FP32; expected a percentage in (0, 100]")
        return Limit(value, fraction=number / 100)
    if unit is not None:
        factor = units.get(unit.lower())
        if factor is None:
            raise QslmError(f"{name} {value!r}: unknown unit {unit!r}; {expected}")
        return Limit(value, amount=finite_number(number * factor, name))
    if number > 1:
        raise QslmError(f"{name} {value!r} is ambiguous: a bare number must be a fraction of FP32 in (0, 1]; "
                        f"add a unit for an amount ({number:g}{suggested[0]} or {number:g}{suggested[1]}), or give "
                        f"a fraction <= 1 or a percentage (e.g. 12.5%)")
    return Limit(value, fraction=number)


def _is_float_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
