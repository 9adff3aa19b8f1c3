"""The suite's own deadlines (conftest.py): a lost answer fails by name."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing
from deadlines import with_deadlines

import breaky

if TYPE_CHECKING:
    from trio.testing import MockClock as Clock


async def never_starts(inbox: object, *, task_status: object) -> None:
    raise ConnectionRefusedError


def test_a_wait_that_timers_keep_busy_fails_on_trios_clock() -> None:
    async def lost_answer() -> None:
        # The retry timer fires every 10 s forever; nobody answers the event.
        async with breaky.open_supervisor() as sup:
            await sup.start_circuit_breaker("db", never_starts, failure_threshold=1)
            await trio.Event().wait()

    bounded = with_deadlines(lost_answer, virtual=1000, real=60)
    with pytest.raises(pytest.fail.Exception, match="after 1000 s on Trio's clock"):
        trio.run(bounded, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.virtual_deadline(1)
async def test_the_virtual_deadline_is_not_a_deadline_the_clock_jumps_to(
    autojump_clock: Clock,
) -> None:
    # Everything waits on a thread: the clock must not jump past the bound.
    await trio.to_thread.run_sync(time.sleep, 0.05)
    assert trio.current_time() == 0


def test_a_test_that_waits_for_nothing_fails_on_the_real_clock() -> None:
    async def waits_for_nothing() -> None:
        await trio.Event().wait()

    bounded = with_deadlines(waits_for_nothing, virtual=1000, real=0.1)
    with pytest.raises(pytest.fail.Exception, match=r"after 0\.1 s of real time"):
        trio.run(bounded, clock=trio.testing.MockClock(autojump_threshold=0))
