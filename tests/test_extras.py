"""The exporters are extras: the core imports neither library."""

from __future__ import annotations

import subprocess
import sys

EXPORTER_LIBRARIES = ("opentelemetry", "prometheus_client")

# Run in a fresh interpreter: this one has imported both libraries already.
CHECK = """
import sys
blocked = sys.argv[1:]
for name in blocked:
    sys.modules[name] = None  # importing it now raises ImportError
import breaky, breaky.testing, breaky.__main__, breaky._demo.demo
loaded = {m.split(".")[0] for m, module in sys.modules.items() if module is not None}
print(sorted(loaded & {"prometheus_client", "opentelemetry"}))
"""


def loaded_after(*blocked: str, extra: str = "") -> str:
    done = subprocess.run(  # noqa: S603 - this Python, our own code
        [sys.executable, "-c", CHECK + extra, *blocked],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_breaky_loads_no_exporter_library() -> None:
    assert loaded_after() == "[]"


def test_import_breaky_works_without_them() -> None:
    assert loaded_after(*EXPORTER_LIBRARIES) == "[]"


def test_the_check_would_see_them() -> None:
    extra = "import breaky.prometheus, breaky.opentelemetry\n" + "\n".join(
        CHECK.splitlines()[-2:]
    )
    assert loaded_after(extra=extra).splitlines()[-1] == str(list(EXPORTER_LIBRARIES))
