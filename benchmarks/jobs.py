"""Local parallelism: wall time of a suite with `--jobs 1` (in-process) vs `--jobs N` (N
spawned worker processes, the cores divided between them), each from scratch in a fresh
results folder, through the CLI in a subprocess as a user runs it.

    python benchmarks/jobs.py [--suite suites/smoke.yaml] [--settings 1 1x1 2] [--repeats 1]

A setting is JOBS or JOBSxTHREADS (torch threads per job; default cores // jobs), so `1x1`
separates the effect of parallel runs from that of fewer threads per process; `auto` gives no
`--jobs` (the launcher's default: the cores free, at most the runs), and its choice is printed.
Prints the wall time of each setting (process start, teacher and every run), the summed
in-run training time, and the ratio of each wall time to the first setting's. On a machine
shared with other work the numbers move a lot: repeat and take the best.
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


def run_suite(suite: Path, setting: str, device: str) -> tuple[float, float, str]:
    """(wall seconds of `kdbench run`, summed wall_time of its runs, the jobs line it logged)."""
    jobs, _, threads = setting.partition("x")
    with tempfile.TemporaryDirectory(prefix="kdbench-jobs-") as tmp:
        command = [sys.executable, "-m", "kdbench.cli", "run", str(suite), "-o", tmp, "--device", device]
        command += ["--jobs", jobs, "-q"] if jobs != "auto" else []  # auto: its jobs line (not printed with -q)
        command += ["-L", f"threads={threads}"] if threads else []
        start = time.perf_counter()
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - start
        in_runs = sum(json.loads(p.read_text()).get("wall_time", 0.0) for p in Path(tmp).glob("runs/*/summary.json"))
    chosen = next((line for line in done.stderr.splitlines() if line.startswith("jobs: ")), "")  # not with -q
    return wall, in_runs, chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", type=Path, default=ROOT / "suites" / "smoke.yaml")
    ap.add_argument("--settings", nargs="+", default=["1", "1x1", "2"], help="JOBS or JOBSxTHREADS")
    ap.add_argument("--repeats", type=int, default=1, help="runs per setting; the best is reported")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    best = {}
    for _ in range(args.repeats):
        for setting in args.settings:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            wall, in_runs, chosen = run_suite(args.suite, setting, args.device)
            print(f"{setting}: {wall:.1f} s (load average {load:.2f} before){'; ' + chosen if chosen else ''}",
                  flush=True)
            if setting not in best or wall < best[setting][0]:
                best[setting] = (wall, in_runs)
    base = best[args.settings[0]][0]
    print(f"suite {args.suite.name}, best of {args.repeats}, device {args.device}")
    print(f"{'jobs[xthreads]':>14}  {'wall (s)':>9}  {'in runs (s)':>11}  {'wall / ' + args.settings[0]:>10}")
    for setting in args.settings:
        wall, in_runs = best[setting]
        print(f"{setting:>14}  {wall:9.1f}  {in_runs:11.1f}  {wall / base:10.2f}")


if __name__ == "__main__":
    main()
