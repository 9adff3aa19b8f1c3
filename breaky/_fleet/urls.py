"""A fleet's Redis URL: checked before anything connects, and never shown whole."""

from __future__ import annotations

import urllib.parse

__all__ = ["EXPECTED", "check_url", "redact"]

SCHEMES = ("redis", "rediss", "unix")

EXPECTED = (
    "a redis://, rediss:// or unix:// URL string, or a coredis.Redis or "
    "coredis.RedisCluster client"
)


def redact(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_url(url: str) -> str:
    """``url``, if the fleet can use it; else a ValueError that shows no password."""
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in SCHEMES
        or not (parts.hostname or (parts.scheme == "unix" and parts.path))
    ):
        hint = ""
        if parts is not None and "sentinel" in parts.scheme:
            hint = " (for Sentinel, pass coredis.Sentinel(...).primary_for(name))"
        msg = f"url_or_client must be {EXPECTED}, got {redact(url)!r}{hint}"
        raise ValueError(msg)
    return url
