"""Command line: ``python -m breaky demo``."""

from __future__ import annotations

import argparse
import functools
import math
import sys

import trio

from ._demo import MIN_DURATION, demo


def main(argv: list[str] | None = None, *, clock: trio.abc.Clock | None = None) -> int:
    """Parse ``argv`` and run the command it names (on ``clock``, for tests)."""
    parser = argparse.ArgumentParser(prog="python -m breaky")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo", help="watch a real TCP service go down, trip a breaker, and recover"
    )
    demo_parser.add_argument(
        "--duration",
        type=float,
        default=30.0,
        help=f"seconds to run, at least {MIN_DURATION} (default 30)",
    )
    demo_parser.add_argument(
        "--fleet",
        action="store_true",
        help="three processes share the breaker through a Redis server "
        '(needs "breaky[redis]" and a redis-server)',
    )
    args = parser.parse_args(argv)
    if not MIN_DURATION <= args.duration < math.inf:
        parser.error(
            f"--duration must be at least {MIN_DURATION} seconds, enough for "
            f"one outage and its recovery; got {args.duration:g}"
        )
    if args.fleet:
        from ._fleet_demo import fleet_demo  # noqa: PLC0415 - only for --fleet

        return trio.run(functools.partial(fleet_demo, duration=args.duration))
    return trio.run(functools.partial(demo, duration=args.duration), clock=clock)


if __name__ == "__main__":  # pragma: no cover - tests call main()
    sys.exit(main())
