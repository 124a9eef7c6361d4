"""Draw docs/throughput.png and docs/latency.png from docs/bench-results.json.

Run: .venv/bin/python bench/plot.py [--results docs/bench-results.json] [--out docs]

The numbers come from bench/bench_baselines.py ("throughput": records/s per contender and run;
"latency": streamkm p50/p99 per offered rate). A missing key skips its plot.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

DOCS = Path(__file__).resolve().parent.parent / "docs"
COLOURS = {
    "streamkm": "#1f77b4",
    "batched": "#ff7f0e",
    "per-record": "#d62728",
    "consume ceiling": "#7f7f7f",
    "produce ceiling": "#bcbcbc",
}


def plot_throughput(data: dict, path: Path) -> None:
    """Bars of median steady records/s per contender (log scale), whiskers at min and max run."""
    contenders = data["contenders"]
    names = list(contenders)
    rates = [contenders[n]["steady_rate"] for n in names]
    medians = [statistics.median(r) for r in rates]
    low = [m - min(r) for m, r in zip(medians, rates, strict=True)]
    high = [max(r) - m for m, r in zip(medians, rates, strict=True)]
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    ax.bar(
        names,
        medians,
        yerr=[low, high],
        capsize=4,
        color=[COLOURS.get(n, "#999999") for n in names],
    )
    ax.set_yscale("log")
    ax.set_ylabel("records/s (steady, median of runs)")
    ax.set_title(f"Drain rate on the embedded broker, d = 8, k = 8 ({data['measured']})")
    for i, (m, r) in enumerate(zip(medians, rates, strict=True)):
        ax.annotate(
            f"{m:,.0f}",
            (i, max(r)),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 3),
            textcoords="offset points",
        )
    ax.set_ylim(top=max(medians) * 4)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_latency(data: dict, path: Path) -> None:
    """streamkm end-to-end p50 and p99 against the offered input rate."""
    sweep = sorted(data["sweep"], key=lambda s: s["rate"])
    rates = [s["rate"] for s in sweep]
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
    ax.plot(rates, [s["p50_ms"] for s in sweep], "o-", label="p50")
    ax.plot(rates, [s["p99_ms"] for s in sweep], "s--", label="p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(rates, [f"{r:,.0f}" for r in rates])
    ax.minorticks_off()
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    for s in sweep:
        if s["achieved_rate"] < 0.95 * s["rate"]:  # the producer could not keep up: say so
            ax.annotate(
                f"achieved {s['achieved_rate']:,.0f}",
                (s["rate"], s["p99_ms"]),
                fontsize=8,
                xytext=(-10, 6),
                textcoords="offset points",
                ha="right",
            )
    ax.set_xlabel("offered input rate (records/s)")
    ax.set_ylabel("arrival - input timestamp (ms)")
    ax.set_title(f"streamkm end-to-end latency ({data['measured']})")
    ax.grid(which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=DOCS / "bench-results.json")
    p.add_argument("--out", type=Path, default=DOCS, help="folder for the PNG files")
    args = p.parse_args()
    if not args.results.exists():
        print(f"no {args.results}: run bench/bench_baselines.py first", file=sys.stderr)
        return 2
    data = json.loads(args.results.read_text())
    for key, draw, name in (
        ("throughput", plot_throughput, "throughput.png"),
        ("latency", plot_latency, "latency.png"),
    ):
        if key in data:
            draw(data[key], args.out / name)
            print(f"wrote {args.out / name}", file=sys.stderr)
        else:
            print(f"no {key!r} in {args.results}; {name} left as it is", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
