"""The ASGI app of the adaptive-limit benchmark: a server of few workers.

``GET /work`` waits for one of ``BENCH_WORKERS`` workers, holds it for
``BENCH_SERVICE`` seconds, then answers 200; requests beyond the workers
queue inside the server, as they do in a real one whose pool is busy. The
answer's ``x-held`` header says how long the server held the request, from
the app's start to the answer (its queue and its work).
Hypercorn serves it; a client that goes away takes its request with it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

WORKERS = int(os.environ.get("BENCH_WORKERS", "4"))
SERVICE = float(os.environ.get("BENCH_SERVICE", "0.05"))
_workers: list[asyncio.Semaphore] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    clock = asyncio.get_running_loop().time
    arrived = clock()
    if not _workers:
        _workers.append(asyncio.Semaphore(WORKERS))
    async with _workers[0]:
        await asyncio.sleep(SERVICE)
    held = f"{clock() - arrived:.6f}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"x-held", held)],
        }
    )
    await send({"type": "http.response.body", "body": b"done"})
