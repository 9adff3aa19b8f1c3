"""A resource breaker: the Trio task that runs one resource around a Core."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, final

import attrs
import trio

from breaky._core.core import Core, logger
from breaky._core.errors import split_errors
from breaky._core.machine import Machine, State
from breaky._core.off import OFF, Off
from breaky._core.policy import FROM_POLICY, FromPolicy, Kind, Policy, check_seconds

from .inbox import Inbox
from .mailbox import Mailbox
from .request import MessageT, ReplyT

if TYPE_CHECKING:
    from breaky._core.events import Publisher, StateChange, StateChanges
    from breaky._core.statistics import BreakerStatistics

ResourceFunction = Callable[..., Awaitable[object]]


@final
class _ResourceStatus(trio.TaskStatus[Any]):
    """The ``task_status`` a resource instance reports its start through."""

    __slots__ = ("_breaker", "_inbox", "called")

    def __init__(
        self, breaker: CircuitBreaker[Any, Any], inbox: Inbox[Any, Any]
    ) -> None:
        self._breaker = breaker
        self._inbox = inbox
        self.called = False

    def started(self, value: Any = None) -> None:  # noqa: ANN401 - any resource
        if self.called:
            msg = "task_status.started() was already called by this resource"
            raise RuntimeError(msg)
        if self._breaker._status is not self:
            msg = "task_status.started() of a resource instance that has ended"
            raise RuntimeError(msg)
        self.called = True
        self._inbox._started = True
        self._breaker._on_started(value)


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
    _core: Core = attrs.field(init=False)
    _mailbox: Mailbox[MessageT, ReplyT] = attrs.field(init=False)
    _resource: Any = attrs.field(init=False, default=OFF)
    # The running resource instance's scope and start status, if any.
    _instance: trio.CancelScope | None = attrs.field(init=False, default=None)
    _status: _ResourceStatus | None = attrs.field(init=False, default=None)
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

    def __repr__(self) -> str:
        return f"<breaky.CircuitBreaker {self._name!r} {self.state.name}>"

    @property
    def name(self) -> str:
        """The name the breaker was started with."""
        return self._name

    @property
    def state(self) -> State:
        """The breaker's :class:`breaky.State`."""
        return self._core.machine.state

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
        core.totals.calls += 1
        if not core.machine.accepting:
            await core.refuse(shed=False)
            return OFF
        request = self._mailbox.put(message, trio.lowlevel.current_task(), seconds)
        if request is None:
            await core.refuse(shed=True)
            return OFF
        await trio.lowlevel.wait_task_rescheduled(request._abort)
        return request._outcome()  # type: ignore[no-any-return]

    async def cast(self, message: MessageT) -> Off | None:
        """Queue ``message`` for the resource without waiting for an answer.

        Returns ``None`` once queued, or :data:`breaky.OFF` (not queued) when
        the breaker is not ON (or starting).
        """
        await trio.lowlevel.checkpoint()
        if (
            not self._core.machine.accepting
            or self._mailbox.put(message, None, None) is None
        ):
            return OFF
        self._core.totals.casts += 1
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
        self._core.feed(Machine.force_off, "force_off() was called")

    def reset(self) -> None:
        """Forget the failures counted; if OFF (forced or not), start now.

        While ON this only clears the count. Ignored once stopped.
        """
        self._core.feed(Machine.reset, "reset() was called")

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

    # The breaker's task.

    async def _run(self) -> None:
        """Start the resource, restart it, retry while OFF, until stopped."""
        first = True
        core = self._core
        try:
            while (machine := core.machine).state is not State.STOPPED:
                if machine.wants_attempt:
                    if machine.state is State.OFF:
                        core.totals.retries += 1
                    elif not first:
                        core.totals.restarts += 1
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

    async def _keep_deadlines(self) -> None:
        """Time out calls that wait too long; runs beside :meth:`_run`."""
        await self._mailbox.keep_deadlines()

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
        inbox = Inbox(self._mailbox)
        status = self._status = _ResourceStatus(self, inbox)
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
            inbox._end()
            self._mailbox.lose_held(error)
        # Ends that breaky asked for (a trip, force_off, a stop) are not failures.
        dismissed = self._dismissed or core.machine.state is State.STOPPED
        if scope.cancelled_caught and not dismissed:
            # Only the start deadline cancels an instance without dismissing it.
            core.log_error(
                f"resource did not start within start_timeout ({start_timeout:g} s)",
                None,
            )
        else:
            self._log_end(error, started=status.called, dismissed=dismissed)
        if dismissed:
            return
        if status.called:
            core.totals.crashes += 1
            core.feed(Machine.failure, "the resource crashed")
        else:
            core.totals.failed_starts += 1
            core.feed(Machine.attempt_failed, "the resource failed to start")

    async def _wait_for_retry(self) -> None:
        core = self._core
        retry_at = core.machine.retry_at
        with trio.CancelScope(
            deadline=math.inf if retry_at is None else retry_at
        ) as waiting:
            self._waiting = waiting
            await trio.sleep_forever()
        self._waiting = None
        core.feed(Machine.retry_due, "retry")
        if core.machine.wants_attempt:
            # DEBUG: a failed retry is logged anyway, one line (see log_error).
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
        core.feed(
            Machine.attempt_succeeded, core.attempt_reason("the resource started")
        )
        if core.machine.state is State.ON:
            self._resource = value

    # The effects of the core's inputs (Effects).

    def react(self, change: StateChange | None) -> None:
        """Wake or re-time the runner; dismiss and answer OFF on a trip."""
        self._end_wait_if_due()
        if change is None:
            return
        old, new = change.old, change.new
        if old is State.STARTING:
            self._settled.set()
        if new is State.STOPPED:
            self._resource = OFF
            self._mailbox.close()
        elif new is State.FORCED_OFF or (
            new is State.OFF and old is not State.FORCED_OFF
        ):
            # Turned OFF, or forced OFF: nothing more is served.
            self._resource = OFF
            self._mailbox.reject_queued()
            self._dismiss()

    def _end_wait_if_due(self) -> None:
        """Wake the runner once there is something to do; keep it to its timer."""
        machine = self._core.machine
        waiting = self._waiting
        if waiting is not None:
            if machine.wants_attempt or machine.state is State.STOPPED:
                waiting.cancel()  # reset() wants a start now, or stop()
            else:
                # A fleet may arm, move or drop the one retry timer.
                retry_at = machine.retry_at
                waiting.deadline = math.inf if retry_at is None else retry_at
        elif machine.state is State.OFF and not machine.wants_attempt:
            self._dismiss()  # an attempt the fleet no longer wants

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
        self._core.log_error(f"resource {what}", error)
