"""Prometheus metrics of a supervisor's breakers, read when scraped.

Needs ``prometheus_client`` (``pip install 'breaky[prometheus]'``)::

    from prometheus_client import REGISTRY, start_http_server
    from breaky.prometheus import BreakyCollector

    async with breaky.open_supervisor() as sup:
        REGISTRY.register(BreakyCollector(sup))
        start_http_server(9100, addr="127.0.0.1")
        ...

The collector reads :meth:`~breaky.CircuitBreaker.statistics` of every
breaker at each scrape, and does nothing in between: calls cost the same with
or without it. Breakers started later appear on the next scrape; stopped ones
disappear (a new breaker under an old name starts its counters from zero,
which Prometheus's ``rate()`` reads as a counter reset).
"""

from ._core.public import publish
from ._exporters.prometheus import BreakyCollector

__all__ = ["BreakyCollector"]

publish(__name__, globals())
del publish
