"""Shared by the benchmark scripts: machine facts and in-place sections of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def machine_facts(extra: str = "") -> str:
    """One line saying when and on what a table was measured."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    facts = f"Measured {when} on {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"
    return f"{facts}; {extra}" if extra else facts


def listed(values: Iterable[float], fmt: str) -> str:
    """Each run's figure in `fmt`, comma-separated: the runs column of a table."""
    return ", ".join(fmt.format(v) for v in values)


def runs_parser(
    doc: str, runs: int, count: int, runs_help: str = "runs"
) -> argparse.ArgumentParser:
    """The command line of a drain benchmark: `--runs` and `--count` (records per drain)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--runs", type=int, default=runs, help=f"{runs_help} (default {runs})")
    p.add_argument("--count", type=int, default=count, help=f"records per drain ({count})")
    return p


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace the text between `<!-- name:begin -->` and `<!-- name:end -->` (append if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def run_and_report(
    section: str,
    main: Callable[[argparse.Namespace], Awaitable[str]],
    parser: argparse.ArgumentParser,
) -> None:
    """A benchmark script's entry point: `--no-write` is added to `parser`; the table `main`
    returns is printed and written to its section of docs/benchmarks.md."""
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    text = asyncio.run(main(args))
    print(text)
    if not args.no_write:
        write_section(section, text)
        print(f"\nwritten to {BENCHMARKS}", file=sys.stderr)
