"""Fixtures shared by the tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from support import World

import breaky

if TYPE_CHECKING:
    from collections.abc import Callable


def pytest_report_header() -> str:
    # Which copy is under test: the source tree or an installed wheel.
    return f"breaky imported from {breaky.__file__}"


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def log_records(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    caplog.set_level("DEBUG", logger="breaky")

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "breaky"]

    return messages
