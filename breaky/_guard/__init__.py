"""Guards: a circuit breaker around a coroutine call in the caller's own task.

Imports only :mod:`breaky._core`.
"""
