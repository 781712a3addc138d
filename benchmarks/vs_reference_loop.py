"""kdbench against the public progressive-distillation code's parity loop, per seed-step.

    python benchmarks/vs_reference_loop.py [--seeds 8] [--steps 300] [--rounds 3]

The public code (github.com/abhishekpanigrahi1996/ProgressiveDistillation, parity/
boolean_distill_expts.py) distils an MLP student on sparse parity with a plain loop; it is
not installed here, so this file re-implements one step of that loop as a bare loop of the
same operations: a batch converted from numpy with ``torch.tensor``, the student's forward and
cross-entropy, the teacher's forward under ``no_grad``, the teacher's softmax, the student's
log-softmax, the forward-KL term ``mean(sum(p_teacher * -log q_student))`` mixed with the
cross-entropy (``kl_alpha`` 0), backward, the learning rate set on every param group, the
optimizer step and ``zero_grad`` (its MLP runs use SGD; Adam is timed too, the quickstart's).
No evaluation, logging or checkpoint loading is timed on either side.

Against it, at the quickstart's sizes (n=100, k=4, a 1000-wide teacher, a 100-wide student,
batch 64) and on one torch thread: kdbench's one-shot run through its engine, seed by seed
(``train``) and ``--seeds`` seeds stacked (``train_stacked``). Printed: milliseconds per
seed-step (median of ``--rounds`` interleaved rounds) and each one's speed-up over the bare loop.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_seeds import SUITES, jobs_of  # noqa: E402

from kdbench.run.engine import train, train_stacked  # noqa: E402
from kdbench.run.seed_stack import SeedStack  # noqa: E402

N, K, TEACHER, STUDENT, BATCH = 100, 4, 1000, 100, 64


def bare_loop(steps: int, optimizer_name: str, seed: int) -> float:
    """Seconds of ``steps`` steps of the reference's one-shot loop (one seed)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    student = nn.Sequential(nn.Linear(N, STUDENT), nn.ReLU(), nn.Linear(STUDENT, 2))
    teacher = nn.Sequential(nn.Linear(N, TEACHER), nn.ReLU(), nn.Linear(TEACHER, 2))
    params = list(student.parameters())
    optimizer = (torch.optim.SGD(params, lr=0.01) if optimizer_name == "sgd" else torch.optim.Adam(params, lr=0.002))
    data = rng.choice([-1.0, 1.0], size=(steps, BATCH, N)).astype(np.float32)
    labels = (np.prod(data[:, :, :K], axis=-1) < 0).astype(np.int64)
    start = time.perf_counter()
    for step in range(steps):
        x, y = torch.tensor(data[step], dtype=torch.float32), torch.tensor(labels[step], dtype=int)
        predicted = student(x)
        auto_loss = nn.functional.cross_entropy(predicted, y)
        with torch.no_grad():
            teacher_prob = torch.softmax(teacher(x), dim=-1)
        kl_loss = torch.mean(torch.sum(teacher_prob * -torch.log_softmax(predicted, dim=-1), dim=-1))
        loss = 0.0 * auto_loss + 1.0 * kl_loss
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = 0.002 * 0.5 * (1 + np.cos(np.pi * step / steps))
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    per: dict[str, list[float]] = {}
    suite = SUITES["parity-mlp (quickstart)"]
    with tempfile.TemporaryDirectory() as tmp:
        warm, _ = jobs_of(suite, "one-shot", 2, 2, Path(tmp))  # vmap's first call imports torch._decomp
        train_stacked(warm, SeedStack([j.model for j in warm], [p.phase for p in warm[0].plan]), ["a", "b"], None)
        for _ in range(args.rounds):
            seed_steps = args.seeds * args.steps
            for name in ("bare loop, SGD", "bare loop, Adam"):
                wall = sum(bare_loop(args.steps, name.split()[-1].lower(), s) for s in range(args.seeds))
                per.setdefault(name, []).append(wall / seed_steps)
            jobs, _ = jobs_of(suite, "one-shot", args.seeds, args.steps, Path(tmp))
            start = time.perf_counter()
            for job in jobs:
                train(job)
            per.setdefault("kdbench, seed by seed", []).append((time.perf_counter() - start) / seed_steps)
            jobs, _ = jobs_of(suite, "one-shot", args.seeds, args.steps, Path(tmp))
            stack = SeedStack([j.model for j in jobs], [p.phase for p in jobs[0].plan])
            start = time.perf_counter()
            train_stacked(jobs, stack, [str(i) for i in range(args.seeds)], None)
            per.setdefault(f"kdbench, {args.seeds} seeds stacked", []).append(
                (time.perf_counter() - start) / seed_steps)
    base = per["bare loop, Adam"]
    print(f"one-shot on the quickstart's parity sizes, one thread, {args.steps} steps x {args.seeds} seeds, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'':32} {'ms / seed-step':>15} {'vs bare loop (Adam)':>20}")
    for name, values in per.items():
        ratio = statistics.median(b / v for b, v in zip(base, values))
        print(f"{name:32} {statistics.median(values) * 1e3:15.3f} {ratio:19.2f}x")


if __name__ == "__main__":
    main()
