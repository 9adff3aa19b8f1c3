"""Command line: ``python -m breaky demo``."""

from __future__ import annotations

import argparse
import functools
import math
import sys

import trio

from ._demo.demo import MIN_DURATION, demo


def _port(text: str) -> int:
    """``--metrics-port``: a TCP port number; 0 picks a free one."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        msg = f"must be a TCP port from 0 to 65535 (0: any free one), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return port


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
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics while the "
        "demo runs (needs prometheus_client: pip install 'breaky[prometheus]')",
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
        if args.metrics_port is not None:
            parser.error("--metrics-port is for the demo of one process, not --fleet")
        from ._demo.fleet_demo import fleet_demo  # noqa: PLC0415 - only for --fleet

        return trio.run(functools.partial(fleet_demo, duration=args.duration))
    return trio.run(
        functools.partial(demo, duration=args.duration, metrics_port=args.metrics_port),
        clock=clock,
    )


if __name__ == "__main__":  # pragma: no cover - tests call main()
    sys.exit(main())
