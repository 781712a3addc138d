"""Engine overhead: steps/s of kdbench's training loop vs a bare PyTorch loop doing the
same student steps (same task, model, teacher, loss, optimizer), measured in one process.

    python benchmarks/overhead.py [--steps 3000] [--repeats 3]

Prints both rates and their ratio (target >= 0.95). The engine's extra work per step:
re-seeding the data generator for the step, the divergence check, phase lookup,
progress and evaluation bookkeeping.
"""

from __future__ import annotations

import argparse
import time

import torch

from kdbench.api import Clock, Recipe
from kdbench.run.budget import eval_steps
from kdbench.run.engine import PlannedPhase, TrainJob, progress_every, train
from kdbench.losses import DistillOptions, distillation_loss, final_teacher_phase
from kdbench.run.optim import make_optimizer
from kdbench.tasks.parity import ParityMLP, ParityParams
from kdbench.run.teachers import ProbeTeacher


def setup(args):
    torch.manual_seed(0)
    params = ParityParams(n=args.n, k=3, teacher_width=args.teacher_width, student_width=args.student_width)
    task = ParityMLP().build(params, 0, torch.device("cpu"))
    teacher = ProbeTeacher(task, 0)
    recipe = Recipe(optimizer="adam", lr=1e-3, batch_size=args.batch)
    return task, teacher, recipe


def bare(args) -> float:
    task, teacher, recipe = setup(args)
    torch.manual_seed(1)
    student = task.student_model()
    opt = make_optimizer(list(student.parameters()), recipe)
    t_model = teacher.final()
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(args.steps):
        batch = task.train_batch(g, recipe.batch_size)
        with torch.no_grad():
            target = t_model(batch.inputs)
        loss = distillation_loss(student(batch.inputs), target, batch.labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return args.steps / (time.perf_counter() - start)


def engine(args) -> float:
    task, teacher, recipe = setup(args)
    torch.manual_seed(1)
    student = task.student_model()

    class Ctx:  # the few fields final_teacher_phase reads
        pass

    ctx = Ctx()
    ctx.teacher, ctx.student, ctx.clock = teacher, student, Clock()
    phase = final_teacher_phase(ctx, options=DistillOptions(temperature=1.0, label_weight=0.0))
    job = TrainJob(model=student, plan=[PlannedPhase(phase, args.steps, 1)], recipe=recipe, task=task,
                   stream_seed=0, eval_at=eval_steps([1], [args.steps], 0)[1:-1],
                   on_step=progress_every(lambda done, total: None))
    start = time.perf_counter()
    train(job)
    return args.steps / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--teacher-width", type=int, default=1000)
    ap.add_argument("--student-width", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: least sensitive to other load)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bare(args), engine(args)  # warm-up
    # interleaved, so a change in the machine's load hits both sides alike
    pairs = [(bare(args), engine(args)) for _ in range(args.repeats)]
    ratios = sorted(e / b for b, e in pairs)
    print(f"bare PyTorch loop: {max(b for b, _ in pairs):8.1f} steps/s (best of {args.repeats})")
    print(f"kdbench engine:    {max(e for _, e in pairs):8.1f} steps/s (best of {args.repeats})")
    print(f"ratio engine/bare: {ratios[len(ratios) // 2]:.3f} median of {args.repeats} interleaved pairs "
          f"(min {ratios[0]:.3f}, max {ratios[-1]:.3f}; target >= 0.95)")


if __name__ == "__main__":
    main()
