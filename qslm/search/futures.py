"""Results that are not there yet, and what hands them out: an ``Executor`` takes a search's
measurements and returns ``Pending`` results at once (``qslm.search.executors`` has the executors:
in this process, or on Ray workers); a strategy waits on them (``qslm.search.problem``), and
``result()`` waits for the value.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar

from ..quant.plan import QuantPlan
from ..quant.quantizer import QuantSpec
from ..tasks.scores import Measured

T = TypeVar("T")


class Pending(Protocol[T]):
    def result(self) -> T: ...


class Deferred(Generic[T]):
    """A result computed the first time it is asked for."""

    def __init__(self, compute: Callable[[], T]):
        self._compute: Callable[[], T] | None = compute
        self._value: T | None = None

    def result(self) -> T:
        if self._compute is not None:
            self._value, self._compute = self._compute(), None
        return self._value  # type: ignore[return-value]


class Executor(Protocol):
    workers: int  # measurements that run at once: how far ahead strategies submit candidates

    def damage(self, specs: dict[str, QuantSpec]) -> Pending[dict]: ...

    def metric(self, plan: QuantPlan) -> Pending[tuple[Measured, float]]: ...

    def completed(self, pending: Sequence[Pending]) -> Iterator[int]:
        """Positions in ``pending`` as each result is ready (each exactly once)."""
        ...

    def close(self) -> None: ...
