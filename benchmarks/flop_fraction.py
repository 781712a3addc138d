"""How close a distillation step gets to the machine's FLOP limit, with the fused optimizer
update (kdbench >= 0.5) and the foreach one (kdbench <= 0.4, ``KDBENCH_OPTIMIZER_KERNEL=foreach``).

    python benchmarks/flop_fraction.py [--rounds 7] [--quickstart-steps 1000] [--pcfg-steps 40]

On one torch thread, for the one-shot student of suites/quickstart.yaml (parity-mlp) and of
suites/cpu/pcfg-bert.yaml (built as ``kdbench run`` builds them, seed 0, with an untrained
teacher of the real shape: FLOPs and time do not depend on the weights), each round measures:

- the limit: GFLOP/s of a 2048x2048 fp32 matmul (best of 3);
- per student and kernel, a step: ``kdbench.run.engine.train`` runs N one-shot steps (batch
  sampling, teacher forward, loss, backward, optimizer step, schedule), timed and divided by N;
- per student and kernel, the optimizer update alone (``optimizer.step()`` on fixed gradients).

The rounds interleave the settings (their order alternates), so a change in the machine's load
hits both kernels alike. Printed: medians over the rounds, the median of each round's ratio of
step times (foreach / fused: paired, so less noisy), and the fraction achieved = the
step's counted FLOPs (kdbench's FLOP probe, :func:`kdbench.run.budget.measure_phases`: forward
and backward, no optimizer arithmetic) / (seconds per step x the limit).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from kdbench.plugins import load_plugins
from kdbench.run.budget import measure_phases
from kdbench.run.engine import PlannedPhase, train, trainable_parameters
from kdbench.run.optim import KERNEL_VARIABLE, KERNELS, make_optimizer
from kdbench.run.pricing import load_suite
from kdbench.run.runner import build_task, prepare
from kdbench.run.teachers import ProbeTeacher

ROOT = Path(__file__).resolve().parent.parent
SUITES = {"quickstart (parity-mlp)": ROOT / "suites" / "quickstart.yaml",
          "cpu/pcfg-bert": ROOT / "suites" / "cpu" / "pcfg-bert.yaml"}
CPU = torch.device("cpu")


def matmul_gflops(size: int = 2048, tries: int = 3) -> float:
    """GFLOP/s of the best of ``tries`` ``size`` x ``size`` fp32 matmuls."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e9


class Student:
    """A suite's one-shot run (seed 0) prepared as ``kdbench run`` prepares it."""

    def __init__(self, suite: Path, steps: int):
        loaded, registry = load_suite(suite, load_plugins)
        run = next(r for r in loaded.runs if r.method == "one-shot" and r.seed == 0)
        task = build_task(run, registry, CPU, None)
        job = prepare(run, registry, task, ProbeTeacher(task, run.teacher_seed), CPU).job
        phase = job.plan[0].phase
        self.flops = measure_phases([phase], job.model, task, job.recipe.batch_size, CPU)[0]
        self.job = replace(job, plan=[PlannedPhase(phase, steps, self.flops)], eval_at=[], on_step=None,
                           on_record=None, state_path=None)
        self.params = trainable_parameters(job.model, [phase])
        self.steps = steps

    def step_seconds(self, kernel: str) -> float:
        """Seconds per engine step with ``kernel`` (chosen as users choose it: the variable)."""
        os.environ[KERNEL_VARIABLE] = kernel
        try:
            start = time.perf_counter()
            train(self.job)
            return (time.perf_counter() - start) / self.steps
        finally:
            del os.environ[KERNEL_VARIABLE]

    def update_seconds(self, kernel: str, repeats: int = 200) -> float:
        """Seconds of one ``optimizer.step()`` on copies of the student's parameters."""
        params = [torch.nn.Parameter(p.detach().clone()) for p in self.params]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        optimizer = make_optimizer(params, self.job.recipe, kernel=kernel)
        optimizer.step()  # the state is created on the first step
        start = time.perf_counter()
        for _ in range(repeats):
            optimizer.step()
        return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quickstart-steps", type=int, default=1000)
    parser.add_argument("--pcfg-steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    students = {name: Student(path, steps)
                for (name, path), steps in zip(SUITES.items(), (args.quickstart_steps, args.pcfg_steps))}
    limit: list[float] = []
    step = {(s, k): [] for s in students for k in KERNELS}
    update = {(s, k): [] for s in students for k in KERNELS}
    for name, student in students.items():  # warm-up, not counted
        for kernel in KERNELS:
            student.step_seconds(kernel), student.update_seconds(kernel, 20)
    for r in range(args.rounds):
        limit.append(matmul_gflops())
        for name, student in students.items():
            for kernel in KERNELS if r % 2 == 0 else KERNELS[::-1]:
                step[name, kernel].append(student.step_seconds(kernel))
                update[name, kernel].append(student.update_seconds(kernel))
    gflops = statistics.median(limit)
    print(f"matmul limit (2048x2048 fp32, 1 thread): {gflops:.1f} GFLOP/s median of {args.rounds} rounds "
          f"(min {min(limit):.1f}, max {max(limit):.1f})")
    print(f"{'student':26} {'kernel':8} {'MFLOP/step':>10} {'ms/step':>8} {'update us':>9} {'fraction':>8}")
    for name, student in students.items():
        for kernel in KERNELS:
            seconds = statistics.median(step[name, kernel])
            fraction = student.flops / (seconds * gflops * 1e9)
            print(f"{name:26} {kernel:8} {student.flops / 1e6:10.2f} {seconds * 1e3:8.3f} "
                  f"{statistics.median(update[name, kernel]) * 1e6:9.1f} {fraction:8.2%}")
    for name in students:
        ratios = sorted(b / a for a, b in zip(step[name, "fused"], step[name, "foreach"]))
        print(f"{name}: step time foreach / fused {statistics.median(ratios):.3f}, median of the rounds' "
              f"ratios (min {ratios[0]:.3f}, max {ratios[-1]:.3f})")
    print(f"medians of {args.rounds} interleaved rounds; steps per timing: "
          + ", ".join(f"{name} {s.steps}" for name, s in students.items()))


if __name__ == "__main__":
    main()
