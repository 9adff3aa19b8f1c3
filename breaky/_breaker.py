"""A circuit breaker: the Trio task that runs one resource around a Machine."""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Generic, final

import attrs
import trio

from ._errors import split_errors
from ._events import Publisher, StateChange, StateChanges
from ._inbox import Inbox
from ._machine import Machine, State
from ._mailbox import Mailbox
from ._off import OFF, Off
from ._policy import Policy, check_count, check_seconds
from ._request import MessageT, ReplyT
from ._statistics import BreakerStatistics, Totals

logger = logging.getLogger("breaky")

ResourceFunction = Callable[..., Awaitable[object]]


class FromPolicy(enum.Enum):
    """The default of options that, when not given, come from the policy."""

    FROM_POLICY = "from the policy"

    def __repr__(self) -> str:
        return f"<{self.value}>"


FROM_POLICY = FromPolicy.FROM_POLICY


@final
class _ResourceStatus(trio.TaskStatus[Any]):
    """The ``task_status`` a resource instance reports its start through."""

    __slots__ = ("_breaker", "called")

    def __init__(self, breaker: CircuitBreaker[Any, Any]) -> None:
        self._breaker = breaker
        self.called = False

    def started(self, value: Any = None) -> None:  # noqa: ANN401 - any resource
        if self.called:
            msg = "task_status.started() was already called by this resource"
            raise RuntimeError(msg)
        if self._breaker._status is not self:
            msg = "task_status.started() of a resource instance that has ended"
            raise RuntimeError(msg)
        self.called = True
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
    _shutdown_timeout: float
    # The supervisor's subscribers, told of this breaker's changes too.
    _supervisor_publisher: Publisher
    _machine: Machine = attrs.field(init=False)
    _totals: Totals = attrs.field(init=False, factory=Totals)
    _mailbox: Mailbox[MessageT, ReplyT] = attrs.field(init=False)
    _publisher: Publisher = attrs.field(init=False, factory=Publisher)
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
        self._machine = Machine(self._policy)
        self._mailbox = Mailbox(self._name, self._policy, self._totals, self._failed)

    def __repr__(self) -> str:
        return f"<breaky.CircuitBreaker {self._name!r} {self.state.name}>"

    @property
    def name(self) -> str:
        """The name the breaker was started with."""
        return self._name

    @property
    def state(self) -> State:
        """The breaker's :class:`breaky.State`."""
        return self._machine.state

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
        starting); the resource never sees that request. If the caller is
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
        totals = self._totals
        totals.calls += 1
        if not self._machine.accepting:
            return await self._refuse(shed=False)
        request = self._mailbox.put(message, trio.lowlevel.current_task(), seconds)
        if request is None:
            return await self._refuse(shed=True)
        await trio.lowlevel.wait_task_rescheduled(request._abort)
        return request._outcome()  # type: ignore[no-any-return]

    async def _refuse(self, *, shed: bool) -> Off:
        """Answer a call OFF: not serving, or shed (``max_queued`` waiting)."""
        totals = self._totals
        try:
            await trio.lowlevel.checkpoint()
        except BaseException:
            totals.cancelled += 1  # the caller got Cancelled, not OFF
            raise
        if shed:
            totals.shed += 1
        else:
            totals.off += 1
        return OFF

    async def cast(self, message: MessageT) -> Off | None:
        """Queue ``message`` for the resource without waiting for an answer.

        Returns ``None`` once queued, or :data:`breaky.OFF` (not queued) when
        the breaker is not ON (or starting).
        """
        await trio.lowlevel.checkpoint()
        if (
            not self._machine.accepting
            or self._mailbox.put(message, None, None) is None
        ):
            return OFF
        self._totals.casts += 1
        return None

    def failure(self) -> None:
        """Register one failure of the resource, as seen by its caller.

        breaky does not count error replies by itself (unless the policy's
        ``failure_exceptions`` says so); call this when a reply shows the
        resource is failing. At ``failure_threshold`` the resource is
        cancelled and the breaker turns OFF. Ignored unless ON or starting.
        """
        self._failed("failure() was called")

    def force_off(self) -> None:
        """Turn OFF now and stop the resource; nothing is tried until reset().

        Queued calls are answered OFF, and so is every call after, as in OFF;
        the state is :attr:`State.FORCED_OFF <breaky.State.FORCED_OFF>`.
        Ignored once stopped.
        """
        self._feed(Machine.force_off, "force_off() was called")

    def reset(self) -> None:
        """Forget the failures counted; if OFF (forced or not), start now.

        While ON this only clears the count. Ignored once stopped.
        """
        self._feed(Machine.reset, "reset() was called")

    def subscribe(self, *, max_buffer: int = 100) -> StateChanges:
        """Return a channel of this breaker's later state changes, in order.

        It never slows the breaker: beyond ``max_buffer`` unread changes the
        oldest is dropped and counted in ``missed``. It ends when the breaker
        stops.
        """
        check_count("max_buffer", max_buffer, minimum=1)
        return self._publisher.subscribe(max_buffer)

    def statistics(self) -> BreakerStatistics:
        """Return a snapshot of the state, the failures and the totals."""
        return BreakerStatistics(
            state=self._machine.state,
            failures=self._machine.count(trio.current_time()),
            pending=self._mailbox.pending_calls(),
            **attrs.asdict(self._totals),
        )

    # The breaker's task.

    async def _run(self) -> None:
        """Start the resource, restart it, retry while OFF, until stopped."""
        first = True
        try:
            while (machine := self._machine).state is not State.STOPPED:
                if machine.wants_start:
                    if machine.state is State.OFF:
                        self._totals.retries += 1
                    elif not first:
                        self._totals.restarts += 1
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
        if self._machine.state is not State.STOPPED:
            self._feed(lambda machine, _: machine.stop(), "stopped")
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
        status = self._status = _ResourceStatus(self)
        inbox = Inbox(self._mailbox)
        error: Exception | None = None
        self._dismissed = False
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
        dismissed = self._dismissed or self._machine.state is State.STOPPED
        if scope.cancelled_caught and not dismissed:
            # Only the start deadline cancels an instance without dismissing it.
            logger.error(
                "breaker %r: the resource did not start within start_timeout (%g s)",
                self._name,
                start_timeout,
                extra=self._extra(),
            )
        else:
            self._log_end(error, started=status.called, dismissed=dismissed)
        if dismissed:
            return
        if status.called:
            self._totals.crashes += 1
            self._feed(Machine.crashed, "the resource crashed")
        else:
            self._totals.failed_starts += 1
            self._feed(Machine.start_failed, "the resource failed to start")

    async def _wait_for_retry(self) -> None:
        retry_at = self._machine.retry_at
        with trio.CancelScope(
            deadline=math.inf if retry_at is None else retry_at
        ) as waiting:
            self._waiting = waiting
            await trio.sleep_forever()
        self._waiting = None
        self._feed(Machine.retry_due, "retry")
        if self._machine.wants_start:
            logger.info(
                "breaker %r is OFF: trying to start the resource",
                self._name,
                extra=self._extra(),
            )

    def _on_started(self, value: object) -> None:
        instance = self._instance
        assert instance is not None  # noqa: S101 - a live status has an instance
        instance.deadline = math.inf  # no start_timeout any more
        self._feed(Machine.started, "the resource started")
        if self._machine.state is State.ON:
            self._resource = value

    def _failed(self, reason: str) -> None:
        self._feed(Machine.failure, reason)

    # State changes: the one place where the machine is fed.

    def _feed(self, event: Callable[[Machine, float], None], reason: str) -> None:
        machine = self._machine
        old = machine.state
        now = trio.current_time()
        event(machine, now)
        self._end_wait_if_due()
        if machine.state is not old:
            self._changed(StateChange(self._name, old, machine.state, reason, now))

    def _end_wait_if_due(self) -> None:
        """Wake the runner from its wait once there is something to do."""
        machine = self._machine
        if self._waiting is not None and (
            machine.wants_start or machine.state is State.STOPPED
        ):
            self._waiting.cancel()  # reset() wants a start now, or stop()

    def _changed(self, change: StateChange) -> None:
        old, new = change.old, change.new
        if old is State.STARTING:
            self._settled.set()
        if new is State.ON:
            logger.info(
                "breaker %r is ON (%s)", self._name, change.reason, extra=self._extra()
            )
        elif new is State.STOPPED:
            self._resource = OFF
            self._mailbox.close()
            logger.info("breaker %r stopped", self._name, extra=self._extra())
        elif new is State.OFF and old is State.FORCED_OFF:
            logger.info("breaker %r was reset", self._name, extra=self._extra())
        else:
            # Turned OFF, or forced OFF: nothing more is served.
            self._resource = OFF
            self._mailbox.reject_queued()
            self._dismiss()
            if new is State.OFF:
                self._totals.trips += 1
            self._log_off(change)
        self._publisher.publish(change)
        self._supervisor_publisher.publish(change)
        if new is State.STOPPED:
            self._publisher.end()

    def _log_off(self, change: StateChange) -> None:
        if change.new is State.FORCED_OFF:
            logger.warning("breaker %r forced OFF", self._name, extra=self._extra())
            return
        retry_at = self._machine.retry_at
        assert retry_at is not None  # noqa: S101 - a trip arms the retry
        logger.error(
            "breaker %r turned OFF after %d failures (last: %s); next start in %g s",
            self._name,
            self._machine.failures,
            change.reason,
            retry_at - change.time,
            extra=self._extra(),
        )

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
        logger.error(
            "breaker %r: the resource %s",
            self._name,
            what,
            exc_info=error,
            extra=self._extra(),
        )

    def _extra(self) -> dict[str, object]:
        return {"breaker": self._name, "state": self._machine.state.value}
