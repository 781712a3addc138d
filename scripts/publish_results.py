"""Publish a finished results folder into the repository: what re-aggregates it, no weights.

    python scripts/publish_results.py out/quickstart results/quickstart

Copies every run folder's config, summary and curve, every teacher's summary and curve, the tuning
records, the suite and its manifest (``kdbench.results.report.copy_results``: the same files a
``kdbench report`` folder keeps), plus the leaderboard, claims, tuning table and figures the run wrote.
The destination's earlier copies of those are replaced (an output the source lacks is kept); everything else there (a README with the
story of the experiment, a check folder) is kept. ``kdbench leaderboard``, ``check``, ``report``,
``plot`` and ``compare`` then work on the published folder as on the original.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from kdbench.results.report import copy_results

COPIED = ("runs", "teachers", "tuning", "suite.json", "suite.yaml")
OUTPUTS = ("leaderboard.md", "claims.json", "tuning.md", "figures")


def publish(source: Path, dest: Path) -> int:
    """Replace ``dest``'s run data with ``source``'s; return the number of run folders copied."""
    if not (source / "runs").is_dir():
        raise SystemExit(f"{source}: not a kdbench results folder (no runs/ inside)")
    for name in COPIED + tuple(n for n in OUTPUTS if (source / n).exists()):
        target = dest / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    runs = copy_results(source, dest)
    for name in OUTPUTS:
        if (source / name).is_dir():
            shutil.copytree(source / name, dest / name)
        elif (source / name).is_file():
            shutil.copy2(source / name, dest / name)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a finished results folder (kdbench run's output)")
    parser.add_argument("dest", type=Path, help="the published folder, e.g. results/quickstart")
    args = parser.parse_args()
    runs = publish(args.source, args.dest)
    size = sum(p.stat().st_size for p in args.dest.rglob("*") if p.is_file())
    print(f"{args.dest}: {runs} run folders, {size / 1e6:.2f} MB in all")


if __name__ == "__main__":
    main()
