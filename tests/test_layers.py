"""The house's layers: which room of breaky may import which (docs/architecture.md).

Read from the source, as trio's own suite checks its imports: every import
in a module of ``breaky/`` (those under ``if TYPE_CHECKING:`` too) names a
room that its own room may use. The core imports no other room; the kinds
import only the core; the optional rooms (the fleet on Redis, the exporters)
are imported by nothing but their public module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import breaky

PACKAGE = Path(breaky.__file__).parent

# Each private room, and the rooms it may import (besides itself).
MAY_IMPORT: dict[str, set[str]] = {
    "_core": set(),
    "_resource": {"_core"},
    "_guard": {"_core"},
    "_groups": {"_core", "_resource", "_guard"},
    "_fleet": {"_core"},
    "_exporters": {"_core", "_groups"},
    # The demos are built on the public API, as a user's program would be.
    "_demo": {"public"},
}
# The public modules may import any room; nobody imports the optional ones.
PUBLIC = {"__init__", "__main__", "testing", "redis", "prometheus", "opentelemetry"}
OPTIONAL = {"_fleet", "_exporters"}
OPTIONAL_DOORS = {
    "redis": "_fleet",
    "prometheus": "_exporters",
    "opentelemetry": "_exporters",
}


def room_of(path: Path) -> str:
    """``_core`` for breaky/_core/x.py; ``public`` for breaky/testing.py."""
    relative = path.relative_to(PACKAGE)
    if len(relative.parts) == 1:
        return "public"
    return relative.parts[0]


def imported_rooms(path: Path) -> set[str]:
    """The rooms of breaky that ``path`` imports (``public``: ``breaky`` itself)."""
    tree = ast.parse(path.read_text(), str(path))
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    rooms = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names = [".".join([*base, *([node.module] if node.module else [])])]
            elif node.module is not None:
                names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] != "breaky":
                continue
            if len(parts) == 1 or not parts[1].startswith("_"):
                rooms.add("public")
            else:
                rooms.add(parts[1])
    return rooms


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_room_is_known() -> None:
    rooms = {room_of(path) for path in MODULES} - {"public"}
    assert rooms == set(MAY_IMPORT)


@pytest.mark.parametrize(
    "path", [p for p in MODULES if room_of(p) != "public"], ids=lambda p: p.name
)
def test_a_room_imports_only_the_rooms_below_it(path: Path) -> None:
    room = room_of(path)
    wrong = imported_rooms(path) - MAY_IMPORT[room] - {room}
    assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"


def test_the_optional_rooms_are_imported_only_through_their_door() -> None:
    for path in MODULES:
        room = room_of(path)
        for other in imported_rooms(path) & OPTIONAL:
            door = path.stem if room == "public" else None
            allowed = other == room or OPTIONAL_DOORS.get(door or "") == other
            assert allowed, f"{path.relative_to(PACKAGE)} imports {other}"


def test_the_public_modules_are_the_ones_listed() -> None:
    public = {p.stem for p in MODULES if room_of(p) == "public"}
    assert public == PUBLIC


def test_the_layering_check_sees_relative_imports() -> None:
    # A check that cannot fail proves nothing: a relative import of the
    # guard's room from the core's is seen as one.
    assert imported_rooms(PACKAGE / "_groups" / "keyed.py") >= {"_guard", "_resource"}
