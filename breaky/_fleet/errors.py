"""What went wrong between a fleet and Redis: an outage, a busy server, or a mistake.

An outage (a timeout, a refused or cut connection) is waited out with a retry
about every second and one warning. A server that answers "not now"
(``LOADING``, ``BUSY``, ``TRYAGAIN``, ``CLUSTERDOWN``, ``MASTERDOWN``) is
treated alike, with its own wording. Anything else Redis answers is a
configuration that will not mend by itself: one error record that says what
is wrong and how to fix it, and retries that back off. A primary that the
Sentinels moved (a failover) is followed at once.
"""

from __future__ import annotations

import enum
import re
import sys
from typing import cast, final

import attrs

if sys.version_info < (3, 11):  # pragma: no cover - trio installs the backport
    from exceptiongroup import BaseExceptionGroup

__all__ = ["Kind", "PrimaryMovedError", "Trouble", "classify", "describe"]


class Kind(enum.Enum):
    """How a fleet takes a failure."""

    GONE = "gone"
    """Redis does not answer: retry soon."""
    BUSY = "busy"
    """Redis answers that it cannot serve now: retry soon."""
    CONFIG = "config"
    """Redis refuses what the fleet asks: retry rarely, until someone fixes it."""
    MOVED = "moved"
    """The Sentinels moved the primary: follow it at once."""


class PrimaryMovedError(Exception):
    """The Sentinels name another primary than the one a session talks to."""


@final
@attrs.frozen
class Trouble:
    """One failure, classified: its kind, its cause and (for CONFIG) the fix."""

    kind: Kind
    cause: str
    fix: str = ""


# Error codes (the first word of Redis's answer) of a server that says "not
# now"; it mends by itself.
_BUSY = ("LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "NOSCRIPT")

# Error codes of a configuration that does not mend by itself: cause, fix.
_CONFIG: dict[str, tuple[str, str]] = {
    "CROSSSLOT": (
        "a script's keys fall in different hash slots",
        (
            "pass a coredis.RedisCluster client for a cluster, and give breakers "
            "non-empty names that do not start with '}' (the name is the hash tag)"
        ),
    ),
    "MOVED": (
        (
            "the server is a Redis Cluster node and the client is not a cluster "
            "client (or the cluster moved a slot the client did not follow)"
        ),
        "pass coredis.RedisCluster(...) as the fleet's client",
    ),
    "ASK": (
        "the server is a Redis Cluster node and the client is not a cluster client",
        "pass coredis.RedisCluster(...) as the fleet's client",
    ),
    "READONLY": (
        "the server is a read-only replica",
        (
            "point the fleet at the primary; to follow failovers, pass a Sentinel "
            "primary client (coredis.Sentinel(...).primary_for(name))"
        ),
    ),
    "NOAUTH": (
        "the server asks for a password and none was given",
        "put the password in the URL (redis://:password@host) or the client",
    ),
    "WRONGPASS": (
        "the user name or password is wrong",
        "fix the user name and password in the URL or the client",
    ),
    "NOPERM": (
        "the ACL user may not run a command or touch a key the fleet needs",
        (
            "grant it EVALSHA, SCRIPT, PUBLISH and SUBSCRIBE, the prefix's keys "
            "(~prefix:*) and channel (&prefix:fleet)"
        ),
    ),
    # Not Redis's codes: what its answer says, in other words.
    "UNKNOWN": (
        (
            "the server does not know a command the fleet needs (EVALSHA, "
            "SCRIPT LOAD, PUBLISH or SUBSCRIBE; renamed or disabled?)"
        ),
        "use Redis >= 6.2 or Valkey with scripting and pub/sub enabled",
    ),
    "NOTACLUSTER": (
        "a cluster client was given a server that is not a cluster",
        "pass coredis.Redis(...) (or a URL) for a single server",
    ),
}


def describe(exc: BaseException) -> str:
    """The first error of ``exc`` (a group or not), in one line."""
    exc = _first(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _first(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = cast("BaseExceptionGroup[BaseException]", exc).exceptions[0]
    return exc


def _code(first: BaseException) -> str:
    """Redis's error code in ``first``, or one of ours, or ``""``."""
    import coredis.exceptions as errors  # noqa: PLC0415 - only with the extra

    for kind, known in (
        (errors.ClusterCrossSlotError, "CROSSSLOT"),
        (errors.MovedError, "MOVED"),  # before AskError, its base
        (errors.AskError, "ASK"),
        (errors.ReadOnlyError, "READONLY"),
        (errors.AuthenticationRequiredError, "NOAUTH"),
        (errors.AuthenticationError, "WRONGPASS"),
        (errors.AuthorizationError, "NOPERM"),
        (errors.NoScriptError, "NOSCRIPT"),
        (errors.TryAgainError, "TRYAGAIN"),
        (errors.ClusterDownError, "CLUSTERDOWN"),
        (errors.BusyLoadingError, "LOADING"),
        (errors.UnknownCommandError, "UNKNOWN"),
    ):
        if isinstance(first, kind):
            return known
    text = str(first)
    if "unknown command" in text:
        return "UNKNOWN"
    if "cluster support disabled" in text:
        return "NOTACLUSTER"
    # coredis prefixes errors of a pipeline with "Command # N (...) of
    # pipeline caused error: "; an error inside a script comes as "Error
    # running script ...: -CODE ...". Redis's own code comes after that.
    answer = text.rpartition("caused error: ")[2]
    inner = re.search(r"-([A-Z]+) ", answer)
    return inner.group(1) if inner is not None else answer.split(" ", 1)[0]


def classify(exc: BaseException) -> Trouble:
    """What ``exc``, raised while talking to Redis, says about Redis."""
    import coredis.exceptions as errors  # noqa: PLC0415 - only with the extra

    first = _first(exc)
    if isinstance(first, PrimaryMovedError):
        return Trouble(Kind.MOVED, str(first))
    code = _code(first)
    if code in _BUSY:
        return Trouble(Kind.BUSY, describe(first))
    if code in _CONFIG:
        return Trouble(Kind.CONFIG, *_CONFIG[code])
    if isinstance(first, errors.RedisError) and not isinstance(
        first, errors.ConnectionError
    ):
        cause = f"the server refused a command: {describe(first)}"
        return Trouble(Kind.CONFIG, cause, "see the server's answer")
    return Trouble(Kind.GONE, describe(first))
