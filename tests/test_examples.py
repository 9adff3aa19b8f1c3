"""Every example under examples/ runs, and does what it says."""

from __future__ import annotations

import runpy
from pathlib import Path

import trio
import trio.testing

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, autojump_threshold: float = 0) -> object:
    main = runpy.run_path(str(EXAMPLES / name))["main"]
    clock = trio.testing.MockClock(autojump_threshold=autojump_threshold)
    return trio.run(main, clock=clock)


def test_database() -> None:
    seen = run_example("database.py")
    assert seen["replies"] > 30
    assert seen["OFF"] > 20
    assert seen["lost"] <= 1


def test_nested_supervisors() -> None:
    assert run_example("nested.py") == ["shard 0: hello", None, "shard 2: hello"]


def test_http_api() -> None:
    # Real sockets: time jumps only once all has been idle a little while.
    seen = run_example("http_api.py", autojump_threshold=0.005)
    assert seen["ok"] > 20
    assert seen["5xx"] == 3  # then the breaker is OFF
    assert seen["OFF"] > 0
