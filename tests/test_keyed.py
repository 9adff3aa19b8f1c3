"""Keyed groups: one breaker per key, made on use, forgotten when healthy and idle."""

from __future__ import annotations

import functools
import logging
import random
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
import trio.testing
from support import LinkOnly, World, service

import breaky
from breaky import OFF, State
from breaky._core.decisions import Decisions
from breaky._core.fleet import View
from breaky.testing import internals

if TYPE_CHECKING:
    from collections.abc import Callable

    from trio.testing import MockClock as Clock


async def ok(value: object = "ok") -> object:
    await trio.lowlevel.checkpoint()
    return value


async def down() -> None:
    await trio.lowlevel.checkpoint()
    raise ConnectionRefusedError("down")


async def fail(hosts: breaky.KeyedGuard, key: str, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionRefusedError):
            await hosts.run(key, down)


async def keyed_service(
    inbox: breaky.Inbox[Any, Any],
    key: str,
    world: World,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``service``, whose replies say which key answered."""
    world.starts += 1
    try:
        await trio.sleep(1)  # connecting: calls made meanwhile wait
        task_status.started(key)
        async for request in inbox:
            world.seen.append((key, request.message))
            request.reply((key, request.message))
    finally:
        world.finally_ran += 1


def task_names() -> list[str]:
    """The names of every task of this run."""
    names: list[str] = []
    tasks = [trio.lowlevel.current_root_task()]
    while tasks:
        task = tasks.pop()
        names.append(task.name)
        tasks.extend(t for n in task.child_nurseries for t in n.child_tasks)
    return names


# Independence, lazy creation, lookups.


async def test_each_key_is_a_breaker_of_its_own(autojump_clock: Clock) -> None:
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream", failure_threshold=2, retry_timeout=10)
        assert await hosts.run("a", ok, 1) == 1
        await fail(hosts, "b", times=2)
        assert hosts["b"].state is State.OFF
        assert hosts["a"].state is State.ON
        assert await hosts.run("b", ok) is OFF
        assert await hosts.run("a", ok, 2) == 2
        assert hosts["a"].statistics().replies == 2
        assert hosts["b"].statistics().errors == 2
        assert hosts["b"].statistics().off == 1
        assert hosts["a"].name == "upstream[a]"
        assert hosts["b"] is not hosts["a"]
        # The trial of one key is its own: b recovers, a never noticed.
        await trio.sleep(10)
        assert await hosts.run("b", ok, 3) == 3
        assert hosts["b"].state is State.ON


async def test_nothing_is_made_until_a_key_is_used(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream")
        shards = sup.keyed_breaker("shards", keyed_service, world)
        await trio.sleep(1000)
        assert len(hosts) == len(shards) == 0
        assert list(hosts) == list(shards) == []
        assert world.starts == 0
        assert "a" not in hosts
        assert 3 not in hosts
        guard = hosts["a"]  # a lookup makes the key
        assert isinstance(guard, breaky.Guard)
        assert guard.state is State.ON
        assert "a" in hosts
        assert hosts["a"] is guard
        assert await shards.call("eu-3", "q") == ("eu-3", "q")
        assert world.starts == 1
        assert list(shards) == ["eu-3"]
        assert isinstance(shards["eu-3"], breaky.CircuitBreaker)
        assert shards["eu-3"].resource == "eu-3"
        assert sup["upstream"] is hosts
        assert sup["shards"] is shards
        assert list(sup) == ["upstream", "shards"]  # groups, not their keys
        assert "upstream[a]" not in sup
        assert repr(hosts) == "<breaky.KeyedGuard 'upstream', 1 keys>"
        assert hosts.name == "upstream"
        assert hosts.max_keys == 10_000
        assert hosts.idle_timeout == 300.0
        assert hosts.policy == breaky.Policy()


async def test_a_key_is_a_str_of_1_to_1024_characters(autojump_clock: Clock) -> None:
    good = ["h", "host:443", "ünïcode", "a[b]", "x" * 1024]
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream")
        shards = sup.keyed_breaker("shards", keyed_service, World())
        for key in good:
            assert await hosts.run(key, ok, key) == key
        assert sorted(hosts) == sorted(good)
        # A key is kept twice (itself, and in its name): not a megabyte of it.
        long = "x" * 1025
        for bad, said in [
            ("", r"got 0 characters: ''"),
            (long, r"got 1,025 .*'\.\.\.$"),
        ]:
            expected = rf"key must be a str of 1 to 1,024 characters .* {said}"
            with pytest.raises(ValueError, match=expected):
                await hosts.run(bad, ok)
            with pytest.raises(ValueError, match=expected):
                hosts[bad]
            with pytest.raises(ValueError, match=expected):
                await shards.call(bad, "q")
            with pytest.raises(ValueError, match=expected):
                await shards.cast(bad, "q")
        with pytest.raises(ValueError, match=r"got 1,048,576 characters"):
            await hosts.run("x" * 2**20, ok)
        assert len(hosts) == len(good)
        assert hosts.statistics().calls == len(good)  # nothing else was counted
        for bad in [3, b"host", None, ("a",), ["a"]]:
            with pytest.raises(TypeError, match=r"key must be a str .* got "):
                await hosts.run(bad, ok)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="key must be a str"):
                hosts[bad]  # type: ignore[index]
            with pytest.raises(TypeError, match="key must be a str"):
                await shards.call(bad, "q")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="key must be a str"):
                await shards.cast(bad, "q")  # type: ignore[arg-type]
        assert len(shards) == 0


async def test_timeout_and_errors_pass_through(autojump_clock: Clock) -> None:
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream", call_timeout=None)
        with pytest.raises(breaky.CallTimeout):
            await hosts.run("slow", trio.sleep, 10, timeout=1)
        assert hosts["slow"].statistics().timeouts == 1
        assert await hosts.run("slow", trio.sleep, 0, timeout=None) is None


# Forgetting.


async def test_an_idle_healthy_key_goes_after_idle_timeout_within_twice_it(
    autojump_clock: Clock,
) -> None:
    idle = 10.0
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream", idle_timeout=idle)
        changes = hosts.subscribe()
        start = trio.current_time()
        last_use: dict[str, float] = {}
        # Used at several phases of the sweep's period.
        for key, at in [("a", 0.0), ("b", 9.9), ("c", 10.1), ("d", 15.0)]:
            await trio.sleep_until(start + at)
            await hosts.run(key, ok)
            last_use[key] = trio.current_time()
        gone: dict[str, float] = {}
        while len(gone) < len(last_use):
            change = await changes.receive()
            assert change.new is State.STOPPED
            assert change.group == "upstream"
            assert change.key is not None
            assert change.breaker == f"upstream[{change.key}]"
            assert change.reason == "forgotten: unused for 10 s"
            gone[change.key] = change.time
            assert change.key not in hosts
        for key, used in last_use.items():
            assert idle < gone[key] - used <= 2 * idle, key
        assert len(hosts) == 0
        # The next use makes a fresh breaker.
        assert await hosts.run("a", ok) == "ok"
        assert hosts["a"].statistics().calls == 1
        stats = hosts.statistics()
        assert stats.forgotten == 4
        assert stats.calls == stats.replies == 5  # counts outlive their keys


async def test_a_key_in_use_is_never_forgotten(autojump_clock: Clock) -> None:
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream", idle_timeout=10)
        first = hosts["a"]
        for _ in range(100):
            await trio.sleep(9)
            assert await hosts.run("a", ok) == "ok"
        assert hosts["a"] is first


async def test_keys_in_use_are_kept(autojump_clock: Clock) -> None:
    # In use: called while OFF or counting failures, forced OFF, busy, in a
    # trial. Forgetting one would send calls to a dead host again.
    idle = 10.0
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard(
            "upstream",
            idle_timeout=idle,
            failure_threshold=3,
            retry_timeout=5,
            call_timeout=None,
        )
        await fail(hosts, "off", times=3)  # OFF
        await fail(hosts, "failing")  # ON, counts a failure
        hosts["forced"].force_off()
        held = trio.Event()
        await fail(hosts, "trial", times=3)

        async def wait_held() -> str:
            await held.wait()
            return "late"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hosts.run, "busy", wait_held)  # in flight
            await trio.sleep(5)  # trial's retry wait has passed
            nursery.start_soon(hosts.run, "trial", wait_held)  # the trial call
            for _ in range(10):  # fifteen periods
                await trio.sleep(1.5 * idle)
                await fail(hosts, "off")  # still called: a trial, failed
                hosts["failing"]  # a lookup is a use too
            assert hosts["trial"].in_flight == 1
            assert hosts["busy"].in_flight == 1
            assert sorted(hosts) == ["busy", "failing", "forced", "off", "trial"]
            assert hosts["off"].state is State.OFF
            held.set()
        assert hosts["trial"].state is State.ON
        # A key that is healthy again goes like any other.
        hosts["failing"].reset()
        hosts["forced"].reset()
        assert await hosts.run("forced", ok) == "ok"  # its trial
        # Gone within two periods of the sweep that last saw them busy (the
        # half second: not at the very instant of a sweep); "off", no longer
        # called, within three of its last call.
        await trio.sleep(2 * idle + 0.5)
        assert sorted(hosts) == ["off"]
        await trio.sleep(idle)
        assert sorted(hosts) == []


async def test_a_failing_key_nobody_calls_goes_within_three_idle_periods(
    autojump_clock: Clock,
) -> None:
    # Issue 22, defect 2: dead hosts no longer called (gone from service
    # discovery) filled max_keys for good, and every new key was refused.
    idle = 10.0
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard(
            "upstream",
            idle_timeout=idle,
            max_keys=4,
            failure_threshold=2,
            retry_timeout=5,
        )
        changes = hosts.subscribe()
        start = trio.current_time()
        last_use: dict[str, float] = {}
        # Used at several phases of the sweep's period.
        for key, at in [("dead-a", 0.0), ("dead-b", 9.9), ("dead-c", 10.1)]:
            await trio.sleep_until(start + at)
            await fail(hosts, key, times=2)
            last_use[key] = trio.current_time()
        await trio.sleep_until(start + 15)
        await fail(hosts, "failing")  # ON, one failure: no longer pins it
        last_use["failing"] = trio.current_time()
        assert await hosts.run("new", ok) is OFF  # every key is in use
        await trio.sleep_until(start + 15 + 3 * idle + 1)
        assert len(hosts) == 0
        gone: dict[str, tuple[float, State, str]] = {}
        while True:
            try:
                change = changes.receive_nowait()
            except trio.WouldBlock:
                break
            if change.new is State.STOPPED:
                assert change.key is not None
                gone[change.key] = (change.time, change.old, change.reason)
        assert sorted(gone) == sorted(last_use)
        for key, used in last_use.items():
            assert 2 * idle < gone[key][0] - used <= 3 * idle, key
        assert gone["dead-a"][1:] == (State.OFF, "forgotten: off, unused for 20 s")
        assert gone["failing"][1:] == (State.ON, "forgotten: on, unused for 20 s")
        # Room again.
        assert await hosts.run("new", ok) == "ok"
        stats = hosts.statistics()
        assert (stats.forgotten, stats.refused) == (4, 1)


async def test_a_guard_s_off_key_is_kept_until_its_retry_wait_is_over(
    autojump_clock: Clock,
) -> None:
    # Forgotten earlier, the next call would reach the dead host before
    # the wait says it may.
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard(
            "upstream", idle_timeout=10, failure_threshold=1, retry_timeout=100
        )
        await fail(hosts, "dead")
        await trio.sleep(99.9)
        assert "dead" in hosts
        await trio.sleep(10.1)  # the first sweep after the wait
        assert "dead" not in hosts


async def test_a_kept_key_stays_safe_until_idle_after_it_healed(
    autojump_clock: Clock,
) -> None:
    # Failures that expire make a key evictable with no use: it is then
    # forgotten within two periods of the sweep that saw it busy.
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard(
            "upstream", idle_timeout=10, failure_threshold=3, failure_window=25
        )
        await fail(hosts, "a")
        await trio.sleep(25)  # the failure has left the window; not swept yet
        assert "a" in hosts
        await trio.sleep(20)
        assert "a" not in hosts


async def test_the_sweeper_ends_with_the_last_key_and_comes_back(
    autojump_clock: Clock,
) -> None:
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream", idle_timeout=10)
        await hosts.run("a", ok)
        await trio.sleep(25)
        assert len(hosts) == 0
        await trio.testing.wait_all_tasks_blocked()
        assert "breaky 'upstream' sweeper" not in task_names()
        await hosts.run("b", ok)
        assert "breaky 'upstream' sweeper" in task_names()
        await trio.sleep(15)
        assert "b" in hosts
        await trio.sleep(10)
        assert "b" not in hosts


# The bound.


async def test_max_keys_evicts_the_least_recently_used(autojump_clock: Clock) -> None:
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream", max_keys=3)
        changes = hosts.subscribe()
        for key in "abc":
            await hosts.run(key, ok)
        await hosts.run("a", ok)
        hosts["c"]  # a lookup is a use too
        await hosts.run("d", ok)
        assert list(hosts) == ["a", "c", "d"]
        change = changes.receive_nowait()
        assert (change.key, change.new) == ("b", State.STOPPED)
        assert change.reason == "forgotten: 3 keys are alive"
        assert len(hosts) == 3
        await hosts.run("e", ok)
        assert list(hosts) == ["c", "d", "e"]
        assert hosts.statistics().forgotten == 2


async def test_max_keys_skips_keys_that_cannot_be_forgotten(
    autojump_clock: Clock,
) -> None:
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream", max_keys=3, failure_threshold=5)
        await fail(hosts, "a")
        await hosts.run("b", ok)
        await fail(hosts, "c")
        await hosts.run("d", ok)
        assert list(hosts) == ["a", "c", "d"]


async def test_when_every_key_fails_new_keys_are_answered_off(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="breaky")
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream", max_keys=2, failure_threshold=1)
        await fail(hosts, "a")
        await fail(hosts, "b")
        caplog.clear()
        called: list[str] = []

        async def record(key: str) -> str:
            called.append(key)
            return key

        for n in range(5):
            assert await hosts.run(f"new-{n}", record, f"new-{n}") is OFF
        with pytest.raises(breaky.BreakerOff, match=r"upstream\[x\]"):
            hosts["x"]
        assert called == []
        assert sorted(hosts) == ["a", "b"]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # one per spell, not one per call
        assert "2 keys are alive and none can be forgotten" in warnings[0].message
        assert warnings[0].group == "upstream"  # type: ignore[attr-defined]
        stats = hosts.statistics()
        assert stats.refused == 6
        assert stats.off == 5  # the refused calls, answered OFF
        assert stats.calls == stats.errors + stats.off == 7
        # One key heals: a new key takes its place, and the spell is over.
        hosts["a"].reset()
        assert await hosts.run("a", ok) == "ok"
        assert await hosts.run("new", record, "new") == "new"
        assert sorted(hosts) == ["b", "new"]
        hosts["new"].failure()
        assert await hosts.run("again", record, "again") is OFF
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2  # a new spell, a new warning


async def test_refusing_new_keys_looks_at_each_key_in_use_once_per_use(
    autojump_clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 22, defect 3: every refused new key looked at every live key
    # (3.8 ms a call with 10,000 OFF keys). A key found in use is looked at
    # again only once used again.
    looked = 0
    forgettable = Decisions.forgettable

    def counted(core: Decisions) -> bool:
        nonlocal looked
        looked += 1
        return forgettable(core)

    monkeypatch.setattr(Decisions, "forgettable", counted)
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard(
            "upstream", max_keys=1000, failure_threshold=1, retry_timeout=1000
        )
        for n in range(1000):
            await fail(hosts, f"dead-{n}")
        looked = 0
        for n in range(1000):
            assert await hosts.run(f"new-{n}", ok) is OFF
        assert looked == 1000  # each key once, by the first refusal
        for n in range(10):
            assert await hosts.run(f"dead-{n}", ok) is OFF  # used: worth a look
        looked = 0
        for n in range(1000):
            assert await hosts.run(f"new-{n}", ok) is OFF
        assert looked == 10
        assert hosts.statistics().refused == 2000


async def test_a_refused_call_cancelled_in_its_checkpoint(
    autojump_clock: Clock,
) -> None:
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream", max_keys=1, failure_threshold=1)
        await fail(hosts, "a")
        with trio.CancelScope() as scope:
            scope.cancel()
            await hosts.run("b", ok)
        stats = hosts.statistics()
        assert (stats.calls, stats.cancelled, stats.refused) == (2, 1, 1)


# Keyed resource breakers.


async def test_a_keyed_breaker_starts_each_key_on_first_use(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        shards = sup.keyed_breaker("shards", keyed_service, world)
        assert world.starts == 0
        replies: list[object] = []

        async def ask(key: str, message: str) -> None:
            replies.append(await shards.call(key, message))

        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(ask, "eu-3", f"q{n}")
            nursery.start_soon(ask, "us-1", "q")
            await trio.testing.wait_all_tasks_blocked()
            assert shards["eu-3"].state is State.STARTING  # the calls wait
            assert shards["eu-3"].in_flight == 3
            assert await shards.cast("eu-3", "c0") is None  # queued too
            assert shards["eu-3"].in_flight == 4
            stats = shards.statistics()
            assert stats.pending == 4  # calls, not casts, as statistics() says
            assert stats.pending == sum(shards[k].statistics().pending for k in shards)
            assert stats.states[State.STARTING] == 2
            assert set(stats.not_on) == {"eu-3", "us-1"}
        assert sorted(replies) == [
            ("eu-3", "q0"),
            ("eu-3", "q1"),
            ("eu-3", "q2"),
            ("us-1", "q"),
        ]
        assert world.starts == 2
        assert await shards.cast("us-1", "c") is None
        await trio.testing.wait_all_tasks_blocked()
        assert ("us-1", "c") in world.seen


async def test_a_forgotten_key_s_resource_is_stopped(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        shards = sup.keyed_breaker("shards", keyed_service, world, idle_timeout=10)
        assert await shards.call("eu-3", "q") == ("eu-3", "q")
        breaker = shards["eu-3"]
        await trio.sleep(21)
        assert "eu-3" not in shards
        assert breaker.state is State.STOPPED
        assert world.finally_ran == 1  # its inbox closed; it returned
        assert await breaker.call("late") is OFF
        assert await shards.call("eu-3", "again") == ("eu-3", "again")
        assert world.starts == 2


async def test_a_keyed_breaker_at_its_bound(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        shards = sup.keyed_breaker("shards", keyed_service, world, max_keys=1)
        assert await shards.call("a", "q") == ("a", "q")
        assert await shards.call("b", "q") == ("b", "q")  # a evicted
        await trio.testing.wait_all_tasks_blocked()
        assert world.finally_ran == 1
        shards["b"].force_off()
        assert await shards.call("c", "q") is OFF
        assert await shards.cast("c", "q") is OFF
        assert shards.statistics().refused == 2


async def test_a_keyed_breaker_key_that_fails_to_start_is_kept_while_called(
    autojump_clock: Clock, world: World
) -> None:
    world.down = True
    async with breaky.open_supervisor() as sup:
        shards = sup.keyed_breaker(
            "shards", service_for_key, world, idle_timeout=10, failure_threshold=2
        )
        assert await shards.call("a", "q") is OFF
        assert shards["a"].state is State.OFF
        for _ in range(7):
            await trio.sleep(15)
            assert await shards.call("a", "q") is OFF  # still called
        assert "a" in shards
        # No longer called: forgotten, and its retries end.
        await trio.sleep(30)
        assert "a" not in shards
        starts = world.starts
        await trio.sleep(100)
        assert world.starts == starts
        # Called again: a fresh breaker, which heals as any other.
        world.down = False
        assert await shards.call("a", "q") == "q"


async def service_for_key(
    inbox: breaky.Inbox[Any, Any],
    key: str,
    world: World,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    await service(inbox, world, task_status=task_status)


async def test_stopping_a_group_stops_every_key(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        shards = sup.keyed_breaker("shards", keyed_service, world)
        hosts = sup.keyed_guard("upstream")
        for key in "abc":
            assert await shards.call(key, "q") == (key, "q")
            await hosts.run(key, ok)
        guard = hosts["a"]
        await sup.stop_circuit_breaker("shards")
        assert world.finally_ran == 3
        await sup.stop_circuit_breaker("upstream")
        assert guard.state is State.STOPPED
        assert "shards" not in sup
        assert await shards.call("a", "q") is OFF
        assert await shards.cast("a", "q") is OFF
        assert await hosts.run("a", ok) is OFF
        with pytest.raises(RuntimeError, match="keyed guard 'upstream' is closed"):
            hosts["a"]
        with pytest.raises(TypeError, match="key must be a str"):
            hosts[5]  # type: ignore[index]
        with pytest.raises(TypeError, match="key must be a str"):
            await hosts.run(5, ok)  # type: ignore[arg-type]
        # The names are free again.
        sup.keyed_guard("shards")


async def test_groups_close_with_the_supervisor(
    autojump_clock: Clock, world: World
) -> None:
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream", idle_timeout=10)
        shards = sup.keyed_breaker("shards", keyed_service, world)
        changes = hosts.subscribe()
        await hosts.run("a", ok)
        await shards.call("s", "q")
        guard, breaker = hosts["a"], shards["s"]
    assert guard.state is breaker.state is State.STOPPED
    assert world.finally_ran == 1
    seen = [change async for change in changes]
    assert [(c.key, c.new) for c in seen] == [("a", State.STOPPED)]
    assert await hosts.run("a", ok) is OFF
    assert len(hosts) == 0


# Events, logs, the fleet's view.


async def test_changes_and_logs_name_the_group_and_the_key(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="breaky")
    async with breaky.open_supervisor() as sup:
        everything = sup.subscribe()
        hosts = sup.keyed_guard("upstream", failure_threshold=1)
        plain = sup.guard("plain", failure_threshold=1)
        await fail(hosts, "b")
        with pytest.raises(ConnectionRefusedError):
            await plain.run(down)
        keyed, other = everything.receive_nowait(), everything.receive_nowait()
        assert keyed.breaker == "upstream[b]"
        assert (keyed.group, keyed.key) == ("upstream", "b")
        assert keyed.new is State.OFF
        assert (other.breaker, other.group, other.key) == ("plain", None, None)
        off = [r for r in caplog.records if "turned OFF" in r.message]
        assert off[0].message.startswith("guard 'upstream[b]' turned OFF")
        assert (off[0].group, off[0].key) == ("upstream", "b")  # type: ignore[attr-defined]
        assert not hasattr(off[1], "group")


async def test_a_fleet_sees_each_key_through_the_link(autojump_clock: Clock) -> None:
    fleet = LinkOnly()
    async with breaky.open_supervisor(fleet=fleet) as sup:
        hosts = sup.keyed_guard("upstream", idle_timeout=10)
        plain = sup.guard("plain")
        link = internals(sup).link
        changes = link.subscribe()
        await hosts.run("a", ok)
        assert link.names() == ["plain", "upstream[a]"]
        assert [m.name for m in link.members()] == ["plain", "upstream[a]"]
        member = link.member("upstream[a]")
        assert member is not None
        assert link.member("upstream") is None  # the group is no breaker
        member.tell(View.OFF, "fleet OFF: 2 of 3 instances report OFF")
        assert hosts["a"].state is State.OFF
        change = changes.receive_nowait()
        assert change.breaker == "upstream[a]"
        assert (change.group, change.key) == ("upstream", "a")
        assert await hosts.run("a", ok) is OFF
        member.tell(View.ON, "fleet ON")
        await trio.sleep(1)
        assert await hosts.run("a", ok) == "ok"  # the trial
        await trio.sleep(25)
        assert link.member("upstream[a]") is None
        assert link.names() == ["plain"]
        assert plain.state is State.ON


# Bad input.


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"max_keys": 0}, ValueError, r"max_keys must be an int >= 1, got 0"),
        ({"max_keys": 2.5}, TypeError, r"max_keys must be an int >= 1, got 2.5"),
        ({"max_keys": True}, TypeError, r"max_keys must be an int >= 1, got True"),
        ({"idle_timeout": 0}, ValueError, r"idle_timeout must be .* > 0, got 0"),
        ({"idle_timeout": -1}, ValueError, r"idle_timeout must be .*, got -1"),
        ({"idle_timeout": "5"}, TypeError, r"idle_timeout must be .*, got '5'"),
        ({"idle_timeout": float("inf")}, ValueError, r"idle_timeout must be"),
        ({"failure_threshold": 0}, ValueError, r"failure_threshold"),
        ({"policy": "strict"}, TypeError, r"policy must be a breaky.Policy"),
        ({"colour": "red"}, TypeError, r"unexpected option 'colour'"),
    ],
)
async def test_bad_options_are_refused_naming_them(
    autojump_clock: Clock,
    options: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    async with breaky.open_supervisor() as sup:
        with pytest.raises(error, match=match):
            sup.keyed_guard("upstream", **options)
        with pytest.raises(error, match=match):
            sup.keyed_breaker("shards", keyed_service, World(), **options)
        assert len(sup) == 0
        sup.keyed_guard("upstream")  # the name was not taken


async def test_options_of_the_other_kind_are_refused(autojump_clock: Clock) -> None:
    async with breaky.open_supervisor() as sup:
        with pytest.raises(ValueError, match="start_timeout means nothing for a guard"):
            sup.keyed_guard("upstream", start_timeout=3)
        with pytest.raises(ValueError, match="trial_calls means nothing"):
            sup.keyed_breaker("shards", keyed_service, World(), trial_calls=2)


async def test_a_bad_resource_function_is_refused(autojump_clock: Clock) -> None:
    def not_async(inbox: object, key: str, *, task_status: object) -> None:
        pass

    async def no_key(inbox: object, *, task_status: object) -> None:
        pass

    async with breaky.open_supervisor() as sup:
        with pytest.raises(TypeError, match="fn must be an async function"):
            sup.keyed_breaker("shards", not_async)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"cannot be called as fn\(inbox, \*args"):
            sup.keyed_breaker("shards", no_key)  # type: ignore[arg-type]
        assert "shards" not in sup


async def test_a_group_s_name_is_taken_once_and_its_keys_names_are_reserved(
    autojump_clock: Clock,
) -> None:
    async with breaky.open_supervisor() as sup:
        sup.guard("db")
        sup.guard("cache[1]")
        hosts = sup.keyed_guard("upstream")
        with pytest.raises(ValueError, match="'db' is already running here"):
            sup.keyed_guard("db")
        with pytest.raises(ValueError, match="'upstream' is already running here"):
            sup.keyed_breaker("upstream", keyed_service, World())
        with pytest.raises(ValueError, match="'upstream' is already running here"):
            sup.guard("upstream")
        # The names of its keys, live or not, belong to the group.
        await hosts.run("a", ok)
        for name in ["upstream[a]", "upstream[b]", "upstream[a[b]]", "upstream[]"]:
            with pytest.raises(
                ValueError, match="reserved: the keyed group 'upstream'"
            ):
                sup.guard(name)
        with pytest.raises(ValueError, match=r"must not contain '\['"):
            sup.keyed_guard("upstream[x]")
        # A group cannot claim names already taken.
        with pytest.raises(ValueError, match=r"keys cache\[key\], and 'cache\[1\]'"):
            sup.keyed_guard("cache")
        # Names that only look alike are free.
        sup.guard("upstream[x")
        sup.guard("upstreams[x]")
        sup.guard("cache[")
        with pytest.raises(TypeError, match="name must be a str"):
            sup.keyed_guard(5)  # type: ignore[arg-type]


async def test_a_key_s_name_says_which_group_and_key_it_is(
    autojump_clock: Clock,
) -> None:
    # Issue 22, defect 7: key "a[b" of group "hosts" and key "b" of group
    # "hosts[a" were both "hosts[a[b]": one core for two keys, and the idle
    # sweep ended the supervisor with a KeyError. A group's name has no "[".
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("hosts", idle_timeout=10)
        await hosts.run("a[b", ok)
        makers: list[Callable[[str], object]] = [
            sup.keyed_guard,
            lambda name: sup.keyed_breaker(name, keyed_service, World()),
        ]
        for make in makers:
            with pytest.raises(
                ValueError,
                match=r"a keyed group's name must not contain '\[' .* got 'hosts\[a'",
            ):
                make("hosts[a")
            with pytest.raises(ValueError, match="must not contain"):
                make("[")
        assert list(sup) == ["hosts"]
        assert internals(sup).link.names() == ["hosts[a[b]"]
        await trio.sleep(25)  # swept
        assert len(hosts) == 0


async def test_a_closed_supervisor_makes_no_group(autojump_clock: Clock) -> None:
    async with breaky.open_supervisor() as sup:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        sup.keyed_guard("upstream")
    with pytest.raises(RuntimeError, match="closed"):
        sup.keyed_breaker("shards", keyed_service, World())


async def test_subscribe_checks_max_buffer(autojump_clock: Clock) -> None:
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream")
        with pytest.raises(ValueError, match="max_buffer must be an int >= 1"):
            hosts.subscribe(max_buffer=0)


# Statistics.


async def test_statistics_aggregate_the_keys(autojump_clock: Clock) -> None:
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream", failure_threshold=2, max_keys=3)
        empty = hosts.statistics()
        assert (empty.keys, empty.calls, empty.not_on) == (0, 0, {})
        assert set(empty.states.values()) == {0}
        await hosts.run("a", ok)
        await fail(hosts, "b", times=2)
        await fail(hosts, "c")
        stats = hosts.statistics()
        assert stats.keys == 3
        assert stats.states[State.ON] == 2
        assert stats.states[State.OFF] == 1
        assert stats.failures == 2 + 1
        assert set(stats.not_on) == {"b"}
        assert stats.not_on["b"] == hosts["b"].statistics()
        assert stats.calls == 4
        assert stats.trips == 1
        hosts["c"].reset()
        await hosts.run("d", ok)  # a, the least recently used, goes
        after = hosts.statistics()
        assert after.calls == 5
        assert after.replies == 2
        assert after.forgotten == 1
        assert after.pending == 0


async def test_calls_add_up_over_many_keys(
    autojump_clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="breaky")
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream", max_keys=50, idle_timeout=5)
        made = 0
        for n in range(500):
            key = f"host-{n % 120}"
            made += key not in hosts
            await hosts.run(key, ok)
            await trio.sleep(0.1)
        stats = hosts.statistics()
        assert stats.calls == stats.replies == 500
        assert stats.keys <= 50
        assert stats.forgotten + stats.keys == made
        assert stats.forgotten > 0
    # Forgetting is routine: no INFO line for it, nor for the close.
    assert not [r for r in caplog.records if "upstream[" in r.message]


async def test_every_key_shares_the_policy_and_one_random_source(
    autojump_clock: Clock,
) -> None:
    rng = random.Random(7)
    async with breaky.open_supervisor() as sup:
        seeded = sup.keyed_guard("seeded", rng=rng, retry_jitter=0.5)
        plain = sup.keyed_guard("plain", failure_threshold=3)
        assert seeded["a"].policy.rng is seeded["b"].policy.rng is rng
        assert plain["a"].policy.rng is plain["b"].policy.rng is not None
        assert plain["a"].policy.failure_threshold == 3
        assert plain.policy.rng is None  # the group's policy, as given


async def test_a_key_counts_exactly_as_a_plain_guard(autojump_clock: Clock) -> None:
    # hosts.run has the guard's lean path inline: the same script through a
    # plain guard and through a key must give the same statistics.
    def wrong_call() -> None:
        raise AttributeError  # fn(*args) itself fails: no call was made

    options: dict[str, Any] = {"failure_threshold": 3, "call_timeout": None}
    async with breaky.open_supervisor() as sup:
        plain = sup.guard("plain", **options)
        hosts = sup.keyed_guard("upstream", **options)
        runs: list[Callable[..., Any]] = [plain.run, functools.partial(hosts.run, "k")]
        for run in runs:
            assert await run(ok, 1) == 1
            with pytest.raises(ConnectionRefusedError):
                await run(down)
            with pytest.raises(AttributeError):
                await run(wrong_call)
            with trio.move_on_after(1):
                await run(trio.sleep, 5)  # the caller cancelled
            with pytest.raises(breaky.CallTimeout):
                await run(trio.sleep, 5, timeout=1)  # not the lean path
        # (Each made its calls at its own time: when it last failed differs.)
        key, alone = hosts["k"].statistics(), plain.statistics()
        assert attrs.evolve(key, last_failure_at=None) == attrs.evolve(
            alone, last_failure_at=None
        )
        assert plain.statistics().cancelled == 1


async def test_a_large_sweep_is_no_missed_change_for_a_fleet(
    autojump_clock: Clock,
) -> None:
    fleet = LinkOnly()
    async with breaky.open_supervisor(fleet=fleet) as sup:
        hosts = sup.keyed_guard("upstream", idle_timeout=10, max_keys=30_000)
        changes = internals(sup).link.subscribe()
        for n in range(25_000):
            hosts[f"host-{n}"]
        await trio.sleep(21)
        assert len(hosts) == 0
        assert changes.missed == 0
        gone = [changes.receive_nowait() for _ in range(25_000)]
        assert {change.new for change in gone} == {State.STOPPED}
