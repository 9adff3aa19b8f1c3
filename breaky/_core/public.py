"""Public names say where users find them: ``breaky.ResourceLost``, no private path.

Each public module calls :func:`publish` once it has imported its names, as
trio does, so that reprs, tracebacks and ``help()`` show the public path.
"""

from __future__ import annotations

import types
from typing import cast


def publish(module: str, namespace: dict[str, object]) -> None:
    """Make ``module`` the home of the private modules' names in its ``__all__``.

    That is, the ``__module__`` of those classes and functions, and of their
    methods. Constants and aliases (``OFF``, ``Off``) have none to set.
    """
    names = cast("list[str]", namespace["__all__"])
    for name in names:
        _move(namespace[name], module)


def _move(obj: object, module: str) -> None:
    if not isinstance(obj, type | types.FunctionType):
        return  # a constant (OFF) or an alias (Off): theirs is not ours
    if not _is_private(obj.__module__):
        return
    obj.__module__ = module
    if isinstance(obj, type):
        for value in vars(obj).values():
            function = value.fget if isinstance(value, property) else value
            function = getattr(function, "__func__", function)  # class/staticmethod
            if isinstance(function, types.FunctionType) and _is_private(
                function.__module__
            ):
                function.__module__ = module


def _is_private(module: str) -> bool:
    return module.startswith("breaky.") and any(
        part.startswith("_") for part in module.split(".")[1:]
    )
