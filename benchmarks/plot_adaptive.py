"""Draw docs/images/adaptive.png from the adaptive benchmark's trace.

    python -m benchmarks.adaptive   (or python benchmarks/run.py)
    python benchmarks/plot_adaptive.py

The trace is the adaptive guard's first segment of the run: each reply's
time, the limit then, and its latency as its caller saw it.

Needs matplotlib, which nothing else needs (it is no test dependency).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
TRACE = HERE / "adaptive_trace.json"
IMAGE = HERE.parent / "docs" / "images" / "adaptive.png"


def main() -> None:
    data = json.loads(TRACE.read_text())
    times = [t for t, _, _ in data["trace"]]
    limits = [limit for _, limit, _ in data["trace"]]
    latencies = [latency * 1000 for _, _, latency in data["trace"]]
    figure, left = plt.subplots(figsize=(9, 4))
    right = left.twinx()
    right.scatter(times, latencies, s=3, color="tab:orange", alpha=0.5)
    right.set_ylabel("each reply's latency (ms), line included", color="tab:orange")
    left.step(times, limits, where="post", color="tab:blue")
    left.axhline(data["workers"], color="tab:gray", linestyle="--", linewidth=1)
    left.annotate(
        "the server's workers",
        (times[-1], data["workers"]),
        textcoords="offset points",
        xytext=(-4, 4),
        ha="right",
        color="tab:gray",
    )
    left.set_ylabel("concurrency limit", color="tab:blue")
    left.set_xlabel("seconds")
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    left.set_title(
        f"breaky.Adaptive, {data['workers']} workers of "
        f"{data['service'] * 1000:g} ms, arrivals at {data['overload']:g}x capacity"
    )
    figure.tight_layout()
    IMAGE.parent.mkdir(exist_ok=True)
    figure.savefig(IMAGE, dpi=100)
    print(IMAGE)


if __name__ == "__main__":
    main()
