"""Circuit-breaking supervisors for Trio tasks that depend on external resources.

Open a supervisor with :func:`open_supervisor`, start a breaker for each
resource task with :meth:`Supervisor.start_circuit_breaker`, and send it
requests with :meth:`CircuitBreaker.call`. While the resource keeps failing,
the breaker is OFF: calls get :data:`OFF` at once, and starts are retried at a
slower rate until one succeeds.
"""

from ._breaker import CircuitBreaker
from ._errors import CallTimeout, ResourceLost
from ._events import StateChange, StateChanges
from ._inbox import Inbox
from ._machine import State
from ._off import OFF, Off, OffType
from ._policy import Policy
from ._public import publish
from ._request import Request
from ._statistics import BreakerStatistics
from ._supervisor import Supervisor, open_supervisor

__all__ = [
    "OFF",
    "BreakerStatistics",
    "CallTimeout",
    "CircuitBreaker",
    "Inbox",
    "Off",
    "OffType",
    "Policy",
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
