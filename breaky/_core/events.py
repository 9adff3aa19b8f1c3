"""State changes, and channels that deliver them without ever blocking a breaker."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, final

import attrs
import trio

if TYPE_CHECKING:
    from .machine import State


@final
@attrs.frozen
class StateChange:
    """One change of a breaker's :class:`~breaky.State`.

    Attributes:
        breaker: the breaker's name.
        old: the state before.
        new: the state after.
        reason: what caused it, in a few words ("a call timed out").
        time: when, on Trio's clock (:func:`trio.current_time`).
        group: for a key of a keyed group (:meth:`breaky.Supervisor.keyed_guard`,
            :meth:`breaky.Supervisor.keyed_breaker`), the group's name;
            ``None`` for any other breaker.
        key: for a key of a keyed group, the key; ``None`` otherwise. The
            key's ``breaker`` is then ``f"{group}[{key}]"``.

    """

    breaker: str
    old: State
    new: State
    reason: str
    time: float
    group: str | None = None
    key: str | None = None


@final
class StateChanges(trio.abc.ReceiveChannel[StateChange]):
    """A receive channel of :class:`StateChange`, in order, from ``subscribe()``.

    Sending never waits: when the buffer is full, the oldest change is dropped
    and :attr:`missed` counts it, so a subscriber that does not keep up slows
    nothing down and can still tell it missed something. The channel ends
    (``EndOfChannel``; an ``async for`` stops) when what it watches is stopped.
    Close it with :meth:`aclose` (or ``async with``) to unsubscribe.
    """

    def __init__(self, max_buffer: int) -> None:
        self._buffer: deque[StateChange] = deque()
        self._max_buffer = max_buffer
        self._waiting = trio.lowlevel.ParkingLot()
        self._ended = False
        self._closed = False
        self.missed = 0
        """How many changes were dropped because the buffer was full."""

    def __repr__(self) -> str:
        return (
            f"<breaky.StateChanges {len(self._buffer)} buffered, {self.missed} missed>"
        )

    def _send(self, change: StateChange) -> None:
        if len(self._buffer) >= self._max_buffer:
            self._buffer.popleft()
            self.missed += 1
        self._buffer.append(change)
        self._waiting.unpark()

    def _end(self) -> None:
        self._ended = True
        self._waiting.unpark_all()

    def receive_nowait(self) -> StateChange:
        """Return the next change, or raise ``trio.WouldBlock``."""
        if self._closed:
            raise trio.ClosedResourceError
        if self._buffer:
            return self._buffer.popleft()
        if self._ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> StateChange:
        """Wait for the next change and return it."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not (self._buffer or self._ended):
            await self._waiting.park()
        change = self.receive_nowait()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return change

    async def aclose(self) -> None:
        """Unsubscribe: nothing more is buffered, receiving raises."""
        self._closed = True
        self._ended = True
        self._buffer.clear()
        self._waiting.unpark_all()
        await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class Publisher:
    """The subscribers of one breaker or supervisor."""

    _channels: list[StateChanges] = attrs.field(factory=list[StateChanges])
    _ended: bool = False

    def subscribe(self, max_buffer: int) -> StateChanges:
        """Return a new channel that receives every later change."""
        channel = StateChanges(max_buffer)
        if self._ended:
            channel._end()
        else:
            self._channels.append(channel)
        return channel

    def publish(self, change: StateChange) -> None:
        """Buffer ``change`` for every open subscriber; never blocks."""
        channels = self._channels
        if any(c._closed for c in channels):
            channels[:] = [c for c in channels if not c._closed]
        for channel in channels:
            channel._send(change)

    def end(self) -> None:
        """End every subscriber's channel: nothing more will be published."""
        self._ended = True
        for channel in self._channels:
            channel._end()
        self._channels.clear()
