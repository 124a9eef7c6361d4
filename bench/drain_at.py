"""The service as it was at another commit, drained in its own process: a same-run baseline.

An issue that asks for "at least X% of today's" speed means the code the issue was filed
against. `tree_at(commit)` extracts that commit's sources once into `.bench-trees/<commit>/`
(ignored by git; its Numba cache is compiled there on first use and kept); `drain_at` runs one
drain of a preloaded topic with them, in a subprocess whose imports all come from that tree,
using that tree's own `bench_fields.drain` (steady records/s from the first labeled batch).

As a script (what `drain_at` runs): `python bench/drain_at.py TREE BOOTSTRAP TOPIC COUNT K DIM`
prints the rate; `python bench/drain_at.py TREE warm` only compiles that tree's kernels.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREES = ROOT / ".bench-trees"


def tree_at(commit: str, warm: bool = True) -> Path:
    """The sources at `commit` (extracted on first use), with their kernels compiled unless
    `warm` is False (then they compile on first use, into the tree's own Numba cache)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short=12", f"{commit}^{{commit}}"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    tree = TREES / sha
    if not (tree / ".extracted").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        (tree / ".extracted").touch()
    if warm and not (tree / ".complete").exists():
        print(f"compiling the kernels of {sha} (once) ...", file=sys.stderr)
        subprocess.run([sys.executable, __file__, str(tree), "warm"], check=True, env=_env())
        (tree / ".complete").touch()
    return tree


def _env() -> dict[str, str]:
    # The service as it ran then: none of this process's own settings (e.g. OMP_WAIT_POLICY).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    env.pop("PYTHONPATH", None)
    return env


async def drain_at(tree: Path, bootstrap: str, topic: str, count: int, k: int, dim: int) -> float:
    """Steady records/s of the service at `tree` draining `count` records of `topic`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, str(tree), bootstrap, topic, str(count), str(k), str(dim),
        stdout=asyncio.subprocess.PIPE, env=_env(),
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the drain at {tree.name} failed (exit {proc.returncode})")
    return float(out.decode().split()[-1])


def _main(argv: list[str]) -> None:
    tree = Path(argv[0])
    sys.path[:0] = [str(tree), str(tree / "bench")]
    sys.path.remove(str(Path(__file__).resolve().parent))
    from engine import warmup  # the tree's own modules from here on

    warmup()
    if argv[1] == "warm":
        return
    import logging

    from bench_fields import drain  # type: ignore[import-not-found]

    from stream.config import Settings

    logging.basicConfig(level=logging.ERROR)
    bootstrap, topic, count, k, dim = argv[1], argv[2], int(argv[3]), int(argv[4]), int(argv[5])
    settings = Settings(
        bootstrap=bootstrap,
        input_topic=topic,
        output_topic=f"{topic}.labels",
        group=f"g-{uuid.uuid4().hex[:8]}",
        model=f"m-{uuid.uuid4().hex[:8]}",
        k=k,
        dim=dim,
        metrics_port=0,
        session_timeout=3.0,
    )
    print(asyncio.run(drain(settings, count)))


if __name__ == "__main__":
    _main(sys.argv[1:])
