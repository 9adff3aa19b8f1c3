"""Every public name says where users find it, as trio's do (issue 17, point 5)."""

from __future__ import annotations

import importlib
import pickle
import pkgutil
import traceback
import types

import pytest

import breaky

PUBLIC_MODULES = [
    "breaky",
    *(
        f"breaky.{info.name}"
        for info in pkgutil.iter_modules(breaky.__path__)
        if not info.name.startswith("_")
    ),
]


def test_the_public_modules_are_found() -> None:
    assert PUBLIC_MODULES == [
        "breaky",
        "breaky.opentelemetry",
        "breaky.prometheus",
        "breaky.redis",
        "breaky.testing",
    ]


def exported(module_name: str) -> list[tuple[str, object]]:
    module = importlib.import_module(module_name)
    return [(name, getattr(module, name)) for name in module.__all__]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_class_and_function_names_its_public_module(
    module_name: str,
) -> None:
    wrong = []
    for name, obj in exported(module_name):
        if isinstance(obj, type | types.FunctionType):
            if obj.__module__ != module_name:
                wrong.append(f"{name}: {obj.__module__}")
            if isinstance(obj, type):
                wrong += [
                    f"{name}.{attr}: {value.__module__}"
                    for attr, value in vars(obj).items()
                    if isinstance(value, types.FunctionType)
                    # not the methods attrs writes, whose module is attrs'
                    and value.__module__.startswith("breaky")
                    and value.__module__ != module_name
                ]
    # A name a public module re-exports from a private one needs
    # ``publish(__name__, globals())`` at the end of that module.
    assert wrong == []


def test_reprs_and_tracebacks_show_the_public_path() -> None:
    assert repr(breaky.OFF) == "breaky.OFF"
    assert repr(breaky.ResourceLost) == "<class 'breaky.ResourceLost'>"
    assert repr(breaky.State) == "<enum 'State'>"
    assert breaky.CircuitBreaker.call.__module__ == "breaky"
    assert breaky.CircuitBreaker.state.fget.__module__ == "breaky"  # type: ignore[attr-defined]
    try:
        raise breaky.ResourceLost("breaker 'db' lost its resource")
    except breaky.ResourceLost:
        last = traceback.format_exc().splitlines()[-1]
    assert last == "breaky.ResourceLost: breaker 'db' lost its resource"


def test_what_pickles_still_pickles() -> None:
    for obj in (breaky.State.ON, breaky.OFF, breaky.CallTimeout("late")):
        copy = pickle.loads(pickle.dumps(obj))  # noqa: S301 - our own bytes
        assert type(copy) is type(obj)
        assert str(copy) == str(obj)


def test_publish_leaves_what_is_not_breakys_private_alone() -> None:
    from breaky._core.public import publish  # noqa: PLC0415 - the helper itself

    def elsewhere() -> None: ...

    publish("breaky", {"__all__": ["elsewhere"], "elsewhere": elsewhere})
    assert elsewhere.__module__ == __name__
