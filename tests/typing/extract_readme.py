"""The README's Python as files that ``nox -s typing`` checks, strictly.

``python tests/typing/extract_readme.py OUTDIR`` makes OUTDIR a package with
each ```python block of README.md in ``readme_N.py``, where N is the line of
README.md the block starts on; the block keeps its lines, so an error's line
number is the README's. Each file first imports ``readme_prelude`` (PRELUDE):
the names the README leaves to its reader, typed as a database client's are.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent.parent / "README.md"

PRELUDE = '''"""What the README's examples leave to the reader: a database client."""

from typing import Protocol


class Connection(Protocol):
    async def query(self, sql: str) -> list[str]: ...


async def connect(user: str, password: str) -> Connection:
    raise NotImplementedError
'''

_FENCE = re.compile(r"^```(\w*)\s*$")


def python_blocks(markdown: str) -> dict[int, str]:
    """Each ```python (or ```py) block's code, by the line it starts on."""
    blocks: dict[int, str] = {}
    start: int | None = None
    language = ""
    lines: list[str] = []
    for number, line in enumerate(markdown.splitlines(), start=1):
        fence = _FENCE.match(line)
        if fence is None:
            lines.append(line)
        elif start is None:
            start, language, lines = number + 1, fence.group(1), []
        else:
            if language in {"python", "py"}:
                blocks[start] = "\n".join(lines) + "\n"
            start = None
    return blocks


def write(outdir: Path, markdown: str) -> list[Path]:
    """Write the prelude and one file per block; return the blocks' files."""
    blocks = python_blocks(markdown)
    if not blocks:
        msg = "README.md has no ```python block: nothing would be checked"
        raise SystemExit(msg)
    outdir.mkdir(parents=True, exist_ok=True)
    # A package, so that the blocks' relative import finds the prelude
    # wherever OUTDIR is, for mypy and pyright alike.
    (outdir / "__init__.py").write_text("")
    (outdir / "readme_prelude.py").write_text(PRELUDE)
    written: list[Path] = []
    for start, code in blocks.items():
        # Line 1 imports the prelude; blank lines bring the code to its line.
        head = "from .readme_prelude import *  # noqa: F403\n" + "\n" * (start - 2)
        path = outdir / f"readme_{start}.py"
        path.write_text(head + code)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]), README.read_text()):
        print(path)  # noqa: T201
