"""Circuit breakers for Trio: around your own calls, and around resource tasks.

A :class:`Guard` wraps calls made in the caller's own task (``await
guard.run(client.get, url)``, or a decorator). A :class:`CircuitBreaker`
supervises a resource task that owns a connection and serves an inbox:
open a supervisor with :func:`open_supervisor`, start one with
:meth:`Supervisor.start_circuit_breaker`, and send it requests with
:meth:`CircuitBreaker.call`. While the dependency keeps failing, either kind
is OFF: calls get :data:`OFF` at once, and attempts (a start, a trial call)
are made at a slower rate until one succeeds. A keyed group
(:meth:`Supervisor.keyed_guard`, :meth:`Supervisor.keyed_breaker`) holds one
breaker per key (a host, a tenant, a shard), made on first use and forgotten
once healthy and idle.
"""

from ._core.adaptive import Adaptive
from ._core.errors import BreakerOff, CallTimeout, ResourceLost
from ._core.events import StateChange, StateChanges
from ._core.off import OFF, Off, OffType
from ._core.policy import Policy
from ._core.public import publish
from ._core.states import State
from ._core.statistics import BreakerStatistics, KeyedStatistics
from ._groups.keyed import KeyedBreaker, KeyedGuard
from ._groups.supervisor import Supervisor, open_supervisor
from ._guard.guard import Guard, RaisingGuard
from ._resource.breaker import CircuitBreaker
from ._resource.inbox import Inbox
from ._resource.request import Request

__all__ = [
    "OFF",
    "Adaptive",
    "BreakerOff",
    "BreakerStatistics",
    "CallTimeout",
    "CircuitBreaker",
    "Guard",
    "Inbox",
    "KeyedBreaker",
    "KeyedGuard",
    "KeyedStatistics",
    "Off",
    "OffType",
    "Policy",
    "RaisingGuard",
    "Request",
    "ResourceLost",
    "State",
    "StateChange",
    "StateChanges",
    "Supervisor",
    "open_supervisor",
]

publish(__name__, globals())
del publish
