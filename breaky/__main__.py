"""Command line: ``python -m breaky demo``."""

from __future__ import annotations

import argparse
import sys

import trio

from ._demo import demo


def main(argv: list[str] | None = None, *, clock: trio.abc.Clock | None = None) -> int:
    """Parse ``argv`` and run the command it names (on ``clock``, for tests)."""
    parser = argparse.ArgumentParser(prog="python -m breaky")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="watch a flaky resource trip OFF and recover")
    parser.parse_args(argv)
    return trio.run(demo, clock=clock)


if __name__ == "__main__":  # pragma: no cover - tests call main()
    sys.exit(main())
