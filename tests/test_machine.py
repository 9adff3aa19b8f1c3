"""The pure state machine, driven directly: no Trio, time is just a number."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from breaky._core.machine import FLEET_ON_SPREAD, Machine
from breaky._core.policy import Policy
from breaky._core.states import Hold, State


def machine(threshold: int = 3, retry_timeout: float = 10.0) -> Machine:
    return Machine(Policy(failure_threshold=threshold, retry_timeout=retry_timeout))


def tripped(threshold: int = 3, at: float = 5.0) -> Machine:
    m = machine(threshold)
    m.attempt_succeeded(0.0)
    for _ in range(threshold):
        m.failure(at)
    assert m.state is State.OFF
    return m


def test_a_new_machine_is_starting_with_nothing_counted():
    m = machine()
    assert (m.state, m.failures, m.retry_at) == (State.STARTING, 0, None)


def test_started_turns_it_on_with_a_fresh_count():
    m = machine()
    m.attempt_failed(1.0)
    m.attempt_failed(2.0)
    m.attempt_succeeded(3.0)
    assert (m.state, m.failures, m.retry_at) == (State.ON, 0, None)


@pytest.mark.parametrize("threshold", [1, 2, 5])
def test_failed_first_starts_turn_it_off_exactly_at_the_threshold(threshold):
    m = machine(threshold, retry_timeout=10.0)
    for n in range(1, threshold):
        m.attempt_failed(float(n))
        assert (m.state, m.failures, m.retry_at) == (State.STARTING, n, None)
    m.attempt_failed(100.0)
    assert (m.state, m.failures, m.retry_at) == (State.OFF, threshold, 110.0)


def test_failed_restarts_while_on_are_counted_too():
    m = machine(threshold=2)
    m.attempt_succeeded(0.0)
    m.attempt_failed(1.0)
    assert (m.state, m.failures) == (State.ON, 1)
    m.attempt_failed(2.5)
    assert (m.state, m.retry_at) == (State.OFF, 12.5)


def test_crashes_count_and_turn_it_off_at_the_threshold():
    m = machine(threshold=3)
    m.attempt_succeeded(0.0)
    m.failure(1.0)
    m.failure(2.0)
    assert (m.state, m.failures, m.retry_at) == (State.ON, 2, None)
    m.failure(3.0)
    assert (m.state, m.failures, m.retry_at) == (State.OFF, 3, 13.0)


def test_reported_failures_count_like_crashes():
    m = machine(threshold=2)
    m.attempt_succeeded(0.0)
    m.failure(1.0)
    assert (m.state, m.failures) == (State.ON, 1)
    m.failure(2.0)
    assert (m.state, m.retry_at) == (State.OFF, 12.0)


def test_the_count_survives_a_restart_and_never_decays():
    m = machine(threshold=3)
    m.attempt_succeeded(0.0)
    m.failure(1.0)
    m.attempt_succeeded(1.0)  # the restarted instance is up again
    m.failure(1000.0)
    assert (m.state, m.failures) == (State.ON, 2)
    m.attempt_succeeded(1000.0)
    m.failure(10_000.0)
    assert m.state is State.OFF


@pytest.mark.parametrize("event", [Machine.failure])
def test_failures_are_ignored_while_off(event):
    m = tripped(threshold=3, at=5.0)
    event(m, 7.0)
    assert (m.state, m.failures, m.retry_at) == (State.OFF, 3, 15.0)


@pytest.mark.parametrize("event", [Machine.failure, Machine.attempt_failed])
def test_failures_are_ignored_once_stopped(event):
    m = machine(threshold=1)
    m.stop(0.0)
    event(m, 1.0)
    assert (m.state, m.failures, m.retry_at) == (State.STOPPED, 0, None)


def test_retry_is_due_at_retry_at_and_not_before():
    m = tripped(at=5.0)  # retry_at = 15.0
    m.retry_due(14.999)
    assert (m.retry_at, m.wants_attempt) == (15.0, False)
    m.retry_due(15.0)
    assert (m.state, m.retry_at, m.wants_attempt) == (State.OFF, None, True)


def test_retry_is_due_after_retry_at():
    m = tripped(at=5.0)
    m.retry_due(99.0)
    assert (m.state, m.retry_at, m.wants_attempt) == (State.OFF, None, True)


def test_a_failed_retry_rearms_the_timer_from_its_own_time():
    m = tripped(threshold=3, at=5.0)
    m.retry_due(15.0)
    m.attempt_failed(16.0)
    assert (m.state, m.failures, m.retry_at) == (State.OFF, 3, 26.0)
    assert not m.wants_attempt


def test_a_successful_retry_turns_it_on_with_a_fresh_count():
    m = tripped(threshold=3, at=5.0)
    m.retry_due(15.0)
    m.attempt_succeeded(16.0)
    assert (m.state, m.failures, m.retry_at) == (State.ON, 0, None)
    m.failure(17.0)
    m.failure(18.0)
    assert m.state is State.ON  # a full threshold again before the next trip


@pytest.mark.parametrize("state_of", ["starting", "on", "off waiting", "off due"])
def test_stop_is_final(state_of):
    m = machine(threshold=1)
    if state_of != "starting":
        m.attempt_succeeded(0.0)
    if state_of.startswith("off"):
        m.failure(1.0)
    if state_of == "off due":
        m.retry_due(100.0)
    m.stop(0.0)
    assert (m.state, m.retry_at) == (State.STOPPED, None)
    m.attempt_succeeded(200.0)
    m.attempt_failed(201.0)
    m.failure(202.0)
    m.failure(203.0)
    m.retry_due(1e9)
    assert (m.state, m.retry_at) == (State.STOPPED, None)
    assert not m.accepting
    assert not m.wants_attempt


def test_accepting_and_wants_attempt_in_every_state():
    starting = machine(threshold=1)
    on = machine(threshold=1)
    on.attempt_succeeded(0.0)
    waiting = tripped(threshold=1)
    due = tripped(threshold=1)
    due.retry_due(1e9)
    stopped = machine()
    stopped.stop(0.0)
    seen = {
        name: (m.state, m.accepting, m.wants_attempt)
        for name, m in {
            "starting": starting,
            "on": on,
            "off waiting": waiting,
            "off due": due,
            "stopped": stopped,
        }.items()
    }
    assert seen == {
        "starting": (State.STARTING, True, True),
        "on": (State.ON, True, True),
        "off waiting": (State.OFF, False, False),
        "off due": (State.OFF, False, True),
        "stopped": (State.STOPPED, False, False),
    }


def test_a_late_start_while_off_and_waiting_is_ignored():
    # The breaker tripped while an instance was starting (a call timed out)
    # and cancelled it, but the instance called task_status.started() before
    # its next checkpoint (e.g. after a shielded connect): the trip stands.
    m = machine(threshold=1)
    m.failure(1.0)
    m.attempt_succeeded(2.0)
    assert (m.state, m.failures, m.retry_at) == (State.OFF, 1, 11.0)


# A tiny model of the spec, fed random inputs at non-decreasing times.


@attrs.define
class Model:
    threshold: int
    retry_timeout: float
    state: State = State.STARTING
    failures: int = 0
    retry_at: float | None = None

    def feed(self, event: str, now: float) -> None:
        if self.state is State.STOPPED:
            return
        if event == "stop":
            self.state, self.retry_at = State.STOPPED, None
        elif event == "attempt_succeeded" and self.state is not State.ON:
            if self.state is State.OFF and self.retry_at is not None:
                return  # a dismissed instance: the trip stands
            self.state, self.failures, self.retry_at = State.ON, 0, None
        elif event == "attempt_failed" and self.state is State.OFF:
            self.retry_at = now + self.retry_timeout
        elif event == "retry_due":
            if self.retry_at is not None and now >= self.retry_at:
                self.retry_at = None
        elif event in {"attempt_failed", "failure"} and self.state in {
            State.STARTING,
            State.ON,
        }:
            self.failures += 1
            if self.failures >= self.threshold:
                self.state, self.retry_at = State.OFF, now + self.retry_timeout


EVENTS = ["attempt_succeeded", "attempt_failed", "failure", "retry_due", "stop"]


@given(
    threshold=st.integers(min_value=1, max_value=4),
    retry_timeout=st.sampled_from([0.5, 1.0, 10.0]),
    inputs=st.lists(
        st.tuples(st.sampled_from(EVENTS), st.sampled_from([0.0, 0.25, 1.0, 20.0])),
        max_size=40,
    ),
)
def test_random_inputs_follow_the_model_and_keep_the_invariants(
    threshold, retry_timeout, inputs
):
    m = machine(threshold, retry_timeout)
    model = Model(threshold, retry_timeout)
    now = 0.0
    for event, elapsed in inputs:
        now += elapsed
        was_stopped = m.state is State.STOPPED
        if event == "stop":
            m.stop(0.0)
        else:
            getattr(m, event)(now)
        model.feed(event, now)

        assert (m.state, m.failures, m.retry_at) == (
            model.state,
            model.failures,
            model.retry_at,
        )
        waiting = m.state is State.OFF and not m.wants_attempt
        assert (m.retry_at is not None) == waiting
        assert m.retry_at is None or m.retry_at <= now + retry_timeout
        if m.accepting:
            assert m.failures < threshold
        if was_stopped:
            assert m.state is State.STOPPED


# What a fleet says: new inputs of the same machine.


def held(prober: bool = False) -> Machine:
    m = machine()
    m.attempt_succeeded(0.0)
    (m.fleet_probe if prober else m.fleet_off)(1.0)
    return m


def test_fleet_off_turns_an_on_machine_off_with_no_timer():
    m = held()
    assert (m.state, m.hold, m.retry_at, m.wants_attempt) == (
        State.OFF,
        Hold.HELD,
        None,
        False,
    )
    assert not m.sees_off


def test_fleet_off_drops_a_tripped_machines_timer_and_its_report():
    m = tripped()
    assert m.sees_off
    m.fleet_off(6.0)
    assert (m.retry_at, m.wants_attempt, m.sees_off) == (None, False, False)


def test_the_prober_retries_at_the_policys_rate():
    m = held(prober=True)
    assert (m.state, m.hold, m.retry_at) == (State.OFF, Hold.PROBER, 11.0)
    m.retry_due(11.0)
    assert m.wants_attempt
    m.attempt_failed(11.5)
    assert (m.retry_at, m.sees_off) == (21.5, True)  # its own failure: reported


def test_a_tripped_machine_keeps_its_timer_as_the_prober():
    m = tripped(at=5.0)
    m.fleet_probe(6.0)
    assert m.retry_at == 15.0


def test_a_held_machine_that_becomes_the_prober_waits_one_period():
    m = held()
    m.fleet_probe(4.0)
    assert m.retry_at == 14.0
    m.retry_due(14.0)
    m.fleet_probe(14.0)  # said again while the attempt is under way
    assert (m.retry_at, m.wants_attempt) == (None, True)


def test_the_prober_told_held_stops_trying():
    m = held(prober=True)
    m.fleet_off(2.0)
    assert (m.retry_at, m.wants_attempt) == (None, False)


def test_fleet_on_asks_a_held_machine_for_a_start_within_the_spread():
    m = held()
    m.fleet_on(5.0)
    assert m.hold is Hold.NONE
    assert m.retry_at is not None
    assert 5.0 <= m.retry_at <= 5.0 + FLEET_ON_SPREAD


def test_fleet_on_brings_the_probers_next_start_forward_never_back():
    m = held(prober=True)
    m.fleet_on(2.0)
    assert m.retry_at is not None
    assert m.retry_at <= 2.0 + FLEET_ON_SPREAD
    m = held(prober=True)
    m.retry_due(11.0)  # the probe is under way: left alone
    m.fleet_on(11.0)
    assert (m.retry_at, m.wants_attempt) == (None, True)


def test_fleet_on_changes_nothing_unless_held_and_off():
    m = tripped()
    m.fleet_on(6.0)  # never held: its own trip stands
    assert m.retry_at == 15.0
    m = held()
    m.attempt_succeeded(2.0)  # not wanted: ignored
    m.reset(2.0)
    m.attempt_succeeded(2.0)
    m.fleet_probe(3.0)
    m.reset(3.0)
    assert m.hold is Hold.NONE
    m.fleet_off(4.0)
    m.force_off(5.0)
    m.fleet_on(6.0)
    assert (m.state, m.hold, m.retry_at) == (State.FORCED_OFF, Hold.NONE, None)


def test_fleet_lost_puts_a_held_machine_back_on_local_retries():
    m = held()
    m.fleet_lost(3.0)
    assert (m.hold, m.retry_at) == (Hold.NONE, 13.0)
    m = held(prober=True)
    m.fleet_lost(3.0)
    assert m.retry_at == 11.0  # the prober's timer stands


def test_a_stopped_or_forced_off_machine_ignores_the_fleet():
    m = machine()
    m.stop(0.0)
    m.fleet_off(1.0)
    assert (m.state, m.hold) == (State.STOPPED, Hold.NONE)
    m = machine()
    m.force_off(1.0)
    m.fleet_off(2.0)
    assert (m.state, m.hold, m.retry_at) == (State.FORCED_OFF, Hold.HELD, None)
    m.reset(3.0)  # the manual override: start now
    assert (m.hold, m.wants_attempt) == (Hold.NONE, True)


def test_a_failed_attempt_while_not_held_reports_off_again():
    m = held()
    m.fleet_on(2.0)
    assert not m.sees_off
    assert m.retry_at is not None
    m.retry_due(m.retry_at)
    m.attempt_failed(3.0)
    assert m.sees_off


def test_the_probers_own_failures_are_reported_whatever_led_there():
    # Issue 22, defect 1: the prober's failed attempt, and its trip after its
    # own start succeeded, left it OFF by its own failures with no report.
    m = held(prober=True)
    m.retry_due(11.0)
    m.attempt_failed(11.0)
    assert (m.hold, m.sees_off) == (Hold.PROBER, True)
    m.fleet_on(12.0)  # another instance's start: older news is dropped
    assert (m.hold, m.sees_off) == (Hold.NONE, False)
    m = held(prober=True)
    m.retry_due(11.0)
    m.attempt_succeeded(11.0)  # its probe starts the resource: ON
    assert (m.state, m.hold) == (State.ON, Hold.NONE)
    for _ in range(3):
        m.failure(11.5)  # and it trips again before the fleet's ON arrives
    m.fleet_on(11.6)  # that ON is for its own start: the trip stands
    assert (m.state, m.sees_off, m.retry_at) == (State.OFF, True, 21.5)
    m = held()
    m.attempt_failed(2.0)  # a held instance tried nothing: no report
    assert not m.sees_off


def rate_machine() -> Machine:
    policy = Policy(failure_rate=0.5, minimum_calls=4, failure_window=20.0)
    return Machine(policy, state=State.ON)


def test_failure_reported_amends_the_latest_success_in_the_window() -> None:
    m = rate_machine()
    m.success(0.0)
    m.failure(5.0)  # the newest slice has no success to amend
    m.failure_reported(6.0)  # amends the success at 0.0: still 2 outcomes
    assert (m.failures, m.failures_at(6.0), m.state) == (2, 2, State.ON)
    m.failure_reported(7.0)  # nothing left to amend: a failure of its own
    assert (m.failures, m.state) == (3, State.ON)  # 3 outcomes: below minimum
    m.failure(8.0)
    assert m.state is State.OFF  # 4 of 4


def test_a_new_clock_ends_the_wait_and_keeps_what_was_counted() -> None:
    m = rate_machine()
    for t in (1.0, 2.0, 3.0):
        m.success(t)
    m.failure(4.0)
    assert m.failures_at(4.0) == 1
    m.new_clock(1000.0)  # another run: times on its clock
    assert m.failures_at(1000.0) == 1
    assert m.failures_at(1030.0) == 0  # a window later, forgotten
    tripped = machine(threshold=1)
    tripped.attempt_succeeded(0.0)
    tripped.failure(1.0)
    assert tripped.retry_at == 11.0
    tripped.new_clock(5.0)
    assert (tripped.retry_at, tripped.failures, tripped.wants_attempt) == (
        None,
        1,
        True,
    )
    empty = rate_machine()
    empty.new_clock(3.0)
    assert empty.failures_at(3.0) == 0


def test_a_stale_trial_changes_nothing() -> None:
    m = tripped(threshold=1, at=0.0)
    m.retry_due(10.0)
    ticket = m.trial_began(10.0)
    m.force_off(11.0)
    m.reset(12.0)
    m.trial_ended(13.0, ticket, passed=False)  # forgotten at force_off
    assert (m.state, m.retry_at, m.trial) == (State.OFF, None, None)


def test_a_trial_ending_that_is_not_the_trial_changes_nothing() -> None:
    machine = Machine(Policy(failure_threshold=1, retry_timeout=1), state=State.ON)
    machine.failure(0)
    machine.retry_due(1)
    ticket = machine.trial_began(1)
    machine.trial_ended(1, ticket + 1, passed=True)  # not the trial in flight
    assert (machine.state, machine.trial) == (State.OFF, ticket)


def test_a_success_changes_nothing_under_the_seeds_rule() -> None:
    machine = Machine(Policy(failure_threshold=3), state=State.ON)  # not in a row
    machine.failure(0)
    assert not machine.wants_successes
    machine.success(1)
    assert machine.failures == 1
