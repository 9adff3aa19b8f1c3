"""A fleet's Redis URL: checked before anything connects, and never shown whole."""

from __future__ import annotations

import urllib.parse

__all__ = ["EXPECTED", "check_url", "redact"]

SCHEMES = ("redis", "rediss", "unix")
# The query parameters that coredis takes as credentials.
_SECRETS = frozenset({"username", "password"})

EXPECTED = (
    "a redis://, rediss:// or unix:// URL string, or a coredis.Redis or "
    "coredis.RedisCluster client"
)


def redact(url: str) -> str:
    """``url`` with every credential in it replaced by ``***``.

    The user info (user name and password) and the ``username`` and
    ``password`` query parameters, as coredis reads them. Plain string work:
    it holds for a URL that does not parse, too.
    """
    head, question, query = url.partition("?")
    scheme, slashes, rest = head.partition("://")
    if slashes and "@" in rest:
        userinfo, _, host = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        hidden = ("***" if user else "") + (":***" if colon else "")
        head = f"{scheme}://{hidden}@{host}"
    if question:
        parts = query.split("&")
        for i, part in enumerate(parts):
            name, equals, _ = part.partition("=")
            if equals and urllib.parse.unquote_plus(name).lower() in _SECRETS:
                parts[i] = f"{name}=***"
        query = "&".join(parts)
    return f"{head}{question}{query}"


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
