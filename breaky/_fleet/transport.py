"""A fleet's transport: it drives the sync protocol over sessions with Redis.

It feeds the protocol (:mod:`.protocol`) what happens: the breakers' state
changes, the announcements heard on the fleet's channel, the time, and
Redis's answers; it sends the rounds the protocol asks for and applies its
tells to the breakers. When a session fails it logs once, tells every breaker
that the fleet is lost, waits (a back-off for a refusal that is
configuration), and opens the next one; sessions go on until the supervisor
closes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, final

import attrs
import trio

from .errors import Kind, Trouble, classify
from .protocol import SyncProtocol
from .session import knock, open_session

if TYPE_CHECKING:
    from breaky._core.events import StateChanges
    from breaky._core.fleet import Link

    from .messages import Tell
    from .session import Session, Settings

__all__ = ["BACKOFF_MAX", "Transport"]

logger = logging.getLogger("breaky")

# A refusal that is configuration is retried after 2 s, then twice as long
# each time, up to a minute.
BACKOFF_FIRST = 2.0
BACKOFF_MAX = 60.0


@final
@attrs.define(eq=False)
class Transport:
    """One supervisor's breakers kept in step with Redis, session after session.

    ``where`` names Redis in log records (a URL with no password in it).
    """

    settings: Settings
    link: Link
    where: str
    protocol: SyncProtocol = attrs.field(init=False)
    _trouble: Trouble | None = attrs.field(init=False, default=None)
    _backoff: float = attrs.field(init=False, default=BACKOFF_FIRST)
    # Set when the protocol was given something: a round may be due.
    _wake: trio.Event = attrs.field(init=False, factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        settings = self.settings
        self.protocol = SyncProtocol(
            settings.instance, settings.prefix, settings.period, settings.cluster
        )

    async def run(self, changes: StateChanges) -> None:
        """Run sessions with Redis until the supervisor closes (``changes`` ends)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.watch, changes)
            await self._keep_joined()
            nursery.cancel_scope.cancel()

    async def watch(self, changes: StateChanges) -> None:
        """Feed the protocol the breakers' changes; close when the supervisor does."""
        missed = 0
        async with changes:
            async for change in changes:
                self.protocol.changed(change.breaker, change.old, change.new)
                if changes.missed != missed:  # some lost: look at them all
                    missed = changes.missed
                    self.protocol.missed(self.link)
                self._wake.set()
        self.protocol.close()
        self._wake.set()

    async def _wait(self, deadline: float = float("inf")) -> None:
        """Until the protocol was given something, or ``deadline``."""
        with trio.move_on_at(deadline):
            await self._wake.wait()
        self._wake = trio.Event()

    async def _keep_joined(self) -> None:
        while not self.protocol.closing:
            try:
                if self._trouble is not None and self._trouble.kind is Kind.GONE:
                    await knock(self.settings)
                async with open_session(self.settings) as session:
                    await self._session(session)
            except Exception as exc:  # noqa: BLE001 - any failure ends a session
                wait = self._gone(exc)
            else:
                return
            with trio.move_on_after(wait):
                while not self.protocol.closing:
                    await self._wait()

    @staticmethod
    def _tell(tells: list[Tell]) -> None:
        for tell in tells:
            tell.apply()

    def _gone(self, exc: Exception) -> float:
        """Redis failed: carry on locally, say so once; how long to wait."""
        trouble = classify(exc)
        if trouble.kind is Kind.MOVED:
            # A failover: re-join at once, on the new primary. The breakers
            # keep what they were told; the next session's answers update it.
            logger.warning(
                "fleet %s: %s; the fleet follows it",
                self.settings.instance,
                trouble.cause,
            )
            self._trouble = trouble
            return 0.0
        if trouble.kind is Kind.CONFIG:
            wait, self._backoff = self._backoff, min(BACKOFF_MAX, self._backoff * 2)
        else:
            wait = self.settings.timeout
        if trouble != self._trouble and not (
            self._trouble is not None
            and trouble.kind is not Kind.CONFIG
            and trouble.kind is self._trouble.kind
        ):
            self._say(trouble)
        self._trouble = trouble
        self._tell(self.protocol.lost(self.link))
        return wait

    def _say(self, trouble: Trouble) -> None:
        instance, where = self.settings.instance, self.where
        if trouble.kind is Kind.CONFIG:
            logger.error(
                "fleet %s: Redis at %s refuses the fleet: %s. Fix: %s. Every "
                "breaker carries on alone; the fleet retries, less and less "
                "often (at most every %g s)",
                instance,
                where,
                trouble.cause,
                trouble.fix,
                BACKOFF_MAX,
            )
        elif trouble.kind is Kind.BUSY:
            logger.warning(
                "fleet %s: Redis at %s cannot serve now (%s); every breaker "
                "carries on alone until it can",
                instance,
                where,
                trouble.cause,
            )
        else:
            logger.warning(
                "fleet %s: Redis at %s does not answer (%s); every breaker "
                "carries on alone until it does",
                instance,
                where,
                trouble.cause,
            )

    async def _session(self, session: Session) -> None:
        """Listen, and sync what needs it, most urgent first, until closing."""
        protocol = self.protocol

        def heard(data: object) -> None:
            protocol.heard(data, self.link)
            self._wake.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.listen, heard)
            nursery.start_soon(session.follow)
            protocol.joined(trio.current_time(), self.link)
            joined = False
            while True:
                protocol.tick(trio.current_time())
                sent = protocol.next_round(self.link)
                if sent is not None:
                    try:
                        replies = await session.send(sent, protocol)
                    except BaseException:
                        protocol.failed(sent)
                        raise
                    self._tell(protocol.received(sent, replies, self.link))
                    if not joined:
                        joined = True
                        self._joined()
                elif protocol.closing:
                    await session.beat("leave")
                    break
                else:
                    await self._wait(protocol.deadline)
            nursery.cancel_scope.cancel()

    def _joined(self) -> None:
        if self._trouble is not None:
            self._trouble = None
            self._backoff = BACKOFF_FIRST
            logger.info("fleet %s: Redis answers again", self.settings.instance)
