"""Random uses, failures and clock jumps over many keys (hypothesis).

Whatever happens, a group never holds more than ``max_keys`` keys, never
forgets a key that is not ON, counts failures or has calls in flight, and
every call gets exactly one answer; the group's statistics add up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import trio
import trio.testing
from hypothesis import event, given, settings
from hypothesis import strategies as st

import breaky
from breaky import OFF, State

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

MAX_KEYS = 6
KEYS = [f"host-{n}" for n in range(12)]

# (what, key, seconds): a call that replies, fails, or replies after a while;
# a jump of the clock; a reset of a live key.
OPERATIONS = st.one_of(
    st.tuples(
        st.sampled_from(["ok", "fail", "slow"]),
        st.sampled_from(KEYS),
        st.sampled_from([0.5, 3.0, 30.0]),
    ),
    st.tuples(
        st.just("jump"), st.just(""), st.sampled_from([0.1, 1.0, 4.0, 9.0, 25.0])
    ),
    st.tuples(st.just("reset"), st.sampled_from(KEYS), st.just(0.0)),
)


async def replying(seconds: float) -> str:
    await trio.sleep(seconds)
    return "reply"


async def failing() -> None:
    await trio.lowlevel.checkpoint()
    raise ConnectionRefusedError


async def exercise(operations: list[tuple[str, str, float]]) -> None:  # noqa: PLR0915 - one story
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock)
    answers: dict[int, list[str]] = {}
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard(
            "upstream",
            max_keys=MAX_KEYS,
            idle_timeout=5.0,
            failure_threshold=2,
            retry_timeout=3.0,
            call_timeout=None,
        )
        changes = hosts.subscribe(max_buffer=100_000)
        # Every guard ever made, by id: each is noted at its first call.
        guards: dict[int, breaky.Guard] = {}
        forgotten = 0

        async def noted(key: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
            """Note the key's guard as its call runs, then run ``fn(*args)``."""
            # run() has just used the key, and a guard's ON path reaches its
            # function with no checkpoint: this use of the key changes nothing.
            assert key in hosts
            guard = hosts[key]
            guards[id(guard)] = guard
            return await fn(*args)

        async def call(number: int, what: str, key: str, seconds: float) -> None:
            answer = answers[number] = []
            try:
                if what == "fail":
                    result: Any = await hosts.run(key, noted, key, failing)
                else:
                    result = await hosts.run(key, noted, key, replying, seconds)
            except ConnectionRefusedError:
                answer.append("error")
            else:
                answer.append("off" if result is OFF else "reply")

        def check() -> int:
            """The bound holds; each key forgotten since was safe to forget."""
            assert len(hosts) <= MAX_KEYS
            forgotten = 0
            while True:
                try:
                    change = changes.receive_nowait()
                except trio.WouldBlock:
                    return forgotten
                if change.new is not State.STOPPED:
                    continue
                assert change.old is State.ON
                assert change.reason.startswith("forgotten")
                assert change.key not in hosts
                gone = [
                    g
                    for g in guards.values()
                    if g.name == change.breaker and g.state is State.STOPPED
                ]
                assert gone
                forgotten += 1
                for guard in gone:
                    assert guard.in_flight == 0
                    assert guard.statistics().failures == 0

        async with trio.open_nursery() as callers:
            for number, (what, key, seconds) in enumerate(operations):
                if what == "jump":
                    clock.jump(seconds)
                elif what == "reset":
                    if key in hosts:
                        hosts[key].reset()
                else:
                    callers.start_soon(call, number, what, key, seconds)
                await trio.testing.wait_all_tasks_blocked()
                forgotten += check()
            clock.jump(100)  # every slow call ends
        await trio.testing.wait_all_tasks_blocked()
        forgotten += check()
        stats = hosts.statistics()
    event(f"keys forgotten: {min(forgotten, 5)}{'+' if forgotten >= 5 else ''}")
    assert stats.forgotten == forgotten
    assert hosts.statistics() == attrs.evolve(
        stats, keys=0, states=dict.fromkeys(State, 0), not_on={}, failures=0
    )  # closed: the counts stay
    assert sorted(answers) == [
        n for n, (what, *_) in enumerate(operations) if what in {"ok", "fail", "slow"}
    ]
    assert all(len(answer) == 1 for answer in answers.values())
    outcomes = [answer[0] for answer in answers.values()]
    assert stats.calls == len(outcomes)
    assert stats.replies == outcomes.count("reply")
    assert stats.errors == outcomes.count("error")
    assert stats.off == outcomes.count("off")
    assert stats.pending == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(OPERATIONS, max_size=80))
def test_random_uses_keep_the_bound_and_the_failing_keys(
    operations: list[tuple[str, str, float]],
) -> None:
    trio.run(exercise, operations, clock=trio.testing.MockClock())
