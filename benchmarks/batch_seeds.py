"""Seeds as one stacked model (``kdbench run --batch-seeds``) against the same seeds in a row.

    python benchmarks/batch_seeds.py [--sizes 1 3 8 16] [--steps 200] [--rounds 3] [--methods one-shot labels]

On one torch thread, for the students of suites/quickstart.yaml (parity-mlp: n=100, k=4, a
1000-wide teacher, a 100-wide student) and of suites/cpu/parity-transformer.yaml (the encoder
task whose batches stack), each method and number of seeds S: S runs prepared as ``kdbench run``
prepares them (seeds 0..S-1, an untrained teacher of the real shape: time does not depend on
the weights, ``--steps`` student steps each, evaluation only at the end), trained

- in a row: :func:`kdbench.run.engine.train` on each run's job, one after another;
- stacked: :func:`kdbench.run.engine.train_stacked` on the S jobs at once.

Printed: milliseconds per seed-step of each (median over ``--rounds`` rounds; the settings
interleave within a round, so a change in the machine's load hits both) and the median of each
round's ratio (in a row / stacked). pcfg-bert and the causal LM tasks do not stack (their seeds'
batches hold different numbers of masked tokens: ``kdbench plan --batch-seeds`` says so).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from kdbench.plugins import load_plugins
from kdbench.run.engine import train, train_stacked
from kdbench.run.pricing import load_suite
from kdbench.run.runner import build_task, prepare
from kdbench.run.seed_stack import SeedStack, why_not_stackable
from kdbench.run.teachers import ProbeTeacher

ROOT = Path(__file__).resolve().parent.parent
SUITES = {"parity-mlp (quickstart)": ROOT / "suites" / "quickstart.yaml",
          "parity-transformer (cpu)": ROOT / "suites" / "cpu" / "parity-transformer.yaml"}
CPU = torch.device("cpu")


def jobs_of(suite: Path, method: str, seeds: int, steps: int, tmp: Path):
    """The engine jobs of ``method``'s runs on seeds 0..seeds-1 of the suite's first task."""
    text = yaml.safe_load(suite.read_text())
    text.update(seeds=list(range(seeds)), teacher_seeds=[0], budget={"student_steps": steps},
                eval={"points": 1}, methods=[m for m in text["methods"] if m["name"] == method][:1] or [{"name": method}],
                tasks=text["tasks"][:1])
    text.pop("claims", None), text.pop("tune", None)
    path = tmp / f"{method}-{seeds}.yaml"
    path.write_text(yaml.safe_dump(text))
    loaded, registry = load_suite(path, load_plugins)
    task = build_task(loaded.runs[0], registry, CPU, None)
    teacher = ProbeTeacher(task, 0, loaded.runs[0].checkpoints)
    return [prepare(run, registry, task, teacher, CPU).job for run in loaded.runs], task


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 3, 8, 16])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=["one-shot", "labels"])
    ap.add_argument("--suites", nargs="+", default=list(SUITES), choices=list(SUITES))
    args = ap.parse_args()
    torch.set_num_threads(1)
    times: dict[tuple, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.suites:  # warm-up, untimed: vmap's first call imports torch._decomp (~1 s, once)
            for method in args.methods:
                jobs, _ = jobs_of(SUITES[name], method, 2, 2, Path(tmp))
                train_stacked(jobs, SeedStack([j.model for j in jobs], [p.phase for p in jobs[0].plan]), ["a", "b"],
                              None)
        for _ in range(args.rounds):
            for name in args.suites:
                for method in args.methods:
                    for size in args.sizes:
                        for how in ("in a row", "stacked") if size > 1 else ("in a row",):
                            jobs, task = jobs_of(SUITES[name], method, size, args.steps, Path(tmp))
                            if how == "stacked":
                                phases = [[p.phase for p in j.plan] for j in jobs]
                                reason = why_not_stackable([j.model for j in jobs], phases, task,
                                                           [j.stream_seed for j in jobs], jobs[0].recipe.batch_size)
                                if reason:
                                    raise SystemExit(f"{name} {method}: {reason}")
                                stack = SeedStack([j.model for j in jobs], phases[0])
                                wall = timed(lambda: train_stacked(jobs, stack, [str(i) for i in range(size)], None))
                            else:
                                wall = timed(lambda: [train(j) for j in jobs])
                            times.setdefault((name, method, size, how), []).append(wall / (size * args.steps))
    print(f"one thread, {args.steps} steps per seed, median of {args.rounds} interleaved rounds")
    print(f"{'task':26} {'method':9} {'S':>3} {'in a row ms':>12} {'stacked ms':>11} {'ratio':>6}")
    for name in args.suites:
        for method in args.methods:
            for size in args.sizes:
                row = times[(name, method, size, "in a row")]
                stacked = times.get((name, method, size, "stacked"))
                ratio = statistics.median(a / b for a, b in zip(row, stacked)) if stacked else 1.0
                print(f"{name:26} {method:9} {size:3d} {statistics.median(row) * 1e3:12.3f} "
                      f"{(statistics.median(stacked) * 1e3 if stacked else float('nan')):11.3f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
