"""Which quantizer each unit uses at each bit-width, chosen by measurement, one width at a time.

With ``SearchConfig.methods`` naming more than round-to-nearest (registered methods such as ``rtn``,
``gptq``, ``codebook``: see ``qslm.quant.methods``), or ``SearchConfig.grids`` more than one grid, each
unit keeps, per bit-width, the method and grid whose damage (the unit alone quantized) is lowest among
those storing the same bytes (ties: the earlier in the list); one that stores more (the codebook's
levels, the asymmetric grid's zero-points) is kept only where its damage per byte beats the next
bit-width's. A unit whose calibration Hessian is known is weighed by its output error on those inputs
(``output_errors``: no forward pass, so choosing costs the fits alone); the others (an embedding, a
convolution) by the model's damage on the calibration inputs. A plan's choices are then (method, grid,
bits) per unit, and bytes, energy and export follow the spec.

``MethodChoice`` decides a width for every unit when a spec at that width is first asked for: a search
that never leaves 2 and 3 bits never measures a method at 8. What it decides at a width depends only on
the measurements at that width and the next, so the choices are those of deciding every width first
(``choose_methods``). A method offers each unit the widths it declares; one that needs the unit's
calibration Hessian (GPTQ: ``qslm.quant.unit_inputs``, recorded once from the quantizer calibration
inputs) is not offered to a unit that has none (an embedding, a convolution).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

from torch import nn

from ..errors import QslmError
from ..quant.apply import WeightCache, float_weight
from ..quant.context import QuantContext
from ..quant.methods import Needs, method_named
from ..quant.quantizer import DEFAULT_METHOD, QuantSpec
from ..quant.unit_inputs import record_hessians
from .variants import Option, Variant, below_line, keep_reachable, variants

SpecOf = Callable[[str, int], QuantSpec]
# damage of each (unit, spec): that unit alone quantized with that spec, measured together
MeasureDamages = Callable[[list[tuple[str, QuantSpec]]], list[float]]
StoredBytes = Callable[[str, QuantSpec | None], int]  # None: the unit kept float
# (chosen, back): is the plan ``chosen`` (unit -> spec) no worse on the task's metric than ``back``?
NoWorseTogether = Callable[[dict[str, QuantSpec], dict[str, QuantSpec]], bool]


def record_context(model: nn.Module, inputs: list, methods: tuple[str, ...], reset=None, weigh_grids: bool = False
                   ) -> QuantContext | None:
    """The calibration Hessians of every unit, when a method needs or uses them, or ``weigh_grids``: the
    choice of grid weighs units by their output error on them (None for rtn on one grid)."""
    uses = {method_named(m).uses for m in methods}
    if Needs.GRADIENTS in uses:
        wanting = [m for m in methods if method_named(m).uses is Needs.GRADIENTS]
        raise QslmError(f"methods {wanting} use {Needs.GRADIENTS.value}, which the search does not record yet "
                        "(it records unit-input Hessians)")
    if uses == {Needs.WEIGHT} and not weigh_grids:
        return None
    return QuantContext(record_hessians(model, inputs, reset))


def applicable(unit: str, bits: int, method: str, context: QuantContext | None) -> bool:
    """``method`` allows ``bits`` and has what it needs for ``unit``."""
    declared = method_named(method)
    if bits not in declared.bits:
        return False
    if declared.needs is Needs.HESSIANS:
        return context is not None and context.hessian(unit) is not None
    return True


class MethodChoice:
    """unit -> bits -> method (and grid), each width decided for all ``units`` when ``spec`` first asks for it.

    The choice is among ``variants(methods, grids, base)``: each method on each grid it can honour (grids:
    ``SearchConfig.grids``, default the base spec's alone). The signed and symmetric grids store the same
    bytes, so they are weighed like two methods of the fewest bytes; the asymmetric grid stores zero-points
    too, so it is weighed like a pricier method. Below, "method" means such a variant.

    At a width a unit takes, of the methods that store the fewest bytes (rtn, gptq), the one with the lowest
    damage; a method that stores more at that width (codebook: its levels) only where it buys damage more
    cheaply than the next width does, i.e. where its (bytes, damage) lies below the line from the cheapest
    method at this width to the cheapest at the next (float after the widest), with fewer bytes than the
    next. The ternary grid stores fewer bytes than its width's own grids: it stands for the width where they
    lie on or above the line from it to the next width, and, under a memory limit below every unit at the
    lowest width, where the limit needs it (least damage per byte saved first). Deciding a width weighs its methods, all units in one call (of ``measure``: in parallel on
    workers), then the next width's cheapest methods of the units where a pricier method beat the cheapest.

    Given ``local`` (damages of one kind for the units with a calibration Hessian, e.g. ``output_errors``),
    those units are weighed by it and ``measure`` by the others. All the methods of one unit are weighed
    by the same kind, so a unit's choice never compares two scales.

    ``units_budget`` (the memory limit less the float tensors' bytes) keeps the limit as reachable as with
    the cheapest methods: while every unit at the lowest width would not fit in it, the unit whose pricier
    method there costs the least damage per byte to give up goes back to the cheapest. That ranks units
    against each other, so it uses ``measure``'s damages for all of them (measured then, only when the
    limit bites).

    Units chosen one at a time can do worse together, and the damage (KL to the float model) can rank
    plans otherwise than the task's metric does: GPTQ, chosen by damage at 4 and 5 bits on the bundled
    language model, raises its perplexity there. So, given ``no_worse_together``, where units took a method
    of the fewest bytes other than the first listed (gptq over rtn), the plan of every unit at the width
    with the choices is compared with the plan with those units back at the first listed, which stores
    the same bytes; the choices stand only where they are no worse."""

    def __init__(self, units: list[str], bit_choices: list[int], methods: tuple[str, ...], base: QuantSpec,
                 context: QuantContext | None, measure: MeasureDamages, stored_bytes: StoredBytes,
                 units_budget: float | None = None, no_worse_together: NoWorseTogether | None = None,
                 local: MeasureDamages | None = None, grids: tuple[str, ...] | None = None):
        self.no_worse_together, self.local = no_worse_together, local
        # units weighed by ``local``: those with a calibration Hessian
        self._local_units = frozenset(u for u in units if local is not None and context is not None
                                      and context.hessian(u) is not None)
        self.units, self.widths, self.base = list(units), sorted(bit_choices), base
        self.variants = variants(tuple(methods), tuple(grids or (base.grid,)), base)
        if not self.variants:
            raise QslmError(f"none of the methods {list(methods)} can take any of the grids {list(grids or ())}")
        # what a unit takes where no variant serves it (gptq alone, on an embedding)
        self._fallback = Variant(DEFAULT_METHOD, next((v.grid for v in self.variants if v.grid != "ternary"), base.grid))
        self.context, self.measure, self.stored_bytes, self.units_budget = context, measure, stored_bytes, units_budget
        self._damage: dict[tuple[str, Variant, int], float] = {}  # each unit's own kind (local or measured)
        # ``measure``'s damages of locally weighed units, to rank them against the others when the limit bites
        self._measured: dict[tuple[str, Variant, int], float] = {}
        only_one = self.variants == (self._fallback,)  # nothing to choose: every width decided now
        self._chosen: dict[str, dict[int, Variant]] = {u: dict.fromkeys(self.widths, self._fallback) if only_one
                                                       else {} for u in self.units}
        self._specs: dict[tuple[str, int], QuantSpec] = {}

    def spec(self, unit: str, bits: int) -> QuantSpec:
        """The spec of ``unit`` at ``bits``: the base spec's settings with the method chosen for that width
        (the base spec's method for a width or unit the choice does not cover)."""
        key = (unit, bits)
        if key not in self._specs:
            variant = Variant(self.base.method, self.base.grid)
            if unit in self._chosen and bits in self.widths:
                if bits not in self._chosen[unit]:
                    self._decide(bits)
                variant = self._chosen[unit][bits]
            self._specs[key] = self._spec_with(bits, variant)
        return self._specs[key]

    def decided(self) -> dict[str, dict[int, str]]:
        """The methods chosen so far, units in order and widths ascending."""
        return {u: {b: v.method for b, v in sorted(by_bits.items())} for u, by_bits in self._chosen.items()}

    def decided_grids(self) -> dict[str, dict[int, str]]:
        """The grids chosen so far (an off-grid method: the base spec's), like ``decided``."""
        return {u: {b: v.grid for b, v in sorted(by_bits.items())} for u, by_bits in self._chosen.items()}

    def decide_all(self) -> dict[str, dict[int, str]]:
        for bits in self.widths:
            if any(bits not in by_bits for by_bits in self._chosen.values()):
                self._decide(bits)
        return self.decided()

    # --- one width, every unit ------------------------------------------------------------------------
    def _options(self, unit: str, bits: int) -> list[tuple[Variant, QuantSpec, int]]:
        """(variant, spec, bytes) of each variant that applies to ``unit`` at ``bits``, in list order."""
        found = [v for v in self.variants if v.takes(bits) and applicable(unit, bits, v.method, self.context)]
        # at two bits the symmetric grid's levels are the ternary grid's, in more bytes: where a method has both,
        # the ternary one stands
        on_ternary = {v.method for v in found if v.grid == "ternary"}
        found = [v for v in found if v.grid != "sym" or v.method not in on_ternary] or [self._fallback]
        specs = [self._spec_with(bits, v) for v in found]
        return [(v, s, self.stored_bytes(unit, s)) for v, s in zip(found, specs)]

    def _fewest_bytes(self, options: list[tuple[Variant, QuantSpec, int]]) -> int:
        """The width's own fewest bytes: those of its full-width grids (the ternary grid stores fewer, and is
        weighed as a cheaper option, unless it is all there is)."""
        return min(b for v, _, b in options if v.grid != "ternary" or all(o.grid == "ternary" for o, _, _ in options))

    def _to_measure(self, unit: str, bits: int, cheapest_only: bool) -> list[tuple[str, Variant, int]]:
        options = self._options(unit, bits)
        if len(options) == 1:  # nothing to choose between: not measured
            return []
        fewest = self._fewest_bytes(options)
        return [(unit, v, bits) for v, s, b in options
                if (not cheapest_only or b == fewest) and (unit, v, bits) not in self._damage]

    def _option(self, unit: str, bits: int, variant: Variant, stored: int, order: int, alone: bool) -> Option:
        return Option(stored, 0.0 if alone else self._damage[(unit, variant, bits)], order, variant)

    def _cheapest(self, unit: str, bits: int) -> Option:
        options = self._options(unit, bits)
        fewest = self._fewest_bytes(options)
        return min((self._option(unit, bits, v, b, i, len(options) == 1)
                    for i, (v, _, b) in enumerate(options) if b == fewest), key=lambda o: (o.damage, o.order))

    def _decide(self, bits: int) -> None:
        index = self.widths.index(bits)
        following = self.widths[index + 1] if index + 1 < len(self.widths) else None
        self._measure([job for unit in self.units for job in self._to_measure(unit, bits, cheapest_only=False)])
        measured = {unit: [self._option(unit, bits, v, b, i, len(options) == 1) for i, (v, _, b) in enumerate(options)]
                    for unit, options in ((unit, self._options(unit, bits)) for unit in self.units)}
        floors = {unit: self._cheapest(unit, bits) for unit in self.units}
        contenders = {}  # unit -> its pricier method with the least damage, where it beats the cheapest
        cheaper = {}  # unit -> its option below the width's bytes (the ternary grid) with the least damage
        for unit in self.units:
            pricier = [o for o in measured[unit] if o.bytes > floors[unit].bytes]
            best = min(pricier, key=lambda o: (o.damage, o.order), default=None)
            if best is not None and best.damage < floors[unit].damage:
                contenders[unit] = best
            below = [o for o in measured[unit] if o.bytes < floors[unit].bytes]
            if below:
                cheaper[unit] = min(below, key=lambda o: (o.damage, o.order))
        if following is not None:  # the next width's damage matters only where another option may win
            self._measure([job for unit in {**contenders, **cheaper}
                           for job in self._to_measure(unit, following, cheapest_only=True)])
        at_lowest: dict[str, tuple[Option, Option]] = {}
        for unit in self.units:
            floor, pick = floors[unit], floors[unit]
            if unit in contenders or unit in cheaper:
                nxt = (self._cheapest(unit, following) if following is not None
                       else Option(self.stored_bytes(unit, None), 0.0, len(self.variants), Variant("float", "")))
                # the cheaper option stands for the width where the width's own bytes buy less damage per byte
                # than the next width's do (its cheapest lies on or above the line from the cheaper to the next)
                if unit in cheaper and not below_line(floor, cheaper[unit], nxt):
                    pick = cheaper[unit]
                if unit in contenders and below_line(contenders[unit], pick, nxt):
                    pick = contenders[unit]
            self._chosen[unit][bits] = pick.variant
            at_lowest[unit] = (floor, pick)
        if index == 0 and self.units_budget is not None:
            if sum(pick.bytes for _, pick in at_lowest.values()) > self.units_budget:
                at_lowest = self._measured_options(bits, at_lowest)
            keep_reachable(self._chosen, bits, at_lowest, self.units_budget)
            self._reach_with_cheaper(bits, at_lowest, cheaper)
        if self.no_worse_together is not None:
            self._check_together(bits)

    def _reach_with_cheaper(self, bits: int, at_lowest: dict[str, tuple[Option, Option]],
                            cheaper: dict[str, Option]) -> None:
        """While every unit at the lowest width still stores more than ``units_budget``, units take their
        cheaper option there (the ternary grid), least damage per byte saved first, by ``measure``'s damages
        (one kind for every unit, as they are ranked against each other)."""
        # each unit's bytes now: its pick, or the width's cheapest where ``keep_reachable`` gave the pick back
        chosen = {u: pick.bytes if self._chosen[u][bits] == pick.variant else floor.bytes
                  for u, (floor, pick) in at_lowest.items()}
        total = sum(chosen.values())
        movable = [u for u in cheaper if cheaper[u].bytes < chosen[u]]
        if total <= self.units_budget or not movable:
            return
        damage = self._measured_damages(bits, [(u, v) for u in movable
                                               for v in (self._chosen[u][bits], cheaper[u].variant)])
        order = sorted(((damage[(u, cheaper[u].variant)] - damage[(u, self._chosen[u][bits])])
                        / (chosen[u] - cheaper[u].bytes), position, u) for position, u in enumerate(movable))
        for _, _, unit in order:
            if total <= self.units_budget:
                return
            total -= chosen[unit] - cheaper[unit].bytes
            self._chosen[unit][bits] = cheaper[unit].variant

    def _measured_damages(self, bits: int, jobs: list[tuple[str, Variant]]) -> dict[tuple[str, Variant], float]:
        """``measure``'s damage of each (unit, variant) at ``bits``, measured once (one kind for every unit)."""
        missing = [(u, v) for u, v in dict.fromkeys(jobs) if (u, v, bits) not in self._measured]
        if missing:
            damages = self.measure([(u, self._spec_with(bits, v)) for u, v in missing])
            for (unit, variant), damage in zip(missing, damages):
                self._measured[(unit, variant, bits)] = float(damage)
        return {(u, v): self._measured[(u, v, bits)] for u, v in jobs}

    def _check_together(self, bits: int) -> None:
        """The units that took a method of the fewest bytes other than the first listed one go back to it,
        unless ``no_worse_together`` finds every unit at ``bits`` with the choices no worse than with them
        back (the same bytes)."""
        first = {}  # unit -> the first listed of its fewest-bytes methods, where it took another of them
        for unit in self.units:
            options = self._options(unit, bits)
            fewest = self._fewest_bytes(options)
            cheapest = [v for v, _, b in options if b == fewest]
            if self._chosen[unit][bits] in cheapest[1:]:
                first[unit] = cheapest[0]
        if not first:
            return
        chosen = {u: self._spec_with(bits, self._chosen[u][bits]) for u in self.units}
        back = {**chosen, **{u: self._spec_with(bits, variant) for u, variant in first.items()}}
        if not self.no_worse_together(chosen, back):
            for unit, variant in first.items():
                self._chosen[unit][bits] = variant

    def _measured_options(self, bits: int, at_lowest: dict[str, tuple[Option, Option]]
                          ) -> dict[str, tuple[Option, Option]]:
        """``at_lowest`` with ``measure``'s damages for the locally weighed units that took a pricier method
        (the others were weighed by ``measure`` already)."""
        weighed = [u for u, (cheap, pick) in at_lowest.items() if u in self._local_units and pick.bytes > cheap.bytes]
        damage = self._measured_damages(bits, [(u, o.variant) for u in weighed for o in at_lowest[u]])
        return {u: tuple(o._replace(damage=damage[(u, o.variant)]) for o in options)
                if u in weighed else options for u, options in at_lowest.items()}

    def _spec_with(self, bits: int, variant: Variant) -> QuantSpec:
        return variant.spec(self.base, bits)

    def _measure(self, jobs: list[tuple[str, Variant, int]]) -> None:
        """Each (unit, variant, bits)'s damage: ``local``'s for the units it weighs, ``measure``'s for the rest."""
        local = [job for job in jobs if job[0] in self._local_units]
        measured = [job for job in jobs if job[0] not in self._local_units]
        for batch, kind in ((local, self.local), (measured, self.measure)):
            if batch:
                damages = kind([(unit, self._spec_with(bits, variant)) for unit, variant, bits in batch])
                for job, damage in zip(batch, damages):
                    self._damage[job] = float(damage)


def output_errors(model: nn.Module, context: QuantContext, weights: WeightCache) -> Callable[[str, QuantSpec], float]:
    """(unit, spec) -> the unit's output error quantized by ``spec`` on its calibration inputs
    (``UnitHessian.output_error``): the objective GPTQ minimizes, read from the Hessian with no forward
    pass. For units with a Hessian only. The quantized weight goes into ``weights``, where the search's
    measurements find it."""
    def error(unit: str, spec: QuantSpec) -> float:
        original = float_weight(model, unit)
        quantized = weights.dequantized(unit, original, spec, context)
        return context.hessian(unit).output_error(quantized - original)
    return error


def base_spec_of(base: QuantSpec) -> SpecOf:
    """Every unit at every width with the base spec's settings and method."""
    specs: dict[int, QuantSpec] = {}

    def spec_of(unit: str, bits: int) -> QuantSpec:
        if bits not in specs:
            specs[bits] = dataclasses.replace(base, bits=bits)
        return specs[bits]
    return spec_of


class BytesByWidth(Mapping[int, int]):
    """bits -> the bytes one unit stores at that width with its spec there, each computed when first read
    (reading a width decides its method)."""

    def __init__(self, unit: str, widths: list[int], spec_of: SpecOf, stored_bytes: StoredBytes):
        self.unit, self.widths, self.spec_of, self.stored_bytes = unit, list(widths), spec_of, stored_bytes
        self._bytes: dict[int, int] = {}

    def __getitem__(self, bits: int) -> int:
        if bits not in self._bytes:
            if bits not in self.widths:
                raise KeyError(bits)
            self._bytes[bits] = self.stored_bytes(self.unit, self.spec_of(self.unit, bits))
        return self._bytes[bits]

    def __iter__(self) -> Iterator[int]:
        return iter(self.widths)

    def __len__(self) -> int:
        return len(self.widths)


def choose_methods(units: list[str], bit_choices: list[int], methods: tuple[str, ...], base: QuantSpec,
                   context: QuantContext | None, damage: Callable[[str, QuantSpec], float],
                   stored_bytes: StoredBytes, units_budget: float | None = None,
                   grids: tuple[str, ...] | None = None) -> dict[str, dict[int, str]]:
    """unit -> bits -> method at every width (only rtn: nothing measured): ``MethodChoice`` with every
    width decided, measuring ``damage(unit, spec)`` one at a time."""
    choice = MethodChoice(units, bit_choices, methods, base, context,
                          lambda jobs: [damage(unit, spec) for unit, spec in jobs], stored_bytes, units_budget,
                          grids=grids)
    return choice.decide_all()
