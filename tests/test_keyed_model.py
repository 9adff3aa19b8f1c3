"""Random uses, failures and clock jumps over many keys (hypothesis).

Whatever happens, a group never holds more than ``max_keys`` keys, never
forgets a key with calls in flight, forgets one that is OFF or counts
failures only once unused for twice ``idle_timeout``, and every call gets
exactly one answer; the group's statistics add up.

Churned through a small ``max_keys``, with dead hosts that stop being
called, a group forgets every key within three periods of its last use, and
refuses a new key only while every key is in use.
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
from breaky.testing import internals

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

MAX_KEYS = 6
KEYS = [f"host-{n}" for n in range(12)]
IDLE = 5.0

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
            idle_timeout=IDLE,
            failure_threshold=2,
            retry_timeout=3.0,
            call_timeout=None,
        )
        changes = hosts.subscribe(max_buffer=100_000)
        guards: dict[int, breaky.Guard] = {}  # every guard ever seen, by id
        last_use: dict[str, float] = {}
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
            last_use[key] = trio.current_time()
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
            # Looked at without a use (hosts[key] would be one).
            for guard in internals(hosts).keys:
                guards[id(guard)] = guard
            forgotten = 0
            while True:
                try:
                    change = changes.receive_nowait()
                except trio.WouldBlock:
                    return forgotten
                if change.new is not State.STOPPED:
                    continue
                assert change.reason.startswith("forgotten")
                assert change.key is not None
                assert change.key not in hosts
                gone = [
                    g
                    for g in guards.values()
                    if g.name == change.breaker and g.state is State.STOPPED
                ]
                assert gone
                forgotten += 1
                healthy = change.old is State.ON and all(
                    guard.statistics().failures == 0 for guard in gone
                )
                if not healthy:
                    assert change.time - last_use[change.key] >= 2 * IDLE
                for guard in gone:
                    assert guard.in_flight == 0

        async with trio.open_nursery() as callers:
            for number, (what, key, seconds) in enumerate(operations):
                if what == "jump":
                    clock.jump(seconds)
                elif what == "reset":
                    if key in hosts:
                        last_use[key] = trio.current_time()
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


# Churn: hosts come and go, dead ones stop being called.

HOSTS = [f"h{n}" for n in range(16)]


# (what, host): a call to a host (which replies, or fails if the host is
# dead); the host is dropped (never called again); time passes, a second at
# a time, so that every sweep falls on its period.
def operation(what: str) -> st.SearchStrategy[tuple[str, str]]:
    argument = st.sampled_from(["1", "2", "5"] if what == "jump" else HOSTS)
    return st.tuples(st.just(what), argument)


# Mostly calls: enough of them between sweeps to fill the group.
CHURN = st.sampled_from(["call"] * 6 + ["drop", "jump"]).flatmap(operation)


def forgotten_in_use(changes: breaky.StateChanges, last_use: dict[str, float]) -> int:
    """Check each key forgotten since; return how many were not healthy."""
    count = 0
    while True:
        try:
            change = changes.receive_nowait()
        except trio.WouldBlock:
            return count
        if change.new is not State.STOPPED:
            continue
        assert change.key is not None
        unused = change.time - last_use[change.key]
        if change.reason == f"forgotten: {MAX_KEYS} keys are alive":
            assert change.old is State.ON
        elif change.reason == f"forgotten: unused for {IDLE:g} s":
            assert change.old is State.ON
            assert unused > IDLE
        else:
            assert change.reason.endswith(f"unused for {2 * IDLE:g} s")
            assert unused >= 2 * IDLE
            count += 1


async def churn(dead: set[str], operations: list[tuple[str, str]]) -> None:
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock)
    dropped: set[str] = set()
    last_use: dict[str, float] = {}
    refused = stale = 0
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard(
            "upstream",
            max_keys=MAX_KEYS,
            idle_timeout=IDLE,
            failure_threshold=2,
            retry_timeout=3.0,  # over before a key is two periods unused
        )
        changes = hosts.subscribe(max_buffer=100_000)

        def in_use() -> bool:
            """Whether every live key is OFF or counts failures."""
            return all(
                guard.state is not State.ON or guard.statistics().failures
                for guard in internals(hosts).keys
            )

        async def call(host: str) -> None:
            nonlocal refused
            new, all_in_use = host not in hosts, in_use()
            full = len(hosts) == MAX_KEYS
            last_use[host] = trio.current_time()
            try:
                if host in dead:
                    result: Any = await hosts.run(host, failing)
                else:
                    result = await hosts.run(host, replying, 0)
            except ConnectionRefusedError:
                return
            if new:
                # Refused exactly when the group is full and every key in use.
                assert (result is OFF) == (full and all_in_use)
                refused += result is OFF
            elif result is OFF:
                assert host in dead

        for what, host in operations:
            if what == "jump":
                for _ in range(int(host)):
                    clock.jump(1)
                    await trio.testing.wait_all_tasks_blocked()
            elif what == "drop":
                dropped.add(host)
            elif host not in dropped:
                await call(host)
            await trio.testing.wait_all_tasks_blocked()
            now = trio.current_time()
            assert len(hosts) <= MAX_KEYS
            for key in hosts:
                # Forgotten within three periods of its last use (two when
                # healthy), by the sweeps that fall on each period.
                assert now - last_use[key] < 3 * IDLE, key
            stale += forgotten_in_use(changes, last_use)
        assert hosts.statistics().refused == refused
    event(f"refused: {min(refused, 3)}{'+' if refused >= 3 else ''}")
    event(f"forgotten in use: {min(stale, 3)}{'+' if stale >= 3 else ''}")


@settings(max_examples=150, deadline=None)
@given(
    st.sets(st.sampled_from(HOSTS), min_size=4, max_size=12),
    st.lists(CHURN, min_size=20, max_size=150),
)
def test_churn_refuses_a_new_key_only_while_every_key_is_in_use(
    dead: set[str], operations: list[tuple[str, str]]
) -> None:
    trio.run(churn, dead, operations, clock=trio.testing.MockClock())
