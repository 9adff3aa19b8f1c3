"""An HTTP API behind a circuit breaker, through httpx on Trio.

Run it with ``python examples/http_api.py`` (it needs ``pip install httpx``).
The example serves a small HTTP API itself, on 127.0.0.1, that starts
answering 503 for a while. The policy counts 5xx answers as failures, so the
breaker trips OFF and callers stop waiting on the API; it recovers once the
API is healthy again.
"""

from __future__ import annotations

import httpx
import trio

import breaky


class API:
    """A tiny HTTP/1.1 server: ``GET /`` answers 200, or 503 when unhealthy."""

    def __init__(self) -> None:
        self.healthy = True

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
                status, body = (
                    ("200 OK", b"ok") if self.healthy else ("503 Unavailable", b"no")
                )
                await stream.send_all(
                    f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
        except trio.BrokenResourceError:
            return


async def http_api(
    inbox: breaky.Inbox[str, str],
    base_url: str,
    *,
    task_status: trio.TaskStatus[httpx.AsyncClient] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The resource: an httpx client that proved it can reach the API."""
    # Two timeouts, two jobs: httpx's bounds how long this resource waits on
    # the network (then it raises, and the resource crashes); the breaker's
    # call_timeout bounds how long a caller waits for its answer.
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        (await client.get("/")).raise_for_status()  # unhealthy: a failed start
        task_status.started(client)
        async for request in inbox:
            response = await client.get(request.message)
            try:
                response.raise_for_status()
            except httpx.HTTPStatusError as exc:
                request.fail(exc)  # counted: see the policy's failure_exceptions
            else:
                request.reply(response.text)


def server_error(exc: Exception) -> bool:
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code >= 500


async def main() -> dict[str, int]:
    api = API()
    seen = {"ok": 0, "5xx": 0, "OFF": 0}
    policy = breaky.Policy(
        failure_threshold=3,
        retry_timeout=2,
        call_timeout=2,
        failure_exceptions=server_error,
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(api.serve)
        async with breaky.open_supervisor() as sup:
            web = await sup.start_circuit_breaker(
                "api", http_api, f"http://127.0.0.1:{port}", policy=policy
            )
            for tick in range(40):
                api.healthy = not 10 <= tick < 20
                try:
                    answer = await web.call("/")
                except httpx.HTTPStatusError:
                    seen["5xx"] += 1
                else:
                    seen["OFF" if answer is breaky.OFF else "ok"] += 1
                await trio.sleep(0.25)
        nursery.cancel_scope.cancel()
    print(seen)
    return seen


if __name__ == "__main__":
    trio.run(main)
