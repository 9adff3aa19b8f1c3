"""Resource breakers: a supervised task that serves requests from an inbox.

:mod:`.breaker` runs the resource around its core; :mod:`.mailbox` holds the
requests between callers and the resource; :mod:`.inbox` is the resource's
``ReceiveChannel`` view of it. Imports only :mod:`breaky._core`.
"""
