"""Slurm vs local overhead per run: the same suite of R tiny runs (labels, seeds 0..R-1, no
teacher) through `kdbench run --launcher local` (in-process, one after another) and through
`--launcher slurm` with one array job at a time (`--jobs 1`), each in a fresh results folder.

    python benchmarks/slurm_overhead.py [--runs 4] [--flops 2e6]

(slurm wall - local wall) / R is what a Slurm job adds to a run: scheduling, a fresh Python
process importing torch, submitit's pickles, polling (poll_s 0.5). Needs a Slurm cluster
(scripts/slurm-cluster.sh start) and, without accounting, scripts/sacct first on PATH (this
script puts it there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SUITE = """
name: slurm-overhead
seeds: {seeds}
budget: {{flops: {flops}}}
eval: {{points: 4}}
tasks:
  - name: parity-mlp
    params: {{n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256}}
    student: {{optimizer: adam, lr: 0.01, batch_size: 16}}
methods:
  - name: labels
launcher:
  name: slurm
  options: {{poll_s: 0.5}}
"""


def timed_run(suite: Path, out: Path, *options: str) -> tuple[float, float]:
    """(wall seconds of `kdbench run`, summed wall_time of its runs)."""
    command = [sys.executable, "-m", "kdbench.cli", "run", str(suite), "-o", str(out), "-q", "--device", "cpu",
               *options]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    return wall, sum(json.loads(p.read_text())["wall_time"] for p in out.glob("runs/*/summary.json"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--flops", type=float, default=2e6)
    args = ap.parse_args()
    os.environ["PATH"] = f"{ROOT / 'scripts'}{os.pathsep}{os.environ['PATH']}"
    with tempfile.TemporaryDirectory(prefix="kdbench-slurm-overhead-") as tmp:
        suite = Path(tmp) / "suite.yaml"
        suite.write_text(SUITE.format(seeds=list(range(args.runs)), flops=args.flops))
        local, local_in = timed_run(suite, Path(tmp) / "local", "--launcher", "local", "--jobs", "1")
        slurm, slurm_in = timed_run(suite, Path(tmp) / "slurm", "--jobs", "1")
        parallel, _ = timed_run(suite, Path(tmp) / "slurm-par", "--jobs", str(os.cpu_count() or 1))
    r = args.runs
    print(f"{r} runs of {args.flops:.3g} FLOPs each (labels, no teacher)")
    print(f"local, in-process:        {local:6.1f} s wall ({local_in:5.1f} s in runs)")
    print(f"slurm, one job at a time: {slurm:6.1f} s wall ({slurm_in:5.1f} s in runs)")
    print(f"slurm, {os.cpu_count()} jobs at a time:   {parallel:6.1f} s wall")
    print(f"overhead per run (one at a time): {(slurm - local) / r:.1f} s")


if __name__ == "__main__":
    main()
