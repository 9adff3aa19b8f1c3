"""The core of one breaker, whatever its kind: it admits, counts and decides.

Every call of every kind meets its :class:`Core` twice. :meth:`Core.admit`
says whether it may run now (a :class:`~breaky._core.admission.Verdict`, or a
:class:`~breaky._core.admission.Trial` while OFF) and counts it;
:meth:`Core.ended` counts how it ended, exactly once, judges whether that is
a failure and tells the state machine (through :mod:`breaky._core.decisions`,
the one place it is fed). The line of calls waiting for a place (the
bulkhead) is the core's, so every kind with one admits the same way. A
resource breaker tells it of its attempts (starts) and instances too.
"""

from __future__ import annotations

from typing import cast, final

from breaky._core.admission import (
    CALL,
    OFF,
    PLACED,
    SHED,
    WAIT,
    Admission,
    Outcome,
    Trial,
    Verdict,
    answer_off,
)
from breaky._core.decisions import Decisions
from breaky._core.machine import Machine
from breaky._core.policy import Kind
from breaky._core.states import Hold, State

_ON = State.ON


@final
class Core(Decisions):
    """One breaker's admissions and outcomes, on its decisions."""

    __slots__ = ()

    # Admission.

    def admit(self) -> Admission:  # noqa: PLR0911 - one return per verdict
        """May a call run now? Counts it; say how it ended with :meth:`ended`.

        ``OFF`` and ``SHED`` are answered with :meth:`refuse`; ``WAIT`` waits
        for a place with :meth:`wait_for_place` first.
        """
        self.totals.calls += 1
        machine = self._machine
        if machine.state is not _ON:
            if self.kind is Kind.RESOURCE:
                # A resource queues calls while it first starts; it has no trials.
                return CALL if machine.accepting else OFF
            if not self._trial_due():
                return OFF
            # The one trial: it takes no place, however full the line.
            self.totals.retries += 1
            return Trial(machine.trial_began(self.now()))
        line = self.line
        if line is None:
            return CALL
        if line.take_nowait():
            return PLACED
        if line.line_full:
            return SHED
        return WAIT

    async def wait_for_place(self) -> Verdict:
        """A ``WAIT`` admission waits in line: ``PLACED``, or ``OFF`` if turned away.

        Cancellation leaves the line (the call stays ``WAIT``).
        """
        line = self.line
        assert line is not None  # noqa: S101 - WAIT comes only with a line
        if not await line.wait():
            return OFF
        if self._machine.state is not _ON:
            # Handed one in the very step the breaker turned OFF: OFF.
            line.give_back()
            return OFF
        return PLACED

    async def refuse(self, verdict: Verdict) -> None:
        """Answer an ``OFF`` or ``SHED`` admission: one checkpoint, counted."""
        await answer_off(self.totals, verdict)

    def refuses_at_once(self) -> bool:
        """Not ON: whether a call gets OFF with no admission (no trial is due).

        The hot OFF path: one frame, the clock read once.
        """
        machine = self._machine
        if machine.retry_at is not None:
            # The time first: another run's clock ends the wait (new_clock).
            if machine.waiting(self.now()):
                return True  # still waiting: no input, nothing to feed
            self.feed(Machine.retry_due, "retry")
        return not machine.trial_wanted

    def _trial_due(self) -> bool:
        """Not ON: whether this call is the trial (the wait passed, none runs)."""
        return not self.refuses_at_once()

    # Outcomes.

    def ended(  # noqa: C901, PLR0912 - one branch per outcome, flat: hot
        self,
        admission: Admission,
        outcome: Outcome,
        error: BaseException | None = None,
        ran_at: float | None = None,
    ) -> bool:
        """An admitted call ended so: count it once, judge it, tell the machine.

        ``error`` is the call's exception (``ERROR``, ``TIMEOUT``); ``ran_at``
        is when it began to run (got its place), if its duration matters
        (slow calls, an adaptive limit). Returns whether it counted as a
        failure.
        """
        totals = self.totals
        reason: str | None = None
        if outcome is Outcome.REPLY:
            totals.replies += 1
        elif outcome is Outcome.ERROR:
            totals.errors += 1
            if self._judged_failure(cast("Exception", error)):
                reason = f"a call failed with {type(error).__name__}"
        elif outcome is Outcome.TIMEOUT:
            totals.timeouts += 1
            reason = "a call timed out"
        else:
            if outcome is Outcome.CANCELLED:
                totals.cancelled += 1
            elif outcome is Outcome.WRONG_CALL:
                totals.errors += 1  # a wrong call, not a failing dependency
            elif outcome is Outcome.TURNED_AWAY:
                totals.off += 1
            elif outcome is Outcome.SHED:
                totals.shed += 1
            else:  # LINE_TIMEOUT: overload took its time, no outcome at all
                totals.timeouts += 1
            if admission is PLACED:
                self._give_back(None, dropped=False)  # it teaches nothing
            elif type(admission) is Trial:
                self._end_trial(admission.ticket, passed=None)
            return False
        limit = self.policy.slow_call_duration
        if (
            limit is not None
            and ran_at is not None
            and outcome is not Outcome.TIMEOUT  # timed out: slow said already
            and self.now() - ran_at > limit
        ):
            totals.slow_calls += 1
            reason = reason or "a call was slow"
        if admission is PLACED:
            # Its time from its place to its answer, and whether it failed:
            # what an adaptive limit learns from.
            self._give_back(ran_at, dropped=reason is not None)
        if type(admission) is Trial:
            if reason is not None:
                # The error says why; a slow trial has none, so its reason does.
                what = "trial call failed"
                self.log.failure(what if error else f"{what} ({reason})", error)
            self._end_trial(admission.ticket, passed=reason is None)
        elif reason is not None:
            self.feed(Machine.failure, reason)
        elif self.failing:
            self.feed(Machine.success, "a call succeeded")
        return reason is not None

    def replied(self, ran_at: float) -> None:
        """A resource's call was answered with a reply: ``ended()``'s hot path.

        With nothing to judge (no slow-call limit, no success that matters)
        it is one increment.
        """
        if self.failing or self.policy.slow_call_duration is not None:
            self.ended(CALL, Outcome.REPLY, None, ran_at)
        else:
            self.totals.replies += 1

    def _give_back(self, ran_at: float | None, *, dropped: bool) -> None:
        line = self.line
        assert line is not None  # noqa: S101 - PLACED comes only with a line
        line.give_back(ran_at, dropped=dropped)

    def extra_attempt(self, *, hedge: bool) -> None:
        """One call makes one more attempt: a hedge, or a re-attempt."""
        if hedge:
            self.totals.hedges += 1
        else:
            self.totals.reattempts += 1

    def attempt_denied(self) -> None:
        """One call wanted one more attempt and was not allowed to make it."""
        self.totals.attempts_denied += 1

    def would_run(self) -> bool:
        """Whether a call now would run (ON, or OFF with its trial due): a query."""
        machine = self._machine
        if machine.state is _ON or machine.trial_wanted:
            return True
        # OFF, its wait over now (not yet fed), no trial in flight.
        return (
            machine.state is State.OFF
            and machine.retry_at is not None
            and not machine.waiting(self.now())
            and machine.hold is not Hold.HELD
            and machine.trial is None
        )

    def lost(self, calls: int) -> None:
        """``calls`` held by a resource instance that ended: ResourceLost."""
        self.totals.lost += calls

    def cast_queued(self) -> None:
        """A cast was queued (casts are no calls: they have no outcome)."""
        self.totals.casts += 1

    def cast_ended(self, error: Exception | None) -> None:
        """A cast was answered: nobody waits, but its error may count."""
        if error is not None and self._judged_failure(error):
            self.feed(Machine.failure, f"a cast failed with {type(error).__name__}")
        elif self.failing:
            self.feed(Machine.success, "a call succeeded")

    def _judged_failure(self, error: Exception) -> bool:
        """Whether ``error`` counts, by the policy; a predicate that raises says yes.

        The user's predicate must not cost the caller its answer nor leave a
        trial or a place behind: its own error is logged (once an outage),
        and the call counts as a failure.
        """
        try:
            return self.counts(error)
        except Exception as exc:  # noqa: BLE001 - logged, never lost
            self.log.callback_failed("failure_exceptions", exc, error)
            return True

    def _end_trial(self, ticket: int, *, passed: bool | None) -> None:
        """The trial ``ticket`` passed, failed, or (``None``) was withdrawn.

        Its ticket is the machine's trial until it ends (whatever switches
        came meanwhile, a trial holds its place): the machine decides.
        """
        if passed is None:
            reason = "a trial call was withdrawn"
        elif passed:
            reason = self._attempt_reason("a trial call succeeded")
        else:
            reason = "a trial call failed"
        self.feed(
            lambda machine, now: machine.trial_ended(now, ticket, passed=passed),
            reason,
        )

    # A resource's attempts (its starts) and instances.

    def attempt_began(self, *, first: bool) -> None:
        """A resource instance is started: a retry while OFF, or a restart."""
        if self._machine.state is State.OFF:
            self.totals.retries += 1
        elif not first:
            self.totals.restarts += 1

    def attempt_succeeded(self, what: str) -> None:
        """The attempt succeeded (``task_status.started()``): ``what`` happened."""
        self.log.working()
        self.feed(Machine.attempt_succeeded, self._attempt_reason(what))

    def instance_ended(self, *, started: bool) -> None:
        """An instance ended on its own: a crash, or a failed start."""
        if started:
            self.totals.crashes += 1
            self.feed(Machine.failure, "the resource crashed")
        else:
            self.totals.failed_starts += 1
            self.feed(Machine.attempt_failed, "the resource failed to start")

    def retry_due(self) -> None:
        """The retry timer fired (or was woken): the wait may be over."""
        self.feed(Machine.retry_due, "retry")
