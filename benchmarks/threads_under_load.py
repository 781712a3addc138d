"""Default threads on a busy machine: the quickstart's one-shot run (seed 0, its teacher
cached) by ``kdbench run`` with the default threads against ``-L threads=1``, and against
``-L threads=<cores>`` (what the default was before the launcher timed its choice), under
a competing CPU load (one busy process per core, started and stopped here) and on the
machine as it is, interleaved.

    python benchmarks/threads_under_load.py [--repeats 3]

Prints the median wall time of each setting and the ratios default / threads=1 (target:
within 1.5x under load). Each timing is a whole ``kdbench run`` process into a fresh
results folder holding a copy of the cached teacher, so it includes the fixed cost of a run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def one_shot_suite(folder: Path) -> Path:
    """The quickstart with only one-shot and seed 0."""
    suite = yaml.safe_load((ROOT / "suites" / "quickstart.yaml").read_text())
    suite.update(name="threads-bench", seeds=[0], methods=[{"name": "one-shot"}])
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def kdbench_run(suite: Path, out: Path, *options: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kdbench.cli", "run", str(suite), "-o", str(out), "-q", *options],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def busy_processes(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    settings = {"default": (), "threads=1": ("-L", "threads=1"), f"threads={cores}": ("-L", f"threads={cores}")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        suite = one_shot_suite(tmp)
        kdbench_run(suite, tmp / "cache", "-L", "threads=1")  # trains the teacher once
        times = {(load, name): [] for load in ("busy", "as is") for name in settings}
        for repeat in range(args.repeats):
            for load in ("busy", "as is"):
                hogs = busy_processes(cores) if load == "busy" else []
                try:
                    order = list(settings) if repeat % 2 == 0 else list(reversed(settings))
                    for name in order:
                        out = tmp / f"{load}-{name}-{repeat}".replace(" ", "")
                        shutil.copytree(tmp / "cache" / "teachers", out / "teachers")
                        times[(load, name)].append(kdbench_run(suite, out, *settings[name]))
                finally:
                    for hog in hogs:
                        hog.kill()
                        hog.wait()
    print(f"{cores} cores, {args.repeats} repeats; median wall seconds of one `kdbench run` (one-shot, 4000 steps)")
    for load in ("busy", "as is"):
        medians = {name: statistics.median(times[(load, name)]) for name in settings}
        cells = ", ".join(f"{name} {m:.1f} s" for name, m in medians.items())
        print(f"{load:>6}: {cells}; default / threads=1 = {medians['default'] / medians['threads=1']:.2f}, "
              f"threads={cores} / threads=1 = {medians[f'threads={cores}'] / medians['threads=1']:.2f}")


if __name__ == "__main__":
    main()
