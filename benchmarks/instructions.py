"""Instructions per call of breaky's hot paths, counted by callgrind.

Each path is run in a fresh subprocess of this Python under ``valgrind
--tool=callgrind``, once with N=1000 calls and once with N=3000; the
whole-program totals' difference divided by 2000 is the count per call (the
start-up, imports and set-up cancel out). Only public API is used, so the
same script measures the package before and after a restructuring.

Usage::

    python benchmarks/instructions.py [--json OUT] [--only NAME ...]

The guards on the lean, bulkhead and keyed paths are made with
``call_timeout=None``: a guard's default policy has ``call_timeout=5.0``,
which takes the timed path. ``guard_default`` measures ``Guard("g")`` as is.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SMALL = 1_000
LARGE = 3_000
KEYS = 10_000
VALGRIND = shutil.which("valgrind") or "/usr/bin/valgrind"

# name -> (description, floor's name or None)
PATHS: dict[str, tuple[str, str | None]] = {
    "bare": ("await fn()  (fn awaits one checkpoint)", None),
    "guard_lean": ("await guard.run(fn), ON, call_timeout=None (lean)", "bare"),
    "guard_default": ("await guard.run(fn), ON, Guard('g') defaults", "bare"),
    "guard_timeout": ("await guard.run(fn), ON, call_timeout=60", "move_on_after"),
    "move_on_after": ("with trio.move_on_after(60): await fn()", None),
    "guard_off": ("await guard.run(fn), OFF (force_off)", "checkpoint"),
    "checkpoint": ("await trio.lowlevel.checkpoint()", None),
    "resource_call": ("await breaker.call(msg), echo resource", None),
    "keyed": (f"await hosts.run(key, fn), 1 live key of {KEYS:,}", "guard_lean"),
    "bulkhead": ("await guard.run(fn), ON, max_concurrent=10", None),
    "adaptive": (
        "await guard.run(fn), ON, max_concurrent=breaky.Adaptive(initial=10)",
        "bulkhead",
    ),
}


# --------------------------------------------------------------------------
# The child: run one path n times inside trio.run().
# --------------------------------------------------------------------------


async def fn() -> None:
    """The guarded call: one checkpoint."""
    import trio  # noqa: PLC0415 - the child imports trio, the parent need not

    await trio.lowlevel.checkpoint()


async def resource(inbox: Any, *, task_status: Any = None) -> None:
    """An echo resource: replies with the message."""
    task_status.started()
    async for request in inbox:
        request.reply(request.message)


def _check(ok: bool, name: str) -> None:
    """Fail the child if the path did not do what it measures."""
    if not ok:
        msg = f"{name}: the path did not behave as measured"
        raise SystemExit(msg)


async def _child(name: str, n: int) -> None:  # noqa: C901, PLR0912
    import trio  # noqa: PLC0415

    import breaky  # noqa: PLC0415

    checkpoint = trio.lowlevel.checkpoint
    if name == "bare":
        for _ in range(n):
            await fn()
    elif name in {
        "guard_lean",
        "guard_default",
        "guard_timeout",
        "bulkhead",
        "adaptive",
    }:
        guard = {
            "guard_lean": lambda: breaky.Guard("g", call_timeout=None),
            "guard_default": lambda: breaky.Guard("g"),
            "guard_timeout": lambda: breaky.Guard("g", call_timeout=60),
            "bulkhead": lambda: breaky.Guard("g", call_timeout=None, max_concurrent=10),
            "adaptive": lambda: breaky.Guard(
                "g", call_timeout=None, max_concurrent=breaky.Adaptive(initial=10)
            ),
        }[name]()
        run = guard.run
        for _ in range(n):
            await run(fn)
        _check(guard.state is breaky.State.ON, name)
    elif name == "move_on_after":
        for _ in range(n):
            with trio.move_on_after(60):
                await fn()
    elif name == "guard_off":
        guard = breaky.Guard("g")
        guard.force_off()
        for _ in range(n):
            reply = await guard.run(fn)
        _check(reply is breaky.OFF, name)
    elif name == "checkpoint":
        for _ in range(n):
            await checkpoint()
    elif name == "resource_call":
        async with breaky.open_supervisor() as sup:
            breaker = await sup.start_circuit_breaker("r", resource)
            for i in range(n):
                reply = await breaker.call(i)
            _check(reply == n - 1, name)
    elif name == "keyed":
        async with breaky.open_supervisor() as sup:
            hosts = sup.keyed_guard("hosts", call_timeout=None)
            keys = [f"host-{i}" for i in range(KEYS)]
            for key in keys:
                await hosts.run(key, fn)
            for _ in range(n):
                await hosts.run("host-5", fn)
            _check(hosts.statistics().keys == KEYS, name)
    else:
        msg = f"unknown path {name!r}"
        raise SystemExit(msg)


def child_main(name: str, n: int) -> None:
    """Run one path in this process (under valgrind, in the parent's plan)."""
    import trio  # noqa: PLC0415

    import breaky  # noqa: PLC0415

    print(f"breaky from {breaky.__file__}", file=sys.stderr)
    trio.run(_child, name, n)


# --------------------------------------------------------------------------
# The parent: run the children under callgrind, parse, report.
# --------------------------------------------------------------------------

_TOTAL = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def instructions(name: str, n: int, tmp: Path) -> tuple[int, str]:
    """Whole-program Ir of ``name`` run ``n`` times, and the child's stderr."""
    out = tmp / f"callgrind.{name}.{n}.out"
    env = dict(os.environ, PYTHONHASHSEED="0")
    cmd = [
        VALGRIND,
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        name,
        str(n),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        msg = f"{name} n={n} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        raise RuntimeError(msg)
    match = _TOTAL.search(out.read_text())
    if match is None:
        msg = f"no summary/totals line in {out}"
        raise RuntimeError(msg)
    return int(match.group(1)), proc.stderr


def measure(names: list[str]) -> dict[str, dict[str, Any]]:
    """Instructions per call of each path: (Ir at LARGE - Ir at SMALL) / diff."""
    results: dict[str, dict[str, Any]] = {}
    shown = False
    with tempfile.TemporaryDirectory(prefix="breaky-callgrind-") as tmpdir:
        tmp = Path(tmpdir)
        for name in names:
            small, err = instructions(name, SMALL, tmp)
            if not shown:
                line = next(
                    (ln for ln in err.splitlines() if ln.startswith("breaky from")),
                    "breaky from ?",
                )
                print(line, file=sys.stderr)
                shown = True
            large, _ = instructions(name, LARGE, tmp)
            per_call = (large - small) / (LARGE - SMALL)
            results[name] = {
                "description": PATHS[name][0],
                "floor": PATHS[name][1],
                f"ir_{SMALL}": small,
                f"ir_{LARGE}": large,
                "per_call": per_call,
            }
            print(f"  {name}: {per_call:,.1f} Ir/call", file=sys.stderr)
    for result in results.values():
        floor = result["floor"]
        if floor in results and results[floor]["per_call"]:
            result["ratio"] = result["per_call"] / results[floor]["per_call"]
        else:
            result["ratio"] = None
    return results


def table(results: dict[str, dict[str, Any]]) -> str:
    """The results as a text table."""
    rows = [f"{'path':<15} {'Ir/call':>10} {'ratio':>6}  {'vs':<14} description"]
    for name, r in results.items():
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        vs = r["floor"] if r["ratio"] is not None else ""
        rows.append(
            f"{name:<15} {r['per_call']:>10,.1f} {ratio:>6}  {vs:<14} "
            f"{r['description']}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Command line: measure, print the table, write JSON if asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--only", nargs="+", choices=list(PATHS), help="measure only these paths"
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args.child[0], int(args.child[1]))
        return 0
    names = args.only or list(PATHS)
    results = measure(names)
    print(table(results))
    if args.json:
        payload = {
            "python": sys.version,
            "small": SMALL,
            "large": LARGE,
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
