"""State changes, and channels that deliver them without ever blocking a breaker."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, final

import attrs
import trio

if TYPE_CHECKING:
    from breaky._core.states import State


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
class ChangeBuffer:
    """What a publisher and one subscriber's channel share: the buffered changes."""

    __slots__ = ("buffer", "closed", "ended", "max_buffer", "missed", "waiting")

    def __init__(self, max_buffer: int) -> None:
        self.buffer: deque[StateChange] = deque()
        self.max_buffer = max_buffer
        self.waiting = trio.lowlevel.ParkingLot()
        self.ended = False  # nothing more will come
        self.closed = False  # its subscriber unsubscribed
        self.missed = 0

    def send(self, change: StateChange) -> None:
        """Buffer ``change``, dropping the oldest when full; never blocks."""
        if len(self.buffer) >= self.max_buffer:
            self.buffer.popleft()
            self.missed += 1
        self.buffer.append(change)
        self.waiting.unpark()

    def end(self) -> None:
        """Nothing more will be sent: the channel ends once it is read."""
        self.ended = True
        self.waiting.unpark_all()


@final
class StateChanges(trio.abc.ReceiveChannel[StateChange]):
    """A receive channel of :class:`StateChange`, in order, from ``subscribe()``.

    Sending never waits: when the buffer is full, the oldest change is dropped
    and :attr:`missed` counts it, so a subscriber that does not keep up slows
    nothing down and can still tell it missed something. The channel ends
    (``EndOfChannel``; an ``async for`` stops) when what it watches is stopped.
    Close it with :meth:`aclose` (or ``async with``) to unsubscribe.
    """

    __slots__ = ("_state",)

    def __init__(self, state: ChangeBuffer) -> None:
        self._state = state

    def __repr__(self) -> str:
        state = self._state
        return (
            f"<breaky.StateChanges {len(state.buffer)} buffered, {state.missed} missed>"
        )

    @property
    def missed(self) -> int:
        """How many changes were dropped because the buffer was full."""
        return self._state.missed

    def receive_nowait(self) -> StateChange:
        """Return the next change, or raise ``trio.WouldBlock``."""
        state = self._state
        if state.closed:
            raise trio.ClosedResourceError
        if state.buffer:
            return state.buffer.popleft()
        if state.ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> StateChange:
        """Wait for the next change and return it."""
        await trio.lowlevel.checkpoint_if_cancelled()
        state = self._state
        while not (state.buffer or state.ended):
            await state.waiting.park()
        change = self.receive_nowait()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return change

    async def aclose(self) -> None:
        """Unsubscribe: nothing more is buffered, receiving raises."""
        state = self._state
        state.closed = True
        state.ended = True
        state.buffer.clear()
        state.waiting.unpark_all()
        await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class Publisher:
    """The subscribers of one breaker or supervisor."""

    _buffers: list[ChangeBuffer] = attrs.field(factory=list[ChangeBuffer])
    _ended: bool = False

    def subscribe(self, max_buffer: int) -> StateChanges:
        """Return a new channel that receives every later change."""
        state = ChangeBuffer(max_buffer)
        if self._ended:
            state.end()
        else:
            self._buffers.append(state)
        return StateChanges(state)

    def publish(self, change: StateChange) -> None:
        """Buffer ``change`` for every open subscriber; never blocks."""
        buffers = self._buffers
        if any(b.closed for b in buffers):
            buffers[:] = [b for b in buffers if not b.closed]
        for buffer in buffers:
            buffer.send(change)

    def end(self) -> None:
        """End every subscriber's channel: nothing more will be published."""
        self._ended = True
        for buffer in self._buffers:
            buffer.end()
        self._buffers.clear()


@final
@attrs.define(eq=False)
class Relay(Publisher):
    """A group's subscribers, who pass every change on to the supervisor's."""

    up: Publisher = attrs.field(kw_only=True)

    def publish(self, change: StateChange) -> None:
        super().publish(change)
        self.up.publish(change)
