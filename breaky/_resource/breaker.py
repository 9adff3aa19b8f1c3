"""A resource breaker: the Trio task that runs one resource around a Core."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, final

import attrs
import trio

from breaky._core.admission import OFF as REFUSED
from breaky._core.admission import SHED
from breaky._core.checks import check_seconds
from breaky._core.core import Core
from breaky._core.errors import split_errors
from breaky._core.lifecycle import Lifecycle
from breaky._core.log import logger
from breaky._core.off import OFF, Off
from breaky._core.policy import FROM_POLICY, FromPolicy, Kind, Policy
from breaky._core.states import State
from breaky._resource.inbox import Inbox, Instance, InstanceStatus
from breaky._resource.mailbox import Mailbox
from breaky._resource.request import MessageT, ReplyT

if TYPE_CHECKING:
    from breaky._core.events import Publisher, StateChanges
    from breaky._core.internals import Internals
    from breaky._core.machine import Step
    from breaky._core.statistics import BreakerStatistics

ResourceFunction = Callable[..., Awaitable[object]]


@final
@attrs.define(eq=False, repr=False)
class CircuitBreaker(Generic[MessageT, ReplyT]):
    """Supervises one resource task and answers :data:`breaky.OFF` while it fails.

    Made by :meth:`breaky.Supervisor.start_circuit_breaker`, not directly.
    """

    _name: str
    _fn: ResourceFunction
    _args: tuple[object, ...]
    _policy: Policy
    # The supervisor's subscribers, told of this breaker's changes too.
    _watchers: Publisher | None
    # Told how to start, stop and wait for this breaker, once made.
    _enlist: Callable[[Lifecycle], None]
    _core: Core = attrs.field(init=False)
    _mailbox: Mailbox[MessageT, ReplyT] = attrs.field(init=False)
    _resource: Any = attrs.field(init=False, default=OFF)
    # The running resource instance's scope and start status, if any.
    _instance: trio.CancelScope | None = attrs.field(init=False, default=None)
    _status: InstanceStatus | None = attrs.field(init=False, default=None)
    # Whether breaky cancelled the running instance (a trip, force_off, stop)
    # rather than its start_timeout.
    _dismissed: bool = attrs.field(init=False, default=False)
    # The scope of the wait for the next attempt while OFF.
    _waiting: trio.CancelScope | None = attrs.field(init=False, default=None)
    _settled: trio.Event = attrs.field(init=False, factory=trio.Event)
    _finished: trio.Event = attrs.field(init=False, factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        core = self._core = Core(
            self._name, self._policy, Kind.RESOURCE, self._watchers
        )
        core.effects = self
        self._mailbox = Mailbox(self._name, self._policy, core)
        self._enlist(
            Lifecycle(
                core,
                self._stop,
                self._start,
                self._settled.wait,
                self._finished.wait,
            )
        )

    def __repr__(self) -> str:
        return f"<breaky.CircuitBreaker {self._name!r} {self.state.name}>"

    @property
    def name(self) -> str:
        """The name the breaker was started with."""
        return self._name

    @property
    def state(self) -> State:
        """The breaker's :class:`breaky.State`."""
        return self._core.state

    @property
    def policy(self) -> Policy:
        """The breaker's :class:`breaky.Policy`."""
        return self._policy

    @property
    def resource(self) -> Any:  # noqa: ANN401 - whatever the resource reported
        """What the running resource passed to ``task_status.started()``.

        :data:`breaky.OFF` whenever no started instance is running.
        """
        return self._resource

    async def call(
        self,
        message: MessageT,
        *,
        timeout: float | FromPolicy | None = FROM_POLICY,  # noqa: ASYNC109 - the seed's
    ) -> ReplyT | Off:
        """Send ``message`` to the resource and return its reply, or OFF.

        Returns :data:`breaky.OFF` at once when the breaker is not ON (or
        starting); the resource never sees that request. A call already queued
        when the breaker turns OFF is answered OFF then. If the caller is
        cancelled before the resource took the request, the request is
        withdrawn and never seen; after, its reply is dropped.

        Args:
            message: what the resource receives as ``request.message``.
            timeout: seconds to wait for the answer; by default the policy's
                ``call_timeout``; ``None`` waits as long as the caller's own
                cancel scopes allow.

        Raises:
            Exception: the exception the resource passed to ``request.fail()``.
            breaky.ResourceLost: the resource ended while it held the request.
            breaky.CallTimeout: no answer within ``timeout``; counts one failure.

        """
        if timeout is FROM_POLICY:
            seconds = self._policy.call_timeout
        else:
            seconds = check_seconds("timeout", timeout, allow_none=True)
        core = self._core
        if core.admit() is REFUSED:
            await core.refuse(REFUSED)
            return OFF
        envelope = self._mailbox.put(message, trio.lowlevel.current_task(), seconds)
        if envelope is None:
            await core.refuse(SHED)
            return OFF
        await trio.lowlevel.wait_task_rescheduled(envelope.abort)
        return envelope.outcome()  # type: ignore[no-any-return]

    async def cast(self, message: MessageT) -> Off | None:
        """Queue ``message`` for the resource without waiting for an answer.

        Returns ``None`` once queued, or :data:`breaky.OFF` (not queued) when
        the breaker is not ON (or starting).
        """
        await trio.lowlevel.checkpoint()
        if not self._core.accepting or self._mailbox.put(message, None, None) is None:
            return OFF
        self._core.cast_queued()
        return None

    def failure(self) -> None:
        """Register one failure of the resource, as seen by its caller.

        breaky does not count error replies by itself (unless the policy's
        ``failure_exceptions`` says so); call this when a reply shows the
        resource is failing. At the failure rule's limit the resource is
        cancelled and the breaker turns OFF. Ignored unless ON or starting.
        """
        self._core.failure_reported()

    def force_off(self) -> None:
        """Turn OFF now and stop the resource; nothing is tried until reset().

        Queued calls are answered OFF, and so is every call after, as in OFF;
        the state is :attr:`State.FORCED_OFF <breaky.State.FORCED_OFF>`.
        Ignored once stopped.
        """
        self._core.force_off()

    def reset(self) -> None:
        """Forget the failures counted; if OFF (forced or not), start now.

        While ON this only clears the count. Ignored once stopped.
        """
        self._core.reset()

    def force_on(self) -> None:
        """Turn ON now, counting afresh: the dependency is known to be back.

        With no instance running (OFF, forced OFF), one is started at once;
        calls queue for it as for a restart, and a failed start counts one
        failure, as while ON. Ignored once stopped.
        """
        self._core.force_on()

    def subscribe(self, *, max_buffer: int = 100) -> StateChanges:
        """Return a channel of this breaker's later state changes, in order.

        It never slows the breaker: beyond ``max_buffer`` unread changes the
        oldest is dropped and counted in ``missed``. It ends when the breaker
        stops.
        """
        return self._core.subscribe(max_buffer)

    @property
    def in_flight(self) -> int:
        """Requests (calls and casts) queued or held by the resource, unanswered."""
        mailbox = self._mailbox
        return mailbox.queued + len(mailbox.held)

    def statistics(self) -> BreakerStatistics:
        """Return a snapshot of the state, the failures and the totals."""
        mailbox = self._mailbox
        return self._core.statistics(
            mailbox.pending_calls(), mailbox.concurrency_limit()
        )

    @property
    def concurrency_limit(self) -> int | None:
        """How many requests its resource serves at once now, if it says.

        The ``concurrency`` of the :meth:`~breaky.Inbox.serve` calls serving
        now (what a :class:`breaky.Adaptive` limit learned), summed; ``None``
        when nothing serves with a limit.
        """
        return self._mailbox.concurrency_limit()

    def __breaky_internals__(self) -> Internals:
        """The test seam (see :func:`breaky.testing.internals`)."""
        waiting = self._waiting
        return self._core.internals(
            timer=None if waiting is None else waiting.deadline,
            deadlines=self._mailbox.deadlines_kept(),
        )

    # The breaker's tasks.

    def _start(self, nursery: trio.Nursery) -> None:
        """Start its runner and its call deadlines' keeper in ``nursery``."""
        name = self._name
        nursery.start_soon(self._run, name=f"breaky {name!r}")
        nursery.start_soon(self._mailbox.keep_deadlines, name=f"breaky {name!r} calls")

    async def _run(self) -> None:
        """Start the resource, restart it, retry while OFF, until stopped."""
        first = True
        core = self._core
        try:
            while core.state is not State.STOPPED:
                if core.attempt_wanted:
                    core.attempt_began(first=first)
                    first = False
                    await self._run_instance()
                else:
                    await self._wait_for_retry()
        finally:
            # Also reached when cancelled from outside: no caller may be left
            # waiting for an answer that will not come.
            self._stop(grace=0)
            self._mailbox.stop_keeping_deadlines()
            self._finished.set()

    def _stop(self, grace: float) -> None:
        """Stop: close the inbox, let the resource finish within ``grace`` s."""
        self._core.stop()
        instance = self._instance
        if instance is None:
            return
        if grace > 0 and self._status is not None and self._status.called:
            # The resource's ``async for`` ends now; cancel it if it lingers.
            instance.deadline = min(instance.deadline, trio.current_time() + grace)
        else:
            self._dismiss()

    def _dismiss(self) -> None:
        """Cancel the running instance: breaky no longer wants it."""
        if self._instance is not None:
            self._dismissed = True
            self._instance.cancel()

    async def _run_instance(self) -> None:
        life = Instance()
        inbox = Inbox(self._mailbox, life)
        status = self._status = InstanceStatus(self._on_started, life)
        error: Exception | None = None
        self._dismissed = False
        core = self._core
        start_timeout = self._policy.start_timeout
        try:
            with trio.CancelScope() as scope:
                self._instance = scope
                if start_timeout is not None:
                    # Lifted by started(): see _on_started.
                    scope.deadline = trio.current_time() + start_timeout
                try:
                    await self._fn(inbox, *self._args, task_status=status)
                except BaseException as exc:
                    error, rest = split_errors(exc)
                    if rest is exc:
                        raise
                    if rest is not None:
                        # Leaving through a cancellation (or worse) from
                        # outside; the error is still worth a log record.
                        self._log_end(error, started=status.called, dismissed=False)
                        raise rest from None
        finally:
            self._instance = self._status = None
            self._resource = OFF
            # It takes no more requests; its parked tasks must see that.
            life.ended = True
            self._mailbox.wake_all_receivers()
            self._mailbox.lose_held(error)
        # Ends that breaky asked for (a trip, force_off, a stop) are not failures.
        dismissed = self._dismissed or core.state is State.STOPPED
        if scope.cancelled_caught and not dismissed:
            # Only the start deadline cancels an instance without dismissing it.
            core.log.failure(
                f"resource did not start within start_timeout ({start_timeout:g} s)",
                None,
            )
        else:
            self._log_end(error, started=status.called, dismissed=dismissed)
        if not dismissed:
            core.instance_ended(started=status.called)

    async def _wait_for_retry(self) -> None:
        core = self._core
        retry_at = core.retry_at
        with trio.CancelScope(
            deadline=math.inf if retry_at is None else retry_at
        ) as waiting:
            self._waiting = waiting
            await trio.sleep_forever()
        self._waiting = None
        core.retry_due()
        if core.attempt_wanted:
            # DEBUG: a failed retry is logged anyway, one line (see OutageLog).
            logger.debug(
                "breaker %r is OFF: trying to start the resource",
                self._name,
                extra=core.extra(),
            )

    def _on_started(self, value: object) -> None:
        instance = self._instance
        assert instance is not None  # noqa: S101 - a live status has an instance
        instance.deadline = math.inf  # no start_timeout any more
        core = self._core
        core.attempt_succeeded("the resource started")
        if core.state is State.ON:
            self._resource = value

    # The effects of the core's inputs (Effects).

    def react(self, step: Step) -> None:
        """Wake or re-time the runner; dismiss and answer OFF on a trip."""
        new = step.new
        if step.changed:
            if step.old is State.STARTING:
                self._settled.set()
            if new is State.STOPPED:
                self._resource = OFF
                self._mailbox.close()
            elif step.turn_away:
                # Turned OFF, or forced OFF: nothing more is served.
                self._resource = OFF
                self._mailbox.reject_queued()
        waiting = self._waiting
        if waiting is not None:
            if step.attempt or new is State.STOPPED:
                waiting.cancel()  # reset() wants a start now, or stop()
            else:
                # A fleet may arm, move or drop the one retry timer.
                retry_at = step.retry_at
                waiting.deadline = math.inf if retry_at is None else retry_at
        elif step.dismiss:
            self._dismiss()  # a trip, force_off(), or an attempt a fleet drops

    def _log_end(
        self, error: Exception | None, *, started: bool, dismissed: bool
    ) -> None:
        if dismissed and error is None:
            return
        what = "crashed" if started else "failed to start"
        if error is None:
            what = (
                "returned while its inbox was open"
                if started
                else "returned without calling task_status.started()"
            )
        self._core.log.failure(f"resource {what}", error)
