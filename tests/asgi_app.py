"""The ASGI app that Hypercorn serves in the integration tests.

``GET /`` answers 200 ``ok``; ``GET /sleep/<seconds>`` answers after that long;
``GET /flaky`` answers 503 to one request in ten (the first, the eleventh...),
200 to the others; any other path answers 404. Hypercorn, not this app, is the
server under test.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

_flaky = itertools.count()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path: str = scope["path"]
    status, body = 404, b"not found"
    if path == "/":
        status, body = 200, b"ok"
    elif path == "/flaky":
        status, body = (503, b"try again") if next(_flaky) % 10 == 0 else (200, b"ok")
    elif path.startswith("/sleep/"):
        await asyncio.sleep(float(path.removeprefix("/sleep/")))
        status, body = 200, b"slept"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})
