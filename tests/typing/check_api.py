"""The public API as a user writes it; type-checked by `nox -s typing`, not run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import trio
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry
from typing_extensions import assert_type

import breaky
import breaky.opentelemetry
from breaky.prometheus import BreakyCollector
from breaky.redis import RedisFleet
from breaky.testing import wait_for_state


async def database(
    inbox: breaky.Inbox[str, list[str]],
    user: str,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started(user)
    async for request in inbox:
        assert_type(request, breaky.Request[str, list[str]])
        assert_type(request.message, str)
        request.reply([request.message])


async def api(
    inbox: breaky.Inbox[str, int],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    channel: trio.abc.ReceiveChannel[breaky.Request[str, int]] = inbox
    first = await channel.receive()
    assert_type(first, breaky.Request[str, int])
    try:
        batch = [first, inbox.receive_nowait()]
    except trio.WouldBlock:
        batch = [first]
    for request in batch:
        request.reply(len(request.message))

    async def handle(request: breaky.Request[str, int]) -> None:
        request.reply(len(request.message))

    task_status.started()
    await inbox.serve(handle, concurrency=8)


async def main() -> None:
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker("db", database, "me")
        assert_type(db, breaky.CircuitBreaker[str, list[str]])
        result = await db.call("select 1")
        if result is breaky.OFF:
            assert_type(result, breaky.Off)
        else:
            assert_type(result, list[str])
        assert_type(await db.cast("x"), breaky.Off | None)
        assert_type(db.state, breaky.State)
        # The resource's own arguments are checked (mypy: an unused ignore
        # fails the check): a wrong type, one missing, one too many.
        await sup.start_circuit_breaker("db2", database, 12345)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
        await sup.start_circuit_breaker("db3", database)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
        await sup.start_circuit_breaker("db4", database, "me", "x")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
        # Every Policy field is a keyword option, typed.
        await sup.start_circuit_breaker("db5", database, "me", max_queued=10)
        await sup.start_circuit_breaker("db6", database, "me", max_queued="10")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
        sized = await sup.start_circuit_breaker(
            "api", api, policy=breaky.Policy(max_queued=100, start_timeout=5)
        )
        assert_type(sized, breaky.CircuitBreaker[str, int])
        assert_type(sized.statistics().shed, int)
        await wait_for_state(db, breaky.State.ON)

        CollectorRegistry().register(BreakyCollector(sup))
        instrumentation = breaky.opentelemetry.instrument(sup, MeterProvider())
        assert_type(instrumentation, breaky.opentelemetry.Instrumentation)
        assert_type(instrumentation.instrumented, bool)
        instrumentation.uninstrument()


payments = breaky.Guard("payments", failure_threshold=5, trial_calls=2)


@payments
async def charge(order: str, *, amount: int = 1) -> list[str]:
    await trio.lowlevel.checkpoint()
    return [order] * amount


@payments.raising
async def refund(order: str) -> int:
    await trio.lowlevel.checkpoint()
    return len(order)


async def lookup(order: str) -> list[str]:
    await trio.lowlevel.checkpoint()
    return [order]


async def pages(order: str, count: int) -> AsyncIterator[bytes]:
    for n in range(count):
        await trio.lowlevel.checkpoint()
        yield f"{order} page {n}".encode()


async def guards() -> None:
    assert_type(await charge("o1", amount=2), list[str] | breaky.Off)
    assert_type(await refund("o1"), int)
    receipt = await payments.run(lookup, "o2")
    assert_type(receipt, list[str] | breaky.Off)
    assert_type(await payments.raising.run(lookup, "o3"), list[str])
    # The decorator and run() check the arguments (mypy: an unused ignore fails).
    await charge(3)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    await payments.run(lookup, 3)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
    assert_type(payments.statistics().fleet_holds, int)
    async with payments.calling(timeout=2.0) as nothing:
        assert_type(nothing, None)
    async with payments.raising.calling():
        pass
    async with payments.stream(pages, "o4", 3) as items:
        async for page in items:
            assert_type(page, bytes)
    async with payments.raising.stream(pages, "o5", 1, timeout=None) as items:
        assert_type(items, AsyncIterator[bytes])
    payments.stream(pages, "o6")  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue]
    async with breaky.open_supervisor() as sup:
        api = sup.guard("api", max_concurrent=8, max_queued=16)
        assert_type(api, breaky.Guard)
        assert_type(
            sup["api"],
            breaky.CircuitBreaker[Any, Any]
            | breaky.Guard
            | breaky.KeyedGuard
            | breaky.KeyedBreaker[Any, Any],
        )
        await wait_for_state(api, breaky.State.ON)


async def fleet() -> None:
    shared = RedisFleet("redis://127.0.0.1:6379/0", instance="web-1", quorum=2)
    assert_type(shared.quorum, int)
    assert_type(shared.keys("db"), list[str])
    async with breaky.open_supervisor(shutdown_timeout=1, fleet=shared) as sup:
        db = await sup.start_circuit_breaker("db", database, "me")
        assert_type(db, breaky.CircuitBreaker[str, list[str]])


async def shard(
    inbox: breaky.Inbox[str, list[str]],
    key: str,
    dsn: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    async for request in inbox:
        request.reply([key, dsn, request.message])


async def fetch(url: str, retries: int) -> bytes:
    await trio.lowlevel.checkpoint()
    return url.encode() * retries


async def fetch_from(host: str, url: str, retries: int) -> bytes:
    await trio.lowlevel.checkpoint()
    return (host + url).encode() * retries


async def keyed_groups() -> None:
    async with breaky.open_supervisor() as sup:
        hosts = sup.keyed_guard("upstream", max_keys=100, failure_threshold=5)
        assert_type(hosts, breaky.KeyedGuard)
        assert_type(await hosts.run("a.example", fetch, "/", 2), bytes | breaky.Off)
        async with hosts.calling("a.example"):
            pass
        async with hosts.stream("a.example", pages, "o7", 2) as items:
            assert_type(items, AsyncIterator[bytes])
        assert_type(hosts["a.example"], breaky.Guard)
        assert_type(len(hosts), int)
        assert_type(list(hosts), list[str])
        assert_type("a" in hosts, bool)
        shards = sup.keyed_breaker("shards", shard, "dsn://", idle_timeout=60.0)
        assert_type(shards, breaky.KeyedBreaker[str, list[str]])
        assert_type(await shards.call("eu-3", "q"), list[str] | breaky.Off)
        assert_type(await shards.cast("eu-3", "q"), breaky.Off | None)
        assert_type(shards["eu-3"], breaky.CircuitBreaker[str, list[str]])
        stats = hosts.statistics()
        assert_type(stats, breaky.KeyedStatistics)
        assert_type(stats.states[breaky.State.OFF], int)
        assert_type(stats.not_on, Mapping[str, breaky.BreakerStatistics])
        assert_type(hosts["a"].in_flight, int)
        sup.keyed_breaker("bad", shard, 3)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
        await hosts.run(3, fetch, "/", 2)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
        # Any healthy replica: fn takes the key first, then run_any's arguments.
        assert_type(
            await hosts.run_any(["a", "b"], fetch_from, "/", 2), bytes | breaky.Off
        )
        await hosts.run_any(["a"], fetch_from, "/", "2")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
        await hosts.run_any(["a"], fetch, "/", 2)  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
        options = sup.keyed_guard("replicas", attempts=3, hedge_after=0.05)
        assert_type(options.policy.attempts, int)
        assert_type(options.policy.hedge_after, float | None)
