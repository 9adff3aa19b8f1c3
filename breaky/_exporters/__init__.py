"""Metrics exporters, behind :mod:`breaky.prometheus` and :mod:`breaky.opentelemetry`.

Each reads ``statistics()`` when scraped; nothing here is on a call path, and
the core never imports this room.
"""
