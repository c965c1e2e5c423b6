"""``SearchConfig``: how a search runs (bit-widths, strategy, budget, sensitivity method, seed, hardware,
quantizer settings, objective weights, units left out). Typed, checked, and round-trips through JSON,
so the report records exactly what ran.

    config = SearchConfig(bit_choices=(2, 3, 4, 8), strategy="tiered", ignore=("*.pos",))
    SearchConfig.from_dict(config.to_dict()) == config
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import InitVar, dataclass, field

from ..errors import QslmError
from ..export.targets import DEFAULT_TARGET
from ..quant.methods import method_named, method_names, registered_methods
from ..quant.quantizer import BITS, DEFAULT_METHOD, DEFAULT_SCALE_DTYPE, GRIDS, TERNARY_BITS, QuantSpec, grid_taken
from .objective import DEFAULT_WEIGHTS, parse_weights

SENSITIVITY_METHODS = ("exact", "local")  # see qslm.analysis.local_sensitivity
# "needed": each sensitivity is measured when the strategy first asks for it (the plan is the same, and the
# report's table holds what was asked for); "full": every unit and group at every width, first.
SENSITIVITY_TABLES = ("needed", "full")
DEFAULT_BIT_CHOICES = (2, 3, 4, 5, 6, 8)
BASE_SPEC = QuantSpec(bits=8, granularity="per-channel", symmetric=True, observer="mse", scale_dtype=DEFAULT_SCALE_DTYPE)
DEFAULT_BASELINE_BUDGET = 60  # evaluations for random and nsga2 when no budget is given
DEFAULT_BLOCK_CACHE_MB = 512


def default_methods(base_spec: QuantSpec) -> tuple[str, ...]:
    """The methods a search uses when none are named: every registered method that declares itself a
    default, less those the base spec asks for what they cannot honour (the codebook: asymmetric ranges,
    another observer)."""
    return tuple(m.name for m in registered_methods() if m.default and m.settings_problem(base_spec) is None)


# the built-in defaults; each helps somewhere in docs/benchmarks.md ("Quantizer methods: rtn, gptq, codebook")
DEFAULT_METHODS = default_methods(BASE_SPEC)


DEFAULT_GRIDS = ("sym", "signed", "asym", "ternary")


def default_grids(base_spec: QuantSpec) -> tuple[str, ...]:
    """The grids a search weighs per unit when none are named: all four on the default symmetric base spec
    (docs/benchmarks.md, "Grids chosen per unit" and "The ternary grid"; the ternary one where two bits are
    among the widths); a base spec on another grid (``--signed``) keeps that one."""
    return DEFAULT_GRIDS if base_spec.grid == "sym" else (base_spec.grid,)


# former names of settings -> their names now, still accepted where users may have written them
FORMER_NAMES = {"sensitivity": "sensitivity_method", "weights": "objective_weights"}


@dataclass(frozen=True)
class SearchConfig:
    bit_choices: tuple[int, ...] = DEFAULT_BIT_CHOICES
    strategy: str = "tiered"  # checked where strategies run (qslm.search.strategies.check_strategy)
    max_evaluations: int | None = None
    sensitivity_method: str = "exact"  # how a unit's damage is measured: SENSITIVITY_METHODS
    seed: int = 0
    hardware: str = "default_45nm"  # a bundled hardware profile or a JSON file
    base_spec: QuantSpec = BASE_SPEC  # granularity, symmetry, observer and scale dtype of every quantized unit
    objective_weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))  # qslm.search.objective
    ignore: tuple[str, ...] = ()  # glob patterns of units kept float (matched on names and parameter paths)
    # quantizers each unit may use; with several, each unit takes per bit-width the one that damages its
    # outputs least (qslm.search.methods). None: every default method the base spec allows (default_methods;
    # the codebook only with a symmetric mse base spec, as it ignores both)
    methods: tuple[str, ...] | None = None
    # the uniform grids (quantizer.GRIDS) each unit may take, weighed per unit and width with the methods
    # (qslm.search.methods.MethodChoice). None: default_grids(base_spec).
    grids: tuple[str, ...] | None = None
    # memory (MiB) for block outputs reused between measurements (qslm.search.block_cache); 0: none.
    # Results are the same either way, bit for bit.
    block_cache_mb: int = DEFAULT_BLOCK_CACHE_MB
    sensitivity_table: str = "needed"
    export_target: str = DEFAULT_TARGET  # where the chosen plan is written (qslm.export)
    # former names, still accepted: SearchConfig(sensitivity="local"), SearchConfig(weights={...})
    sensitivity: InitVar[str | None] = None
    weights: InitVar[dict | str | None] = None

    def __post_init__(self, sensitivity: str | None, weights):
        for former, value in (("sensitivity", sensitivity), ("weights", weights)):
            if value is not None:
                current = FORMER_NAMES[former]
                if getattr(self, current) != _field_default(current):
                    raise QslmError(f"{former}= and {current}= both set the {current} setting: give one "
                                    f"({former} is its former name)")
                object.__setattr__(self, current, value)
        bits = self.bit_choices
        if isinstance(bits, (str, bytes)) or not hasattr(bits, "__iter__"):
            raise QslmError(f"bit_choices must be a list of bit-widths, got {bits!r}")
        bits = tuple(bits)
        bad = [b for b in bits if isinstance(b, bool) or not isinstance(b, int) or b not in BITS]
        if bad or not bits:
            raise QslmError(f"unsupported bit-widths {bad or list(bits)}; choose some of {list(BITS)}")
        object.__setattr__(self, "bit_choices", tuple(sorted(set(bits))))
        if self.max_evaluations is not None and (isinstance(self.max_evaluations, bool) or not isinstance(
                self.max_evaluations, int) or self.max_evaluations < 1):
            raise QslmError(f"the evaluation budget must be a positive integer, got {self.max_evaluations!r}")
        if self.sensitivity_method not in SENSITIVITY_METHODS:
            raise QslmError(f"unknown sensitivity method {self.sensitivity_method!r}; expected one of "
                            f"{list(SENSITIVITY_METHODS)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise QslmError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.hardware, str) or not self.hardware:
            raise QslmError(f"hardware must be a profile name or a JSON path, got {self.hardware!r}")
        if not isinstance(self.base_spec, QuantSpec):
            raise QslmError(f"base_spec must be a QuantSpec, got {type(self.base_spec).__name__}")
        weights = parse_weights(self.objective_weights)
        if not all(math.isfinite(v) for v in weights.values()):
            raise QslmError(f"objective weights must be finite, got {weights}")
        object.__setattr__(self, "objective_weights", weights)
        if isinstance(self.ignore, str):
            raise QslmError(f"ignore must be a list of glob patterns, got the string {self.ignore!r}")
        object.__setattr__(self, "ignore", tuple(self.ignore))
        methods = (self.methods,) if isinstance(self.methods, str) else (
            default_methods(self.base_spec) if self.methods is None else tuple(self.methods))
        bad = [m for m in methods if m not in method_names()]
        if bad or not methods or len(set(methods)) != len(methods):
            raise QslmError(f"methods must be distinct names among {method_names()}, got {list(methods)}")
        for name in methods:
            problem = method_named(name).settings_problem(self.base_spec)
            if problem is not None:
                raise QslmError(f"method {name} cannot take the base spec {self.base_spec.describe()}: {problem}")
        for bits in self.bit_choices:  # a width no method takes could never be chosen: say so now
            if not any(bits in method_named(name).bits for name in methods):
                takers = [m.name for m in registered_methods() if bits in m.bits]
                raise QslmError(f"bit-width {bits} is taken by none of the methods {list(methods)}; add "
                                f"{' or '.join(takers) or 'a method that takes it'} to the methods")
        object.__setattr__(self, "methods", methods)
        object.__setattr__(self, "grids", self._checked_grids())
        if isinstance(self.block_cache_mb, bool) or not isinstance(self.block_cache_mb, int) or self.block_cache_mb < 0:
            raise QslmError(f"block_cache_mb must be a whole number of MiB >= 0 (0: no cache), got {self.block_cache_mb!r}")
        if not isinstance(self.export_target, str) or not self.export_target:
            raise QslmError(f"export_target must be a registered target's name, got {self.export_target!r}")
        if self.sensitivity_table not in SENSITIVITY_TABLES:
            raise QslmError(f"unknown sensitivity_table {self.sensitivity_table!r}; expected one of "
                            f"{list(SENSITIVITY_TABLES)}")

    def _checked_grids(self) -> tuple[str, ...]:
        def taken(grid: str) -> bool:
            return (any(method_named(m).grid and grid_taken(method_named(m), self.base_spec, grid) for m in self.methods)
                    and (grid != "ternary" or TERNARY_BITS in self.bit_choices))

        if self.grids is None:  # the default: those of default_grids that some method takes
            return tuple(g for g in default_grids(self.base_spec) if taken(g)) or (self.base_spec.grid,)
        grids = (self.grids,) if isinstance(self.grids, str) else tuple(self.grids)
        if not grids or len(set(grids)) != len(grids) or any(g not in GRIDS for g in grids):
            raise QslmError(f"grids must be distinct names among {list(GRIDS)}, got {list(grids)}")
        if grids == ("ternary",):
            raise QslmError(f"the ternary grid holds at {TERNARY_BITS} bits only; name another grid with it "
                            "(e.g. grids sym,ternary) for the other widths")
        for grid in grids:
            if grid == "ternary" and TERNARY_BITS not in self.bit_choices:
                raise QslmError(f"grid 'ternary' holds at {TERNARY_BITS} bits only, which bit_choices "
                                f"{list(self.bit_choices)} leave out; add {TERNARY_BITS} or drop the grid")
            if not taken(grid):
                raise QslmError(f"grid {grid!r} is taken by none of the methods {list(self.methods)} (the base spec "
                                f"{self.base_spec.describe()}); add rtn or gptq to the methods, or drop the grid")
        return grids

    @property
    def chooses_per_unit(self) -> bool:
        """Whether units may differ in method or grid at a width, so a plan is more than its widths."""
        return list(self.methods) != [DEFAULT_METHOD] or self.grids != (self.base_spec.grid,)

    @property
    def budget(self) -> int:
        """Evaluations a sampling strategy (random, nsga2) spends."""
        return self.max_evaluations or DEFAULT_BASELINE_BUDGET

    def to_dict(self) -> dict:
        raw = dataclasses.asdict(self)
        raw["bit_choices"] = list(self.bit_choices)
        raw["ignore"] = list(self.ignore)
        raw["methods"] = list(self.methods)
        raw["grids"] = list(self.grids)
        raw["base_spec"] = self.base_spec.to_dict()
        return raw

    @classmethod
    def from_dict(cls, raw: dict, source: str = "search config") -> "SearchConfig":
        if not isinstance(raw, dict):
            raise QslmError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        known = {f.name for f in dataclasses.fields(cls)} | set(FORMER_NAMES)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise QslmError(f"{source}: unknown keys {unknown}; expected some of {sorted(known)}")
        values = dict(raw)
        if "base_spec" in values:
            values["base_spec"] = QuantSpec.from_dict(values["base_spec"], f"{source}: base_spec")
        for key in ("bit_choices", "ignore", "methods", "grids"):
            if key in values and isinstance(values[key], list):
                values[key] = tuple(values[key])
        return cls(**values)


def _field_default(name: str):
    field_ = next(f for f in dataclasses.fields(SearchConfig) if f.name == name)
    return field_.default_factory() if field_.default is dataclasses.MISSING else field_.default


def config_from(config: SearchConfig | None, settings: dict) -> SearchConfig:
    """The search's one ``SearchConfig``: ``config``, or one built from keyword ``settings`` (its field
    names, or a former name in ``FORMER_NAMES``). Giving both, or one setting under two names, is an
    error that names both: a setting is given in one place."""
    fields = [f.name for f in dataclasses.fields(SearchConfig)]
    unknown = sorted(key for key in settings if key not in fields and key not in FORMER_NAMES)
    if unknown:
        raise QslmError(f"unknown search setting {', '.join(f'{k}=' for k in unknown)}; the settings are "
                        f"{', '.join(fields)} (SearchConfig's fields)")
    canonical: dict = {}
    given_as: dict[str, str] = {}
    for key, value in settings.items():
        field_name = FORMER_NAMES.get(key, key)
        if field_name in canonical:
            old, new = sorted((key, given_as[field_name]), key=lambda k: k == field_name)
            raise QslmError(f"{old}= and {new}= both set the {field_name} setting: give one "
                            f"({old} is its former name)")
        canonical[field_name], given_as[field_name] = value, key
    if config is not None and canonical:
        key = next(iter(settings))
        raise QslmError(f"config= and {key}= both set search settings: give {key} in one place, "
                        f"SearchConfig(..., {FORMER_NAMES.get(key, key)}=...) or the keyword without config=")
    if config is not None and not isinstance(config, SearchConfig):
        raise QslmError(f"config must be a qslm.SearchConfig, got {type(config).__name__}")
    return config if config is not None else SearchConfig(**canonical)
