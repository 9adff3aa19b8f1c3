"""The README's Python reaches the type checkers (tests/typing/extract_readme.py)."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

EXTRACT = runpy.run_path(
    str(Path(__file__).parent / "typing" / "extract_readme.py"), run_name="extract"
)
python_blocks: Callable[[str], dict[int, str]] = EXTRACT["python_blocks"]
write: Callable[[Path, str], list[Path]] = EXTRACT["write"]
README: Path = EXTRACT["README"]

MARKDOWN = """\
Text.

```python
import trio
```

```console
$ python -m breaky demo
```

```py
x: int = 1
```
"""


def test_only_python_blocks_are_taken_by_the_line_they_start_on() -> None:
    assert python_blocks(MARKDOWN) == {4: "import trio\n", 12: "x: int = 1\n"}


def test_each_block_keeps_the_readmes_line_numbers(tmp_path: Path) -> None:
    (first, second) = write(tmp_path / "readme", MARKDOWN)
    assert first.name == "readme_4.py"
    assert first.read_text().splitlines()[3] == "import trio"
    assert second.read_text().splitlines()[11] == "x: int = 1"
    assert (tmp_path / "readme" / "__init__.py").exists()


def test_a_readme_without_python_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no ```python block"):
        write(tmp_path, "no code\n")


def test_the_readme_has_code_and_every_block_compiles() -> None:
    blocks = python_blocks(README.read_text())
    assert blocks
    for start, code in blocks.items():
        compile("\n" * (start - 1) + code, f"README.md:{start}", "exec")
