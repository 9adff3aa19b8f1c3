"""Command line: ``python -m breaky demo``."""

from __future__ import annotations

import argparse
import functools
import sys

import trio

from ._demo import demo


def main(argv: list[str] | None = None, *, clock: trio.abc.Clock | None = None) -> int:
    """Parse ``argv`` and run the command it names (on ``clock``, for tests)."""
    parser = argparse.ArgumentParser(prog="python -m breaky")
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo", help="watch a real TCP service go down, trip a breaker, and recover"
    )
    demo_parser.add_argument(
        "--duration", type=float, default=30.0, help="seconds to run (default 30)"
    )
    args = parser.parse_args(argv)
    return trio.run(functools.partial(demo, duration=args.duration), clock=clock)


if __name__ == "__main__":  # pragma: no cover - tests call main()
    sys.exit(main())
