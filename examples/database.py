"""A database-like service behind a circuit breaker.

Run it with ``python examples/database.py``. The "database" here lives in the
process so that the example runs anywhere; it goes down for a while, and the
breaker turns OFF instead of letting every query wait for a dead server.
"""

from __future__ import annotations

import trio

import breaky


class Database:
    """Stands in for a database server and its client library."""

    def __init__(self) -> None:
        self.up = True
        self.rows = {"alice": 30, "bob": 25}

    async def connect(self, user: str) -> Connection:
        await trio.sleep(0.05)
        if not self.up:
            msg = "database is down"
            raise ConnectionRefusedError(msg)
        return Connection(self, user)


class Connection:
    def __init__(self, db: Database, user: str) -> None:
        self.db = db
        self.user = user

    async def query(self, name: str) -> int | None:
        await trio.sleep(0.01)
        if not self.db.up:
            msg = "connection lost"
            raise ConnectionResetError(msg)
        return self.db.rows.get(name)


async def database(
    inbox: breaky.Inbox[str, int | None],
    db: Database,
    user: str,
    *,
    task_status: trio.TaskStatus[Connection] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The resource: one connection, serving queries until it breaks."""
    conn = await db.connect(user)  # raising here is a failed start
    task_status.started(conn)
    async for request in inbox:
        request.reply(await conn.query(request.message))


async def main() -> dict[str, int]:
    db = Database()
    seen = {"replies": 0, "OFF": 0, "lost": 0}
    policy = breaky.Policy(failure_threshold=3, retry_timeout=1, call_timeout=1)
    async with breaky.open_supervisor() as sup:
        users = await sup.start_circuit_breaker(
            "users", database, db, "me", policy=policy
        )
        for second in range(60):
            if second == 10:
                db.up = False
                print("the database goes down")
            if second == 30:
                db.up = True
                print("the database is back")
            try:
                age = await users.call("alice")
            except breaky.ResourceLost:
                seen["lost"] += 1
            except breaky.CallTimeout:
                seen["timeout"] += 1
            else:
                seen["OFF" if age is breaky.OFF else "replies"] += 1
            await trio.sleep(0.5)
    print(seen)
    return seen


if __name__ == "__main__":
    trio.run(main)
