"""The fixed cost of one ``kdbench run`` on the smoke suite: what a run costs beyond its training.

    python benchmarks/fixed_cost.py [--repeats 5]

Interleaved, ``--repeats`` times: ``python -c "import torch"`` (the floor: every run imports
torch), the same with pandas and matplotlib's PNG and PDF backends (the floor of a run that
writes a leaderboard and figures), a fresh ``kdbench run suites/smoke.yaml -j 1`` (in-process) into a new folder,
and the same command again on that folder (every run done: nothing trains). Prints medians: the rerun's wall time, the fresh
run's wall time minus the seconds its runs and teacher spent training (their own records), and
both over the torch import, so the numbers stay comparable on a busy machine. Python writes
bytecode here as it does for users (PYTHONDONTWRITEBYTECODE is unset for the children).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "suites" / "smoke.yaml"
OUTPUT_LIBRARIES = ("import torch, pandas, matplotlib; matplotlib.use('agg'); "
                    "import matplotlib.pyplot, matplotlib.backends.backend_pdf")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=ENV, cwd=ROOT)
    return time.perf_counter() - start


def training_seconds(out: Path) -> float:
    """Seconds the runs and the teachers of ``out`` spent training, as they recorded them."""
    runs = sum(json.loads(p.read_text())["wall_time"] for p in out.glob("runs/*/summary.json"))
    teachers = sum(json.loads(p.read_text())["wall_time"] for p in out.glob("teachers/*/summary.json"))
    return runs + teachers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    timed("-m", "kdbench.cli", "list")  # write the bytecode once, outside the timings
    torch_s, libraries_s, fresh_s, rerun_s = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            torch_s.append(timed("-c", "import torch"))
            libraries_s.append(timed("-c", OUTPUT_LIBRARIES))
            out = Path(tmp) / f"out{i}"
            wall = timed("-m", "kdbench.cli", "run", str(SUITE), "-o", str(out), "-q", "-j", "1")
            fresh_s.append(wall - training_seconds(out))
            rerun_s.append(timed("-m", "kdbench.cli", "run", str(SUITE), "-o", str(out), "-q", "-j", "1"))
    med = {name: statistics.median(v) for name, v in
           (("import torch", torch_s), ("import torch, pandas, mpl", libraries_s),
            ("fresh run, beyond training", fresh_s), ("rerun, all done", rerun_s))}
    print(f"{args.repeats} interleaved repeats, medians, load average {os.getloadavg()[0]:.2f}:")
    for name, seconds in med.items():
        print(f"  {name:28s} {seconds:6.2f} s   ({seconds / med['import torch']:.2f}x the torch import)")


if __name__ == "__main__":
    main()
