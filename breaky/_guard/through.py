"""One attempt through a guard: what re-attempts, hedges and replicas need of it.

The attempts modules (:mod:`.attempts`, :mod:`.hedging`, :mod:`.replicas`)
reach a guard only through a :class:`Way`: its core (state, counters) and
its path for one attempt (:class:`Through`, the guard's own call path:
admission, bulkhead, timeout, outcome). A :class:`Route` says which way
each extra attempt of one call takes; :class:`Runs` tells an attempt that
ran ``fn`` from one the guard refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, final

from breaky._core.states import State

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from breaky._core.core import Core
    from breaky._core.policy import FromPolicy

    Timeout = float | FromPolicy | None

_ON = State.ON


class Through(Protocol):
    """One attempt through a guard: the guard's own call path."""

    def __call__(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[object, ...],
        kwargs: dict[str, Any] | None,
        timeout: Timeout,
        raise_off: bool,  # noqa: FBT001
        /,
    ) -> Awaitable[Any]:
        """Run ``fn`` once through the guard, as ``Guard.run`` would."""
        ...


@final
class Way:
    """A guard an attempt goes through, and the arguments it passes ``fn``."""

    __slots__ = ("args", "core", "through")

    def __init__(self, core: Core, through: Through, args: tuple[object, ...]) -> None:
        self.core = core
        self.through = through
        self.args = args


class Route(Protocol):
    """Which guard each extra attempt of one call goes through."""

    def on(self) -> bool:
        """Whether an extra attempt may go anywhere now (a guard is ON)."""
        ...

    def next(self) -> Way | None:
        """The way of an extra attempt (an ON guard), or ``None``."""
        ...


@final
class Single:
    """The route of a plain guard's call: every attempt goes through it."""

    __slots__ = ("way",)

    def __init__(self, way: Way) -> None:
        self.way = way

    def on(self) -> bool:
        return self.way.core.state is _ON

    def next(self) -> Way | None:
        return self.way if self.way.core.state is _ON else None


@final
class Runs:
    """``fn``, noting whether the guard called it: whether an attempt ran.

    An attempt the guard refused (OFF, shed) never calls it, so a refusal's
    :exc:`~breaky.BreakerOff` is told apart from one that ``fn`` raised.
    """

    __slots__ = ("fn", "ran")

    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self.fn = fn
        self.ran = False

    def __call__(self, *args: object, **kwargs: object) -> Awaitable[Any]:
        call = self.fn(*args, **kwargs)
        self.ran = True  # one that raised at once was a wrong call, no run
        return call
