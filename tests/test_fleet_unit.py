"""The fleet's pure parts: arguments, URLs, slots, errors, the seam.

An internals test module: it drives the fleet's inner steps (the transport's
watch, the knock, the tracker's queues...) one at a time, which no public call
can isolate.
"""

# The fleet's inner steps are the public functions of its modules
# (session.knock, Transport.watch, urls.redact, tracker.Tracker): no private
# reach is needed.

from __future__ import annotations

import contextlib
import functools
import math
import ssl
import subprocess
import sys
from typing import Any

import attrs
import coredis.exceptions
import pytest
import servers
import trio
from support import LinkOnly

import breaky
from breaky import State, StateChange
from breaky._core.events import Publisher
from breaky._core.fleet import View
from breaky._fleet.errors import Kind, PrimaryMovedError, classify
from breaky._fleet.errors import describe as _describe
from breaky._fleet.hash_slot import hash_slot
from breaky._fleet.redis import RedisFleet
from breaky._fleet.session import Settings, knock
from breaky._fleet.tracker import Tracker
from breaky._fleet.transport import Transport
from breaky._fleet.urls import redact
from breaky.testing import internals

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

URL = "redis://127.0.0.1:6379/0"


def settings(url: str) -> Settings:
    """What a session of a fleet on ``url`` knows of it."""
    return Settings(
        url=url,
        client=None,
        instance="a",
        token="a:token",  # noqa: S106
        quorum=2,
        prefix="breaky",
        report_ttl=3.0,
    )


BAD: list[tuple[dict[str, Any], type[Exception], str]] = [
    (
        {"url": 6379},
        TypeError,
        "url_or_client must be a redis://, rediss:// or unix:// URL",
    ),
    (
        {"url": "redis+sentinel://h/m"},
        ValueError,
        "pass coredis.Sentinel(...).primary_for",
    ),
    ({"url": "http://127.0.0.1"}, ValueError, "got 'http://127.0.0.1'"),
    ({"url": "redis://:pw@"}, ValueError, "got 'redis://:***@'"),
    ({"url": "redis://host:port"}, ValueError, "url_or_client must be"),
    ({"instance": ""}, ValueError, "instance must be a non-empty str, got ''"),
    ({"instance": 3}, TypeError, "instance must be a non-empty str, got 3"),
    ({"quorum": 0}, ValueError, "quorum must be an int >= 1, got 0"),
    ({"quorum": True}, TypeError, "quorum must be an int >= 1, got True"),
    ({"quorum": 1.5}, TypeError, "quorum must be an int >= 1, got 1.5"),
    ({"prefix": ""}, ValueError, "prefix must be a non-empty str"),
    ({"prefix": None}, TypeError, "prefix must be a non-empty str, got None"),
    (
        {"report_ttl": 0.1},
        ValueError,
        "report_ttl must be a finite number of seconds >= 0.5",
    ),
    ({"report_ttl": math.nan}, ValueError, "report_ttl must be"),
    ({"report_ttl": "30"}, TypeError, "report_ttl must be"),
]


@pytest.mark.parametrize(("given", "error", "message"), BAD)
def test_bad_arguments_are_refused_before_anything_connects(
    given: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments: dict[str, Any] = {"url": URL, **given}
    url = arguments.pop("url")
    with pytest.raises(error, match=None) as raised:
        RedisFleet(url, **arguments)
    assert message in str(raised.value)
    assert "pw@" not in str(raised.value)


async def test_a_supervisor_refuses_what_is_not_a_fleet() -> None:
    with pytest.raises(
        TypeError, match=r"fleet must be a breaky fleet .* got 'redis://"
    ):
        async with breaky.open_supervisor(fleet=URL):  # type: ignore[arg-type]
            pass  # pragma: no cover


def test_defaults_and_names() -> None:
    fleet = RedisFleet(URL)
    assert (fleet.quorum, fleet.prefix, fleet.report_ttl) == (2, "breaky", 3.0)
    assert fleet.instance.count(":") == 2  # host, pid, random suffix
    assert RedisFleet(URL).instance != fleet.instance
    assert fleet.channel == "breaky:fleet"
    assert fleet.period == 1.0
    assert RedisFleet(URL, prefix="app").keys("db") == [
        "app:{db}:reports",
        "app:{db}:fleet",
        "app:{db}:probe",
    ]


def test_the_password_and_tls_reach_the_client_not_the_repr() -> None:
    fleet = RedisFleet("rediss://user:s3cret@example.com:6380/1", instance="a")
    assert "s3cret" not in repr(fleet)
    assert "user" not in repr(fleet)
    assert "rediss://***:***@example.com:6380/1" in repr(fleet)
    url = "rediss://user:s3cret@example.com:6380/1"
    options = settings(url).new_client().connection_pool.connection_kwargs
    assert options["password"] == "s3cret"  # noqa: S105
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert redact(URL) == URL


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h/0", "redis://:***@h/0"),
        ("redis://u@h", "redis://***@h"),
        (
            "redis://u:pw@h:1/0?db=0&password=x&Pass%77ord=y&username=z",
            "redis://***:***@h:1/0?db=0&password=***&Pass%77ord=***&username=***",
        ),
        ("unix://:pw@/tmp/s.sock?db=1", "unix://:***@/tmp/s.sock?db=1"),
        ("redis://a:pw@[::1/0", "redis://***:***@[::1/0"),  # does not parse
        ("redis://h/0?client_name=a@b&flag", "redis://h/0?client_name=a@b&flag"),
    ],
)
def test_every_credential_in_a_url_is_redacted(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_errors_are_described_in_one_line() -> None:
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [OSError("refused")])])
    assert _describe(group) == "OSError: refused"
    assert _describe(TimeoutError()) == "TimeoutError"


async def test_lost_changes_make_the_fleet_look_at_every_breaker() -> None:
    publisher = Publisher()
    changes = publisher.subscribe(1)
    for old, new in [(State.ON, State.OFF), (State.OFF, State.ON)]:
        publisher.publish(StateChange("db", old, new, "test", 0.0))
    publisher.end()
    transport = Transport(settings(URL), BrokenLink(["new"]), URL)  # type: ignore[arg-type]
    tracker = transport.protocol.tracker
    tracker.told["other"] = View.OFF
    await transport.watch(changes)
    assert changes.missed == 1
    assert list(tracker.dirty) == ["db", "new", "other"]
    assert tracker.recovered == {"db"}
    assert tracker.closing


def test_the_core_never_imports_coredis() -> None:
    code = (
        "import sys, breaky, breaky.testing\n"
        "assert 'coredis' not in sys.modules, 'coredis'\n"
        "assert 'breaky.redis' not in sys.modules, 'breaky.redis'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)  # noqa: S603


@servers.coredis_runs_on_this_trio
async def test_an_unreachable_redis_slows_nothing(
    log_records: Any,
) -> None:
    # Nothing listens on port 1: the fleet warns once and the breaker serves.
    fleet = RedisFleet("redis://127.0.0.1:1/0", instance="a", report_ttl=0.5)

    async def echo(inbox: breaky.Inbox[str, str], *, task_status: Any) -> None:
        task_status.started()
        async for request in inbox:
            request.reply(request.message)

    async with breaky.open_supervisor(fleet=fleet) as sup:
        db = await sup.start_circuit_breaker("db", echo)
        for _ in range(100):
            assert await db.call("x") == "x"
        await trio.sleep(0.6)  # a few reconnection attempts
    warnings = [m for m in log_records() if "does not answer" in m]
    assert len(warnings) == 1


@servers.coredis_runs_on_this_trio
async def test_a_server_that_never_answers_is_given_up_on(log_records: Any) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1")
        (listener,) = await nursery.start(serve)
        port = listener.socket.getsockname()[1]
        fleet = RedisFleet(f"redis://127.0.0.1:{port}/0", instance="a", report_ttl=0.6)
        async with breaky.open_supervisor(fleet=fleet):
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    (warning,) = [m for m in log_records() if "does not answer" in m]
    assert "ConnectionError" in warning


async def test_knocking_before_coredis_tries() -> None:
    await knock(settings("unix:///nowhere/redis.sock"))
    with pytest.raises(OSError, match="connect"):
        await knock(settings("redis://127.0.0.1:1"))

    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1")
        (listener,) = await nursery.start(serve)
        port = listener.socket.getsockname()[1]
        # Over TLS, a connection is enough; else it must answer a PING.
        await knock(settings(f"rediss://127.0.0.1:{port}"))
        with pytest.raises(Exception, match="no answer to a PING"):
            await knock(settings(f"redis://127.0.0.1:{port}"))
        nursery.cancel_scope.cancel()


class BrokenChanges:
    """A subscription that fails: a bug, which must not pass for a cancel."""

    async def __aenter__(self) -> BrokenChanges:  # noqa: PYI034
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass

    def __aiter__(self) -> BrokenChanges:
        return self

    async def __anext__(self) -> StateChange:
        raise ZeroDivisionError


@attrs.define
class BrokenLink:
    running: list[str] = attrs.Factory(list)

    def subscribe(self) -> BrokenChanges:
        return BrokenChanges()

    def names(self) -> list[str]:
        return self.running


@servers.coredis_runs_on_this_trio
async def test_a_bug_in_the_fleet_is_not_swallowed() -> None:
    fleet = RedisFleet("redis://127.0.0.1:1/0", instance="a")
    fleet.claim()
    with pytest.RaisesGroup(ZeroDivisionError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(fleet.serve, BrokenLink())
    fleet.claim()  # free again


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        ("foo", 12182),  # Redis Cluster's specification's examples
        ("123456789", 12739),
        ("{user1000}.following", 3443),
        ("a{}b", 13694),  # an empty tag: the whole key counts
        ("{}x}", 10489),
        ("p:{a{b}:x", 13340),  # the tag runs to the first } after the {
        ("é{ü}", 9552),
        ("", 0),
    ],
)
def test_hash_slots_are_redis_clusters(key: str, slot: int) -> None:
    assert hash_slot(key) == slot


def test_a_breakers_keys_share_a_slot_and_breakers_spread() -> None:
    fleet = RedisFleet(URL)
    for name in ["db", "a}b", "x{y", "payments:eu"]:
        assert len({hash_slot(k) for k in fleet.keys(name)}) == 1
    assert len({hash_slot(fleet.keys(f"b{i}")[0]) for i in range(100)}) > 90


def test_the_queues_put_leases_first_then_changes_then_the_routine() -> None:
    tracker = Tracker()
    tracker.reported.add("r")
    tracker.told.update({"p": View.PROBE, "h": View.OFF})
    tracker.mark("c1", "p")
    tracker.period()
    assert tracker.take(2) == (["p", "c1"], 2)
    assert tracker.take(10) == (["r", "h"], 0)
    assert tracker.take(10) == ([], 0)
    assert tracker.beat_due  # until a round sends the heartbeat


@pytest.mark.parametrize(
    ("error", "kind", "says"),
    [
        (OSError("Connection refused"), Kind.GONE, "OSError: Connection refused"),
        (TimeoutError(), Kind.GONE, "TimeoutError"),
        (coredis.exceptions.ConnectionError("reset"), Kind.GONE, "reset"),
        (coredis.exceptions.BusyLoadingError("LOADING"), Kind.BUSY, "LOADING"),
        (coredis.exceptions.ResponseError("BUSY script"), Kind.BUSY, "BUSY"),
        (coredis.exceptions.ResponseError("MASTERDOWN x"), Kind.BUSY, "MASTERDOWN"),
        (coredis.exceptions.NoScriptError("NOSCRIPT"), Kind.BUSY, "NOSCRIPT"),
        (
            coredis.exceptions.ResponseError("CROSSSLOT Keys in request"),
            Kind.CONFIG,
            "different hash slots",
        ),
        (
            coredis.exceptions.MovedError("3999 127.0.0.1:6381"),
            Kind.CONFIG,
            "RedisCluster",
        ),
        (
            coredis.exceptions.ResponseError(
                "Command # 1 (EVALSHA x) of pipeline caused error: "
                "Error running script (call to f_1): @user_script:1: "
                "-READONLY You can't write against a read only replica."
            ),
            Kind.CONFIG,
            "read-only replica",
        ),
        (coredis.exceptions.AuthenticationRequiredError("NOAUTH"), Kind.CONFIG, "asks"),
        (
            coredis.exceptions.AuthenticationFailureError("WRONGPASS"),
            Kind.CONFIG,
            "wrong",
        ),
        (coredis.exceptions.AuthorizationError("NOPERM"), Kind.CONFIG, "ACL"),
        (
            coredis.exceptions.ResponseError("ERR unknown command 'EVALSHA'"),
            Kind.CONFIG,
            "does not know a command",
        ),
        (
            coredis.exceptions.ResponseError(
                "ERR This instance has cluster support disabled"
            ),
            Kind.CONFIG,
            "not a cluster",
        ),
        (coredis.exceptions.ResponseError("OOM no"), Kind.CONFIG, "OOM no"),
        (
            ExceptionGroup("g", [coredis.exceptions.ReadOnlyError("READONLY x")]),
            Kind.CONFIG,
            "replica",
        ),
        (
            ExceptionGroup("g", [PrimaryMovedError("the Sentinels moved it")]),
            Kind.MOVED,
            "the Sentinels moved it",
        ),
    ],
)
def test_failures_are_told_apart(error: Exception, kind: Kind, says: str) -> None:
    trouble = classify(error)
    assert trouble.kind is kind
    assert says in trouble.cause + trouble.fix
    assert bool(trouble.fix) is (kind is Kind.CONFIG)


async def test_fleet_on_to_a_breaker_already_on_leaves_no_reason_behind(
    autojump_clock: Any,
) -> None:
    """Defect 4: a later, unrelated start was logged "after fleet ON"."""

    async def resource(inbox: Any, *, task_status: Any) -> None:
        task_status.started()
        async for request in inbox:
            request.reply(request.message)

    fleet = LinkOnly()
    async with breaky.open_supervisor(fleet=fleet) as sup:
        db = await sup.start_circuit_breaker(
            "db", resource, failure_threshold=1, retry_timeout=1
        )
        member = internals(sup).link.member("db")
        assert member is not None
        changes = db.subscribe()
        member.tell(View.PROBE, "fleet OFF: you probe")
        await trio.sleep(2)  # its probe (a start) succeeds: ON, still the prober
        assert db.state is breaky.State.ON
        member.tell(View.ON, "fleet ON: web-2 started the resource")
        db.failure()  # trips on its own
        await trio.sleep(2)  # its own retry
        assert db.state is breaky.State.ON
        assert [c.reason for c in buffered(changes)] == [
            "fleet OFF: you probe",
            "the resource started",
            "failure() was called",
            "the resource started",  # not "after fleet ON: ..."
        ]


def buffered(changes: breaky.StateChanges) -> list[StateChange]:
    """The changes buffered in ``changes`` now, taken without waiting."""
    seen: list[StateChange] = []
    with contextlib.suppress(trio.WouldBlock):
        while True:
            seen.append(changes.receive_nowait())
    return seen
