"""An HTTP API behind a circuit breaker, through httpx on Trio, served concurrently.

Run it with ``python examples/http_api.py`` (it needs ``pip install httpx``).
The example serves a small HTTP API itself, on 127.0.0.1, that takes 50 ms a
request. It goes through the API's bad days: a burst of more calls than it can
take (the excess is shed, and the breaker stays ON), a spell of 503 answers
(counted as failures: the breaker trips), and a spell where it accepts
connections but never answers (calls time out and trip the breaker; each
retry's health check is given up at ``start_timeout``). After each, the
breaker turns ON again by itself.
"""

from __future__ import annotations

import collections

import httpx
import trio

import breaky

LATENCY = 0.05  # seconds the API takes to answer one request
CONCURRENCY = 10  # requests in flight at once: 10 / 0.05 s = 200 calls a second


class API:
    """A tiny HTTP/1.1 server: ``GET /`` answers ``ok`` after ``LATENCY``.

    Its ``mode`` is ``"healthy"``, ``"failing"`` (503 to everything) or
    ``"hung"`` (it accepts connections and never answers).
    """

    def __init__(self) -> None:
        self.mode = "healthy"
        self.in_flight = 0
        self.most_in_flight = 0

    async def serve(
        self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some()
                    if not data:
                        return
                    buffer += data
                _, _, buffer = buffer.partition(b"\r\n\r\n")
                await stream.send_all(await self._answer())
        except trio.BrokenResourceError:
            return

    async def _answer(self) -> bytes:
        if self.mode == "hung":
            await trio.sleep_forever()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await trio.sleep(LATENCY)
        finally:
            self.in_flight -= 1
        status, body = ("200 OK", b"ok")
        if self.mode == "failing":
            status, body = ("503 Unavailable", b"no")
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body


async def http_api(
    inbox: breaky.Inbox[str, str],
    base_url: str,
    concurrency: int,
    *,
    task_status: trio.TaskStatus[httpx.AsyncClient] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The resource: an httpx client that proved it can reach the API."""
    # httpx's pool must allow as many connections as requests in flight.
    limits = httpx.Limits(max_connections=concurrency)
    # Two timeouts, two jobs: httpx's bounds how long this resource waits on
    # the network (then it raises, and the resource crashes); the breaker's
    # call_timeout bounds how long a caller waits for its answer.
    async with httpx.AsyncClient(
        base_url=base_url, timeout=10, limits=limits
    ) as client:
        (await client.get("/")).raise_for_status()  # unhealthy: a failed start
        task_status.started(client)

        async def get(request: breaky.Request[str, str]) -> None:
            response = await client.get(request.message)  # transport error: a crash
            try:
                response.raise_for_status()
            except httpx.HTTPStatusError as exc:
                request.fail(exc)  # counted: see the policy's failure_exceptions
            else:
                request.reply(response.text)

        await inbox.serve(get, concurrency=concurrency)


def server_error(exc: Exception) -> bool:
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500


async def call(
    web: breaky.CircuitBreaker[str, str], seen: collections.Counter[str]
) -> None:
    try:
        answer = await web.call("/")
    except httpx.HTTPStatusError:
        seen["5xx"] += 1
    except breaky.CallTimeout:
        seen["timeout"] += 1
    except breaky.ResourceLost:
        seen["lost"] += 1  # in flight when a failure tripped the breaker
    else:
        seen["OFF" if answer is breaky.OFF else "ok"] += 1


async def burst(
    web: breaky.CircuitBreaker[str, str], seen: collections.Counter[str], calls: int
) -> None:
    """Make ``calls`` calls at once, and wait for all their answers."""
    async with trio.open_nursery() as nursery:
        for _ in range(calls):
            nursery.start_soon(call, web, seen)


async def traffic(
    web: breaky.CircuitBreaker[str, str],
    seen: collections.Counter[str],
    seconds: float,
) -> None:
    """Five calls at once, four times a second, for ``seconds``."""
    end = trio.current_time() + seconds
    while trio.current_time() < end:
        await burst(web, seen, 5)
        await trio.sleep(0.25)


async def main() -> dict[str, object]:
    api = API()
    seen: collections.Counter[str] = collections.Counter()
    policy = breaky.Policy(
        call_timeout=2,
        # 100 queued calls wait at most 100 / 200 = 0.5 s, well inside the
        # call timeout; beyond that a call is answered OFF at once (shed).
        max_queued=100,
        start_timeout=1,  # a health check that hangs is a failed start
        failure_threshold=3,
        retry_timeout=2,
        failure_exceptions=server_error,  # a 5xx answer counts as a failure
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(api.serve)
        async with breaky.open_supervisor() as sup:
            web = await sup.start_circuit_breaker(
                "api", http_api, f"http://127.0.0.1:{port}", CONCURRENCY, policy=policy
            )
            await traffic(web, seen, 2)
            # 300 calls at once: 100 queue and are served within about 0.5 s,
            # the other 200 are answered OFF at once (shed). No call times
            # out, nothing counts as a failure, the breaker stays ON.
            await burst(web, seen, 300)
            await traffic(web, seen, 2)
            api.mode = "failing"  # three 503s trip the breaker
            await traffic(web, seen, 3)
            api.mode = "healthy"  # the next retry's health check passes
            await traffic(web, seen, 3)
            api.mode = "hung"  # calls time out; health checks are given up
            await traffic(web, seen, 6)
            api.mode = "healthy"
            await traffic(web, seen, 3)
            stats = web.statistics()
        nursery.cancel_scope.cancel()
    result: dict[str, object] = {
        **seen,
        "shed": stats.shed,
        "trips": stats.trips,
        "failed_starts": stats.failed_starts,
        "most_in_flight": api.most_in_flight,
        "state": stats.state.name,
    }
    print(result)
    return result


if __name__ == "__main__":
    trio.run(main)
