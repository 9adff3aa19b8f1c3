"""Any healthy replica: a keyed guard's run_any, on the mock clock."""

from __future__ import annotations

import collections
import random
from typing import TYPE_CHECKING, Any

import pytest
import trio
import trio.testing
from attempts_support import Down, Script, fail, hang, ok

import breaky
from breaky import OFF, State

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from trio.testing import MockClock as Clock


class Replicas:
    """Replicas by key: each key's runs follow its own script."""

    def __init__(self, **scripts: Script) -> None:
        self.scripts = scripts
        self.order: list[str] = []  # the keys, as attempts went to them

    async def fn(self, key: str, *args: object) -> object:
        self.order.append(key)
        return await self.scripts[key].fn(key, *args)


@pytest.fixture
async def sup() -> AsyncIterator[breaky.Supervisor]:
    async with breaky.open_supervisor() as sup:
        yield sup


def group(sup: breaky.Supervisor, **options: Any) -> breaky.KeyedGuard:
    options.setdefault("attempts", 3)
    options.setdefault("failure_threshold", 10)
    options.setdefault("call_timeout", 30)
    options.setdefault("rng", random.Random(3))
    return sup.keyed_guard("db", **options)


async def test_fn_gets_the_key_then_the_arguments(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    db = group(sup)
    replicas = Replicas(a=Script([ok()]))
    assert await db.run_any(["a"], replicas.fn, 1, "x") == "ok"
    assert replicas.scripts["a"].args == [("a", 1, "x")]
    assert "a" in db  # made on first use


async def test_idle_replicas_take_calls_in_turn(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    db = group(sup)
    replicas = Replicas(a=Script([ok()]), b=Script([ok()]), c=Script([ok()]))
    for _ in range(9):
        await db.run_any(["a", "b", "c"], replicas.fn)
    assert collections.Counter(replicas.order) == {"a": 3, "b": 3, "c": 3}


async def test_the_replica_with_the_fewest_calls_in_flight_is_taken(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    db = group(sup)
    replicas = Replicas(a=Script([hang()]), b=Script([hang()]), c=Script([ok()]))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(db.run, "a", replicas.scripts["a"].fn)
        nursery.start_soon(db.run, "a", replicas.scripts["a"].fn)
        nursery.start_soon(db.run, "b", replicas.scripts["b"].fn)
        await trio.testing.wait_all_tasks_blocked()
        assert await db.run_any(["a", "b", "c"], replicas.fn) == "ok"
        assert replicas.order == ["c"]
        nursery.cancel_scope.cancel()


async def test_a_replica_that_would_answer_off_is_passed_over(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    db = group(sup)
    db["a"].force_off()
    replicas = Replicas(a=Script([ok()]), b=Script([ok()]))
    for _ in range(4):
        assert await db.run_any(["a", "b"], replicas.fn) == "ok"
    assert replicas.order == ["b"] * 4
    assert db["a"].statistics().calls == 0


async def test_an_off_replica_whose_trial_is_due_is_a_candidate(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    db = group(sup, failure_threshold=1, retry_timeout=5, attempts=1)
    replicas = Replicas(a=Script([fail(), ok("back")]), b=Script([hang()]))
    with pytest.raises(Down):
        await db.run("a", replicas.scripts["a"].fn, "a")
    assert db["a"].state is State.OFF
    async with trio.open_nursery() as nursery:
        nursery.start_soon(db.run, "b", replicas.scripts["b"].fn, "b")
        await trio.testing.wait_all_tasks_blocked()
        # a waits: b, busy, is taken.
        with trio.move_on_after(1):
            await db.run_any(["a", "b"], replicas.fn)
        assert replicas.order == ["b"]
        await trio.sleep(5)
        # a's trial is due, and a has nothing in flight: its trial.
        assert await db.run_any(["a", "b"], replicas.fn) == "back"
        assert db.statistics().states[State.ON] == 2
        nursery.cancel_scope.cancel()


async def test_a_reattempt_goes_to_a_replica_not_tried_yet(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    db = group(sup)
    replicas = Replicas(a=Script([fail()]), b=Script([fail()]), c=Script([ok("c")]))
    for _ in range(3):
        replicas.order.clear()
        assert await db.run_any(["a", "b", "c"], replicas.fn) == "c"
        assert len(set(replicas.order)) == len(replicas.order)
    stats = db.statistics()
    assert stats.reattempts >= 3


async def test_once_every_replica_was_tried_an_on_one_is_tried_again(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    db = group(sup, attempts=3)
    replicas = Replicas(a=Script([fail(), ok("a")]), b=Script([fail(), ok("b")]))
    assert await db.run_any(["a", "b"], replicas.fn) == replicas.order[2]
    assert set(replicas.order[:2]) == {"a", "b"}
    assert len(replicas.order) == 3


async def test_no_reattempt_when_no_replica_is_on(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    db = group(sup, failure_threshold=1)
    replicas = Replicas(a=Script([fail(Down("a"))]), b=Script([fail(Down("b"))]))
    db["b"].force_off()
    with pytest.raises(Down, match="a"):
        await db.run_any(["a", "b"], replicas.fn)
    assert replicas.order == ["a"]
    assert db.statistics().attempts_denied == 1


async def test_no_reattempt_when_every_replica_turned_off_during_its_wait(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    db = group(sup, attempt_wait=1, max_attempt_wait=1)
    replicas = Replicas(a=Script([fail(Down("a"))]), b=Script([fail(Down("b"))]))

    async def call() -> None:
        with pytest.raises(Down):
            await db.run_any(["a", "b"], replicas.fn)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.sleep(0.2)
        db["a"].force_off()
        db["b"].force_off()
    assert len(replicas.order) == 1
    assert db.statistics().attempts_denied == 1


async def test_off_only_when_every_replica_would_answer_off(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    db = group(sup)
    for key in ("a", "b"):
        db[key].force_off()
    replicas = Replicas(a=Script([ok()]), b=Script([ok()]))
    assert await db.run_any(["a", "b"], replicas.fn) is OFF
    assert replicas.order == []
    assert db["a"].statistics().off == 1  # the first key's guard answered


async def test_hedges_go_to_another_replica(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    db = group(sup, attempts=2, hedge_after=0.1)
    replicas = Replicas(
        a=Script([ok("slow", seconds=5)]), b=Script([ok("quick", seconds=5)])
    )
    replicas.scripts["b"].steps = [ok("quick", seconds=0.01)]
    replicas.scripts["a"].steps = [ok("slow", seconds=5)]
    answers = set()
    for _ in range(2):
        replicas.order.clear()
        answers.add(await db.run_any(["a", "b"], replicas.fn))
        assert sorted(replicas.order) in (["a", "b"], ["b"])
    assert answers == {"quick"}


async def test_the_groups_budget_bounds_every_key_together(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    # A floor of one extra attempt per 10 s, no share: one key spends it.
    db = group(sup, attempt_budget=0, attempt_budget_min=0.1)
    replicas = Replicas(a=Script([fail()]), b=Script([fail()]), c=Script([fail()]))
    with pytest.raises(Down):
        await db.run_any(["a", "b", "c"], replicas.fn)
    assert len(replicas.order) == 2  # one re-attempt, then the budget is spent
    with pytest.raises(Down):
        await db.run("c", replicas.scripts["c"].fn, "c")
    assert replicas.scripts["c"].runs <= 2
    stats = db.statistics()
    assert stats.reattempts == 1
    assert stats.attempts_denied == 2


async def test_keys_refused_at_the_bound_are_passed_over(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    db = sup.keyed_guard("db", max_keys=1)
    replicas = Replicas(a=Script([hang()]), b=Script([ok()]))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(db.run, "a", replicas.scripts["a"].fn, "a")
        await trio.testing.wait_all_tasks_blocked()
        # a is busy, so b cannot be made: a is the only candidate.
        with trio.move_on_after(1):
            await db.run_any(["b", "a"], replicas.fn)
        assert replicas.order == ["a"]
        assert await db.run_any(["b"], replicas.fn) is OFF
        nursery.cancel_scope.cancel()
    assert db.statistics().refused == 2


@pytest.mark.parametrize(
    ("keys", "error", "match"),
    [
        ("ab", TypeError, r"keys must be an iterable of str keys \(not one str\)"),
        (3, TypeError, r"keys must be an iterable .* got 3"),
        (["a", 3], TypeError, r"keys must hold str keys .* got 3"),
        ([], ValueError, r"keys must name at least one key, got none"),
    ],
)
async def test_bad_keys_are_refused_by_name(
    sup: breaky.Supervisor, keys: object, error: type[Exception], match: str
) -> None:
    db = group(sup)
    with pytest.raises(error, match=match):
        await db.run_any(keys, Replicas().fn)  # type: ignore[arg-type]
    assert len(db) == 0


async def test_a_key_named_twice_is_one_candidate(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    db = group(sup)
    replicas = Replicas(a=Script([fail(Down("a"))]))
    with pytest.raises(Down):
        await db.run_any(["a", "a"], replicas.fn)
    assert replicas.order == ["a", "a", "a"]  # tried again: the only one ON


async def test_a_wrong_call_is_not_made_again(
    autojump_clock: Clock, sup: breaky.Supervisor
) -> None:
    db = group(sup)

    async def takes_key_only(key: str) -> str:
        return key

    with pytest.raises(TypeError):
        await db.run_any(["a", "b"], takes_key_only, 1)  # type: ignore[arg-type]
    assert db.statistics().calls == 1
