"""The fleet's sync protocol, driven directly: no Redis, no Trio, no I/O.

Breakers are plain objects here, and Redis's answers are written by hand, as
the SYNC script would give them: three values per breaker (OFF, prober,
reason).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from breaky import State
from breaky._core.fleet import View
from breaky._fleet import messages, protocol, tracker
from breaky._fleet.messages import CHUNK, Round, Tell
from breaky._fleet.protocol import SyncProtocol


@attrs.define
class Breaker:
    name: str
    state: State = State.ON
    sees_off: bool = False
    heard: list[tuple[View, str]] = attrs.Factory(list)

    def tell(self, view: View, reason: str) -> None:
        """As a machine takes it, roughly: held OFF turns an ON breaker OFF."""
        self.heard.append((view, reason))
        if view in (View.OFF, View.PROBE) and self.state is State.ON:
            self.state, self.sees_off = State.OFF, False


@attrs.define
class Breakers:
    running: dict[str, Breaker] = attrs.Factory(dict)

    def add(self, *names: str) -> list[Breaker]:
        for name in names:
            self.running[name] = Breaker(name)
        return [self.running[name] for name in names]

    def names(self) -> list[str]:
        return list(self.running)

    def members(self) -> list[Breaker]:
        return list(self.running.values())

    def member(self, name: str) -> Breaker | None:
        return self.running.get(name)


ON_ = [0, 0, ""]


def off(reason: str = "2 of 3 instances report OFF", *, prober: bool = False) -> list:
    return [1, int(prober), reason]


def sent(round_: Round) -> list[tuple[str, str]]:
    """The (name, mode) pairs of a round, in order."""
    return [sync for call in round_.calls for sync in call]


def answer(
    protocol: SyncProtocol,
    round_: Round,
    breakers: Breakers,
    per_name: dict[str, list[object]] | None = None,
) -> list[Tell]:
    """Redis's replies to ``round_``: as ``per_name`` says, else "not OFF"."""
    per_name = per_name or {}
    replies = [
        [v for name, _ in call for v in per_name.get(name, ON_)]
        for call in round_.calls
    ]
    return protocol.received(round_, replies, breakers)  # type: ignore[arg-type]


def joined(cluster: bool = False) -> tuple[SyncProtocol, Breakers]:
    protocol = SyncProtocol("me", "breaky", period=1.0, cluster=cluster)
    breakers = Breakers()
    return protocol, breakers


def test_joining_syncs_every_breaker_once_with_the_heartbeat() -> None:
    protocol, breakers = joined()
    breakers.add("a", "b")
    protocol.joined(10.0, breakers)
    assert protocol.deadline == 10.5
    first = protocol.next_round(breakers)
    assert first is not None
    assert (first.beat, first.count_first) == (True, False)
    assert sent(first) == [("a", "check"), ("b", "check")]
    assert answer(protocol, first, breakers) == []  # ON, and told nothing yet
    assert protocol.next_round(breakers) is None


def test_the_fleet_holding_a_breaker_off_is_told_once() -> None:
    protocol, breakers = joined()
    (a,) = breakers.add("a")
    protocol.joined(0.0, breakers)
    first = protocol.next_round(breakers)
    assert first is not None
    (tell,) = answer(protocol, first, breakers, {"a": off()})
    tell.apply()
    assert a.heard == [(View.OFF, "fleet OFF: 2 of 3 instances report OFF")]
    # Held breakers are polled each period; the same answer tells nothing.
    protocol.tick(0.5)
    assert protocol.next_round(breakers) is None  # leases only: none held
    protocol.tick(1.0)
    poll = protocol.next_round(breakers)
    assert poll is not None
    assert sent(poll) == [("a", "check")]
    assert answer(protocol, poll, breakers, {"a": off()}) == []
    # Then the lease: this instance probes.
    protocol.tick(1.5)
    protocol.tick(2.0)
    poll = protocol.next_round(breakers)
    assert poll is not None
    (tell,) = answer(protocol, poll, breakers, {"a": off(prober=True)})
    assert (tell.view, tell.reason) == (
        View.PROBE,
        "fleet OFF: 2 of 3 instances report OFF; this instance probes",
    )
    # Leases come first, twice a period.
    breakers.add("b")
    protocol.changed("b", State.ON, State.OFF)
    protocol.tick(2.4)  # not yet due
    protocol.tick(2.5)
    renewal = protocol.next_round(breakers)
    assert renewal is not None
    assert sent(renewal)[0] == ("a", "check")


def test_a_trip_reports_and_a_recovery_turns_the_fleet_on() -> None:
    protocol, breakers = joined(cluster=True)
    (a,) = breakers.add("a")
    protocol.joined(0.0, breakers)
    first = protocol.next_round(breakers)
    assert first is not None
    answer(protocol, first, breakers)
    a.state, a.sees_off = State.OFF, True
    protocol.changed("a", State.ON, State.OFF)
    report = protocol.next_round(breakers)
    assert report is not None
    # On a cluster a fresh report counts the live instances first.
    assert (report.beat, report.count_first) == (False, True)
    assert sent(report) == [("a", "report")]
    protocol.counted(3)
    assert protocol.live == 3
    (tell,) = answer(protocol, report, breakers, {"a": off(prober=True)})
    tell.apply()
    assert protocol.tracker.reported == {"a"}
    a.state, a.sees_off = State.ON, False
    protocol.changed("a", State.OFF, State.ON)
    recovery = protocol.next_round(breakers)
    assert recovery is not None
    assert sent(recovery) == [("a", "recover")]
    (tell,) = answer(protocol, recovery, breakers)
    assert (tell.view, tell.reason) == (View.ON, "fleet ON")
    assert protocol.tracker.reported == set()


def test_an_announcement_is_synced_at_once_with_its_reason() -> None:
    protocol, breakers = joined()
    breakers.add("a")
    protocol.joined(0.0, breakers)
    first = protocol.next_round(breakers)
    assert first is not None
    answer(protocol, first, breakers, {"a": off()})[0].apply()
    for noise in [
        "not json",
        '{"breaker": "a"}',
        json.dumps({"breaker": "a", "event": "on", "by": "me"}),  # our own
        json.dumps({"breaker": "z", "event": "on", "by": "web-2"}),  # not ours
    ]:
        protocol.heard(noise, breakers)
        assert protocol.next_round(breakers) is None
    protocol.heard(
        json.dumps({"breaker": "a", "event": "on", "by": "web-2"}).encode(), breakers
    )
    news = protocol.next_round(breakers)
    assert news is not None
    (tell,) = answer(protocol, news, breakers)
    assert (tell.view, tell.reason) == (View.ON, "fleet ON: web-2 started the resource")


def test_a_change_while_redis_answers_is_told_by_the_next_sync() -> None:
    protocol, breakers = joined()
    (a,) = breakers.add("a")
    protocol.joined(0.0, breakers)
    first = protocol.next_round(breakers)
    assert first is not None
    a.state, a.sees_off = State.OFF, True
    protocol.changed("a", State.ON, State.OFF)  # while the round is away
    assert answer(protocol, first, breakers, {"a": off()}) == []
    again = protocol.next_round(breakers)
    assert again is not None
    assert sent(again) == [("a", "report")]


def test_a_lost_round_is_sent_again_and_a_lost_session_tells_every_breaker() -> None:
    protocol, breakers = joined()
    breakers.add("a", "b")
    protocol.joined(0.0, breakers)
    first = protocol.next_round(breakers)
    assert first is not None
    protocol.failed(first)
    again = protocol.next_round(breakers)
    assert again is not None
    assert again.beat
    assert sent(again) == sent(first)
    tells = protocol.lost(breakers)
    assert [(t.member.name, t.view) for t in tells] == [
        ("a", View.LOST),
        ("b", View.LOST),
    ]
    assert protocol.deadline == float("inf")


def test_stopped_and_forced_off_breakers() -> None:
    protocol, breakers = joined()
    a, b = breakers.add("a", "b")
    protocol.joined(0.0, breakers)
    first = protocol.next_round(breakers)
    assert first is not None
    for tell in answer(protocol, first, breakers, {"a": off(prober=True)}):
        tell.apply()
    a.state = State.FORCED_OFF
    protocol.changed("a", State.OFF, State.FORCED_OFF)
    b.state = State.STOPPED
    protocol.changed("b", State.ON, State.STOPPED)
    yielded = protocol.next_round(breakers)
    assert yielded is not None
    assert sent(yielded) == [("a", "yield")]  # b had nothing in Redis
    assert answer(protocol, yielded, breakers) == []
    del breakers.running["a"]
    protocol.changed("a", State.FORCED_OFF, State.STOPPED)
    left = protocol.next_round(breakers)
    assert left is None  # a gave up its lease already: nothing to take back


def test_a_closing_fleet_drops_the_routine() -> None:
    protocol, breakers = joined()
    protocol.joined(0.0, breakers)
    first = protocol.next_round(breakers)
    assert first is not None
    protocol.tracker.reported.add("gone")
    protocol.tick(0.5)
    protocol.tick(1.0)
    protocol.close()
    assert protocol.closing
    last = protocol.next_round(breakers)
    assert last is not None
    assert (last.beat, sent(last)) == (True, [])


@pytest.mark.parametrize("cluster", [False, True])
def test_script_calls_hold_one_slot_and_at_most_a_chunk(cluster: bool) -> None:
    protocol, breakers = joined(cluster=cluster)
    breakers.add(*(f"b{i}" for i in range(3 * CHUNK)))
    protocol.joined(0.0, breakers)
    first = protocol.next_round(breakers)
    assert first is not None
    assert all(len(call) <= CHUNK for call in first.calls)
    assert sum(map(len, first.calls)) == 3 * CHUNK
    if cluster:
        for call in first.calls:
            assert len({protocol.keys(name)[1] for name, _ in call}) == 1
    else:
        assert len(first.calls) == 3


def test_a_breaker_off_by_its_own_failures_reports_whatever_led_there() -> None:
    # Issue 22, defect 1: a held breaker that the fleet let go (here, Redis
    # lost its data) and whose own retry then fails turns OFF by its own
    # failures with no change of state: the period's poll reports it.
    protocol, breakers = joined()
    (a,) = breakers.add("a")
    protocol.joined(0.0, breakers)
    first = protocol.next_round(breakers)
    assert first is not None
    answer(protocol, first, breakers, {"a": off()})[0].apply()
    assert a.state is State.OFF
    protocol.tick(0.5)
    protocol.tick(1.0)
    poll = protocol.next_round(breakers)
    assert poll is not None
    (tell,) = answer(protocol, poll, breakers)  # the fleet's state is gone
    assert tell.view is View.ON
    # No state change: its retry failed while it stayed OFF.
    a.sees_off = True
    protocol.tick(1.5)
    protocol.tick(2.0)
    report = protocol.next_round(breakers)
    assert report is not None
    assert sent(report) == [("a", "report")]
    answer(protocol, report, breakers, {"a": off()})  # the quorum again
    # While it waits with nothing to say, its poll costs no round trip.
    protocol.tracker.reported.clear()
    a.sees_off = False
    protocol.tick(2.5)
    protocol.tick(3.0)
    quiet = protocol.next_round(breakers)
    assert quiet is not None
    assert sent(quiet) == [("a", "check")]  # told OFF: polled
    answer(protocol, quiet, breakers)  # ON again: nothing more to say
    protocol.tick(3.5)
    protocol.tick(4.0)
    beat = protocol.next_round(breakers)
    assert beat is not None
    assert (beat.beat, sent(beat)) == (True, [])


def test_a_recovery_then_a_trip_reports_at_once() -> None:
    protocol, breakers = joined()
    (a,) = breakers.add("a")
    protocol.joined(0.0, breakers)
    first = protocol.next_round(breakers)
    assert first is not None
    answer(protocol, first, breakers, {"a": off(prober=True)})[0].apply()
    # Its probe starts the resource, and it trips again before the sync.
    protocol.changed("a", State.OFF, State.ON)
    a.sees_off = True
    protocol.changed("a", State.ON, State.OFF)
    recovery = protocol.next_round(breakers)
    assert recovery is not None
    assert sent(recovery) == [("a", "recover")]  # the fleet turns ON first
    answer(protocol, recovery, breakers)
    report = protocol.next_round(breakers)
    assert report is not None
    assert sent(report) == [("a", "report")]


def test_a_breaker_that_goes_leaves_nothing_behind() -> None:
    # Issue 22, defect 5: everything the fleet keeps per breaker goes with it.
    protocol, breakers = joined()
    protocol.joined(0.0, breakers)
    first = protocol.next_round(breakers)
    assert first is not None
    answer(protocol, first, breakers)
    for i in range(100):
        (b,) = breakers.add(f"k{i}")
        protocol.changed(b.name, State.STARTING, State.ON)
        news = json.dumps({"breaker": b.name, "event": "on", "by": "web-2"})
        protocol.heard(news, breakers)  # an ON reason for a breaker ON already
        if i % 3 == 0:  # some recover, some are held, some report
            protocol.changed(b.name, State.OFF, State.ON)
        made = protocol.next_round(breakers)
        assert made is not None
        reply = off(prober=i % 2 == 0) if i % 3 == 1 else ON_
        for tell in answer(protocol, made, breakers, {b.name: reply}):
            tell.apply()
        if i % 5 == 0:
            b.sees_off = True
            protocol.changed(b.name, b.state, State.OFF)
        b.state = State.STOPPED
        del breakers.running[b.name]
        protocol.changed(b.name, State.ON, State.STOPPED)
        while (gone := protocol.next_round(breakers)) is not None:
            answer(protocol, gone, breakers)
    assert protocol.tracker.size() == 0


def test_a_recovery_overtaken_by_force_off_is_not_told() -> None:
    protocol, breakers = joined()
    (a,) = breakers.add("a")
    protocol.joined(0.0, breakers)
    first = protocol.next_round(breakers)
    assert first is not None
    answer(protocol, first, breakers, {"a": off(prober=True)})[0].apply()
    protocol.changed("a", State.OFF, State.ON)  # its start succeeded
    a.state = State.FORCED_OFF  # and force_off() came before the sync
    protocol.changed("a", State.ON, State.FORCED_OFF)
    yielded = protocol.next_round(breakers)
    assert yielded is not None
    assert sent(yielded) == [("a", "yield")]
    answer(protocol, yielded, breakers, {"a": off()})
    a.state, a.sees_off = State.OFF, True  # reset(), and its start failed
    protocol.changed("a", State.FORCED_OFF, State.OFF)
    after = protocol.next_round(breakers)
    assert after is not None
    assert sent(after) == [("a", "report")]  # not the old recovery


@pytest.mark.parametrize("module", [protocol, tracker, messages])
def test_the_protocol_does_no_io(module: object) -> None:
    source = Path(str(getattr(module, "__file__", ""))).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    pure = {"__future__", "attrs", "breaky", "collections", "itertools"}
    assert imported <= pure | {"json", "math", "typing"}, imported


def test_the_protocol_imports_no_coredis() -> None:
    code = (
        "import sys, breaky._fleet.protocol\n"
        "assert 'coredis' not in sys.modules, 'coredis'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603
