"""The ``OFF`` sentinel: the answer of a breaker that is not serving."""

from __future__ import annotations

import enum
from typing import Final, Literal, TypeAlias


class OffType(enum.Enum):
    """The type of :data:`OFF`; it has exactly one member.

    An enum member, because type checkers narrow ``result is breaky.OFF`` on it.
    """

    OFF = "OFF"

    def __repr__(self) -> str:
        return "breaky.OFF"

    def __str__(self) -> str:
        return "OFF"

    def __bool__(self) -> Literal[False]:
        # ``if await db.call(...):`` must not mistake OFF for a reply.
        return False


OFF: Final = OffType.OFF
"""Answered instead of a reply when the breaker is not serving.

A request answered ``OFF`` was never seen by the resource. Compare with ``is``.
"""

Off: TypeAlias = Literal[OffType.OFF]
"""The type of :data:`OFF`, for annotations: ``list[str] | breaky.Off``."""
