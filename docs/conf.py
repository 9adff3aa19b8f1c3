"""Sphinx configuration for breaky's documentation.

Build (offline, warnings are errors), from the repository root::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
    python -m sphinx -W --keep-going -b doctest docs docs/_build/doctest
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

if TYPE_CHECKING:
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

# Document the package of this checkout (flat layout), not an installed copy.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import breaky


def _defining_module(obj: type) -> str | None:
    """The private module whose source defines ``obj`` (others import it)."""
    for name, module in sorted(sys.modules.items()):
        if (
            name.startswith("breaky._")
            and vars(module).get(obj.__name__) is obj
            and obj.__name__ in ModuleAnalyzer.for_module(name).find_tags()
        ):
            return name
    return None


# breaky's public classes say they live in ``breaky`` (breaky/_core/public.py), as
# trio's do; autodoc reads attribute docstrings from the source of
# ``__module__``, so for the build it is pointed back at the defining module.
for _name in breaky.__all__:
    _obj = getattr(breaky, _name)
    if isinstance(_obj, type) and (_where := _defining_module(_obj)):
        _obj.__module__ = _where

project = "breaky"
author = "The breaky developers"
copyright = "The breaky developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    # Renders "async with open_supervisor()" and "await call()" in signatures.
    "sphinxcontrib_trio",
]

source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
# No intersphinx: the build must work offline. References to trio and the
# standard library are plain text; they are not checked (nitpicky is off).
nitpicky = False

html_theme = "furo"
html_title = "breaky"
pygments_style = "friendly"
pygments_dark_style = "monokai"

myst_heading_anchors = 2
myst_enable_extensions = ["deflist"]

# The package uses `from __future__ import annotations` and names some types
# only under TYPE_CHECKING: show annotations as text in the descriptions.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
# Classes are made by breaky, not by users: no constructor signatures (each
# autoclass excludes the __init__ and __new__ this would list).
autodoc_class_signature = "separated"
autodoc_member_order = "bysource"

napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Every code example that runs is a doctest: run it with `-b doctest`.
doctest_global_setup = """
import logging

import trio
import trio.testing

import breaky

# breaky logs crashes with tracebacks; keep them out of the build's output.
if not logging.getLogger("breaky").handlers:
    logging.getLogger("breaky").addHandler(logging.NullHandler())
"""
doctest_test_doctest_blocks = ""  # only explicit doctest directives are tests

_logger = logging.getLogger(__name__)


def _check_public_api_documented(app: Sphinx, env: BuildEnvironment) -> None:  # noqa: ARG001
    """Warn (an error under -W) about any name in breaky.__all__ left undocumented."""
    documented = set(env.get_domain("py").objects)
    for name in breaky.__all__:
        if f"breaky.{name}" not in documented:
            _logger.warning("breaky.%s is public but not in the reference", name)


def _reexported_data_doc(  # noqa: PLR0913, PLR0917 - Sphinx's event signature
    app: Sphinx,  # noqa: ARG001
    what: str,
    name: str,
    obj: object,  # noqa: ARG001
    options: object,  # noqa: ARG001
    lines: list[str],
) -> None:
    """Give a re-exported constant the doc comment written where it is defined.

    autodoc looks for ``#:`` or string doc comments of ``breaky.OFF`` in
    ``breaky/__init__.py`` only; they are written in the private module.
    """
    if what != "data" or not name.startswith("breaky."):
        return
    attr = name.removeprefix("breaky.")
    for module in sorted(sys.modules):
        if not module.startswith("breaky._"):
            continue
        comment = ModuleAnalyzer.for_module(module).find_attr_docs().get(("", attr))
        if comment:
            lines[:] = list(comment)
            return


def setup(app: Sphinx) -> None:
    app.connect("autodoc-process-docstring", _reexported_data_doc)
    app.connect("env-check-consistency", _check_public_api_documented)
