"""OpenTelemetry metrics of a supervisor's breakers, observed when collected.

Needs the OpenTelemetry API (``pip install 'breaky[opentelemetry]'``); the
application chooses the SDK and its exporters::

    import breaky.opentelemetry

    async with breaky.open_supervisor() as sup:
        instrumentation = breaky.opentelemetry.instrument(sup)
        ...
        instrumentation.uninstrument()

The numbers are those of :meth:`~breaky.CircuitBreaker.statistics`, read by
the callbacks of observable instruments when a metric reader collects: calls
cost the same with or without them.
"""

from ._core.public import publish
from ._exporters.opentelemetry import Instrumentation, instrument

__all__ = ["Instrumentation", "instrument"]

publish(__name__, globals())
del publish
