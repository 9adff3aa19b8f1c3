"""Real servers, real clients, the real clock.

The fixtures start a real ``redis-server``, reached through coredis, and a real
Hypercorn, reached through httpx. While callers keep calling, the tests kill a
server, start it again on the same port, freeze it (SIGSTOP: sockets stay
open, nothing answers) and thaw it (SIGCONT), and wait at each step for what
the breaker should do; they start a breaker on a frozen server, and overload
a healthy one. Afterwards every call must have had exactly one answer, and
the breaker's statistics must agree with what the callers saw.

The resources are written as a user would write them: connect and health
check before ``task_status.started()``, the real command per request, no
error handling (a transport error escapes: a crash), no timeouts of the
client's own (the breaker's ``call_timeout`` and ``start_timeout`` deal with a
frozen server). Timings are real and the machine may be busy, so each step
has a generous limit and nothing asserts how fast it went.
"""

from __future__ import annotations

import collections
import sys
from typing import TYPE_CHECKING, Any

import attrs
import coredis
import httpx
import servers
import trio
from coredis.retry import NoRetryPolicy
from support import answered_calls

import breaky
from breaky import OFF, State

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import pytest


# Small values, so that an outage and its recovery take about a second.
POLICY = breaky.Policy(
    failure_threshold=3,
    retry_timeout=0.2,
    call_timeout=0.5,
    start_timeout=0.5,
)
# The most any one step may take before the test fails: loose on purpose.
PATIENCE = 20.0


@attrs.define
class Tally:
    """What the callers saw, and a way to wait for it to change."""

    calls: int = 0
    answers: collections.Counter[str] = attrs.Factory(collections.Counter)
    _changed: trio.Event = attrs.Factory(trio.Event)

    def add(self, kind: str) -> None:
        self.answers[kind] += 1
        self._changed.set()
        self._changed = trio.Event()

    @property
    def answered(self) -> int:
        return self.answers.total()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, checking after each answer."""
        with trio.fail_after(PATIENCE):
            while not condition():
                await self._changed.wait()

    async def more(self, kind: str, n: int = 5) -> None:
        """Wait for ``n`` more answers of ``kind``."""
        target = self.answers[kind] + n
        await self.until(lambda: self.answers[kind] >= target)


async def keep_calling(
    call: Callable[[], Awaitable[object]],
    check: Callable[[object], bool],
    tally: Tally,
    stop: trio.Event,
) -> None:
    """Call until ``stop``, sorting each answer; ``check`` vets each reply."""
    while not stop.is_set():
        tally.calls += 1
        try:
            answer = await call()
        except breaky.ResourceLost:
            kind = "lost"
        except breaky.CallTimeout:
            kind = "timeout"
        else:
            if answer is OFF:
                kind = "off"
            else:
                assert check(answer), answer
                kind = "reply"
        tally.add(kind)
        await trio.sleep(0.005)  # a caller's pace, so that OFF is no busy loop


def assert_statistics_add_up(
    stats: breaky.BreakerStatistics, tally: Tally, *, shed: bool = False
) -> None:
    """Every call had one answer, the one that the statistics say."""
    assert tally.answered == tally.calls == stats.calls
    assert stats.pending == stats.cancelled == 0
    assert stats.calls == answered_calls(stats)
    assert tally.answers["reply"] == stats.replies
    assert tally.answers["off"] == stats.off + stats.shed  # both answer OFF
    assert tally.answers["timeout"] == stats.timeouts
    assert tally.answers["lost"] == stats.lost
    assert stats.errors == 0
    if not shed:
        assert stats.shed == 0


def starts_given_up(caplog: pytest.LogCaptureFixture) -> int:
    """Failed starts that ``start_timeout`` cut short, from breaky's log."""
    return sum(
        r.name == "breaky" and _given_up(r.getMessage(), getattr(r, "error", None))
        for r in caplog.records
    )


def _given_up(message: str, error: BaseException | None) -> bool:
    if "did not start within start_timeout" in message:
        return True
    # coredis 6.9 turns the Cancelled that ends its handshake into a
    # ConnectionError ("Unable to establish a connection"); the Cancelled is
    # still in that error's context. Repeats are logged without a traceback,
    # but every record carries its error.
    if "failed to start" not in message or error is None:
        return False
    seen: list[BaseException] = [error]
    visited: set[int] = set()
    while seen:
        exc = seen.pop()
        if id(exc) in visited:
            continue
        visited.add(id(exc))
        if isinstance(exc, trio.Cancelled):
            return True
        if isinstance(exc, BaseExceptionGroup):
            seen.extend(exc.exceptions)
        seen.extend(e for e in (exc.__cause__, exc.__context__) if e is not None)
    return False


# Redis, through coredis.


async def redis_connection(
    inbox: breaky.Inbox[str, int],
    port: int,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A coredis client that answered PING; ``INCR key`` per request."""
    # No retries of coredis's own: retrying is the breaker's job.
    async with coredis.Redis(
        host="127.0.0.1", port=port, retry_policy=NoRetryPolicy()
    ) as client:
        await client.ping()  # refused, or never answered: a failed start
        task_status.started(client)
        async for request in inbox:
            request.reply(await client.incr(request.message))


@servers.coredis_runs_on_this_trio
async def test_redis_killed_restarted_frozen_and_thawed(
    redis_server: servers.ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    tally = Tally()
    stop = trio.Event()
    async with breaky.open_supervisor() as sup:
        db = await sup.start_circuit_breaker(
            "redis", redis_connection, redis_server.port, policy=POLICY
        )
        assert db.state is State.ON
        assert isinstance(db.resource, coredis.Redis)
        async with trio.open_nursery() as callers:
            for n in range(4):
                callers.start_soon(
                    keep_calling,
                    lambda n=n: db.call(f"counter:{n}"),
                    lambda reply: isinstance(reply, int) and reply > 0,
                    tally,
                    stop,
                )
            await tally.more("reply")

            # Killed: the connection breaks (a crash), restarts are refused
            # (failed starts), OFF; backing off, it stays OFF.
            await redis_server.kill()
            await tally.until(lambda: db.state is State.OFF)
            retries = db.statistics().retries
            await tally.until(lambda: db.statistics().retries >= retries + 2)
            assert db.state is State.OFF
            await tally.more("off")
            # Back on the same port: the next retry turns the breaker ON.
            await redis_server.start()
            await tally.more("reply")
            assert db.statistics().trips == 1

            # Frozen: calls time out, three timeouts trip the breaker, and
            # each retry's PING is given up at start_timeout.
            redis_server.freeze()
            await tally.until(lambda: db.state is State.OFF)
            failed = db.statistics().failed_starts
            await tally.until(lambda: db.statistics().failed_starts >= failed + 2)
            assert db.state is State.OFF
            assert starts_given_up(caplog) >= 2
            # Thawed: the next retry answers, ON again.
            redis_server.thaw()
            await tally.more("reply")
            stop.set()
    stats = db.statistics()
    assert stats.state is State.STOPPED
    assert stats.trips >= 2
    assert stats.timeouts >= POLICY.failure_threshold
    assert tally.answers["off"] > 0
    assert_statistics_add_up(stats, tally)


@servers.coredis_runs_on_this_trio
async def test_a_frozen_redis_at_start_is_given_up_then_served_once_thawed(
    redis_server: servers.ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server.freeze()
    async with breaky.open_supervisor() as sup:
        # Returns once the first start has settled: three starts given up.
        db = await sup.start_circuit_breaker(
            "redis", redis_connection, redis_server.port, policy=POLICY
        )
        assert db.state is State.OFF
        stats = db.statistics()
        assert stats.failed_starts == POLICY.failure_threshold
        assert starts_given_up(caplog) == POLICY.failure_threshold
        assert await db.call("k") is OFF
        redis_server.thaw()
        changes = db.subscribe()
        with trio.fail_after(PATIENCE):
            while db.state is not State.ON:
                await changes.receive()
        assert await db.call("k") == 1


# HTTP, through httpx to Hypercorn, served concurrently.


@attrs.define
class Gauge:
    """Requests in flight at once, now and at most."""

    now: int = 0
    most: int = 0

    def __enter__(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def __exit__(self, *_: object) -> None:
        self.now -= 1


async def http_client(
    inbox: breaky.Inbox[str, int],
    base_url: str,
    concurrency: int,
    in_flight: Gauge,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """An httpx client that passed a health check; ``concurrency`` GETs at once."""
    # No timeout of httpx's own: the breaker's call_timeout is the one.
    async with httpx.AsyncClient(base_url=base_url, timeout=None) as client:  # noqa: S113
        (await client.get("/")).raise_for_status()  # refused, or silent: a failed start
        task_status.started(client)

        async def get(request: breaky.Request[str, int]) -> None:
            with in_flight:
                response = await client.get(request.message)  # transport error: a crash
            request.reply(response.status_code)

        await inbox.serve(get, concurrency=concurrency)


async def test_hypercorn_killed_restarted_frozen_and_thawed(
    http_server: servers.ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    tally = Tally()
    stop = trio.Event()
    in_flight = Gauge()
    async with breaky.open_supervisor() as sup:
        api = await sup.start_circuit_breaker(
            "api",
            http_client,
            f"http://127.0.0.1:{http_server.port}",
            4,
            in_flight,
            policy=POLICY,
        )
        assert isinstance(api.resource, httpx.AsyncClient)
        assert await api.call("/no-such-page") == 404
        tally.calls += 1
        tally.add("reply")
        async with trio.open_nursery() as callers:
            for _ in range(8):
                callers.start_soon(
                    keep_calling,
                    lambda: api.call("/sleep/0.02"),
                    lambda reply: reply == 200,
                    tally,
                    stop,
                )
            await tally.more("reply", 20)
            # Several requests were on the wire at once, over one client.
            assert in_flight.most > 1

            # Killed: requests in flight break (a crash; the others held
            # are lost), restarts are refused, OFF; it stays OFF.
            await http_server.kill()
            await tally.until(lambda: api.state is State.OFF)
            retries = api.statistics().retries
            await tally.until(lambda: api.statistics().retries >= retries + 2)
            assert api.state is State.OFF
            await tally.more("off")
            # Back on the same port: ON at the next retry.
            await http_server.start()
            await tally.more("reply", 20)
            assert api.statistics().trips == 1

            # Frozen: the calls in flight time out and trip the breaker; each
            # retry's health check is given up at start_timeout.
            http_server.freeze()
            await tally.until(lambda: api.state is State.OFF)
            failed = api.statistics().failed_starts
            await tally.until(lambda: api.statistics().failed_starts >= failed + 2)
            assert api.state is State.OFF
            assert starts_given_up(caplog) >= 2
            # Thawed: Hypercorn answers its backlog, the next retry turns ON.
            http_server.thaw()
            await tally.more("reply", 20)
            stop.set()
    stats = api.statistics()
    assert stats.trips >= 2
    assert stats.lost >= 1  # at least the request whose GET broke
    assert stats.timeouts >= POLICY.failure_threshold
    assert tally.answers["off"] > 0
    assert_statistics_add_up(stats, tally)


async def test_a_frozen_hypercorn_at_start_is_given_up_then_served_once_thawed(
    http_server: servers.ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    http_server.freeze()
    async with breaky.open_supervisor() as sup:
        api = await sup.start_circuit_breaker(
            "api",
            http_client,
            f"http://127.0.0.1:{http_server.port}",
            2,
            Gauge(),
            policy=POLICY,
        )
        assert api.state is State.OFF
        assert api.statistics().failed_starts == POLICY.failure_threshold
        # httpx ends on Cancelled, as it should: breaky names the cause.
        assert starts_given_up(caplog) == POLICY.failure_threshold
        assert any(
            "did not start within start_timeout" in r.getMessage()
            for r in caplog.records
        )
        assert await api.call("/") is OFF
        http_server.thaw()
        changes = api.subscribe()
        with trio.fail_after(PATIENCE):
            while api.state is not State.ON:
                await changes.receive()
        assert await api.call("/") == 200


async def test_hypercorn_under_overload_sheds_and_never_trips(
    http_server: servers.ServerProcess,
) -> None:
    # 4 at once, 0.1 s each: ~40 calls a second. 8 queued wait ~0.2 s, far
    # below the call timeout; the rest of each burst is shed.
    in_flight = Gauge()
    tally = Tally()
    policy = attrs.evolve(POLICY, call_timeout=5.0, max_queued=8)

    async def one_call() -> None:
        tally.calls += 1
        answer = await api.call("/sleep/0.1")
        tally.add("off" if answer is OFF else "reply")
        assert answer is OFF or answer == 200

    async with breaky.open_supervisor() as sup:
        api = await sup.start_circuit_breaker(
            "api",
            http_client,
            f"http://127.0.0.1:{http_server.port}",
            4,
            in_flight,
            policy=policy,
        )
        for _ in range(3):
            async with trio.open_nursery() as burst:
                for _ in range(40):
                    burst.start_soon(one_call)
            assert api.state is State.ON
        stats = api.statistics()
    assert in_flight.most == 4
    assert stats.shed > 0
    assert stats.replies >= 3 * 8
    assert stats.failures == stats.timeouts == stats.lost == stats.trips == 0
    assert stats.crashes == stats.off == 0
    assert_statistics_add_up(stats, tally, shed=True)
