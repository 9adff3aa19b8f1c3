"""What holds many breakers: the registry, keyed groups and the supervisor.

Imports :mod:`breaky._core`, :mod:`breaky._resource` and :mod:`breaky._guard`.
"""
