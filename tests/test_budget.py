"""FLOPs are measured, match the analytic counts, and the budget stops runs exactly."""

import pytest
import torch

from kdbench.api import Phase
from kdbench.run.budget import allot_steps, eval_steps, measure_step_flops
from kdbench.methods.labels import Labels
from kdbench.methods.one_shot import OneShot, OneShotParams
from kdbench.plugins import load_plugins
from kdbench.run.runner import build_task, prepare
from kdbench.run.pricing import load_suite
from kdbench.tasks.parity import ParityMLP, ParityParams
from kdbench.run.teachers import ProbeTeacher
from kdbench.api import MethodContext, Recipe

from conftest import kdbench, tiny_suite

B, N, H_T, H_S = 16, 30, 200, 20


def mlp_step_flops(batch, n, h, classes=2):
    """Forward 2*m*n*k per matmul; backward computes weight grads for both layers
    and the input grad of the head only (the data needs no gradient)."""
    forward = 2 * batch * (n * h + h * classes)
    backward = 2 * batch * n * h + 2 * (2 * batch * h * classes)
    return forward + backward


def context():
    task = ParityMLP().build(ParityParams(n=N, k=3, teacher_width=H_T, student_width=H_S), 0, torch.device("cpu"))
    student = task.student_model()
    ctx = MethodContext(task=task, student=student, teacher=ProbeTeacher(task, 0), teacher_recipe=Recipe(),
                        seed=0, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    batch = task.train_batch(torch.Generator().manual_seed(0), B)
    return ctx, batch


def test_labels_flops_match_analytic():
    ctx, batch = context()
    (phase,) = Labels().phases(ctx, Labels.Params())
    measured = measure_step_flops(phase, batch, ctx.student.parameters())
    assert measured == pytest.approx(mlp_step_flops(B, N, H_S), rel=0.01)


def test_one_shot_flops_include_teacher_forward():
    ctx, batch = context()
    (phase,) = OneShot().phases(ctx, OneShotParams())
    measured = measure_step_flops(phase, batch, ctx.student.parameters())
    teacher_forward = 2 * B * (N * H_T + H_T * 2)
    assert measured == pytest.approx(mlp_step_flops(B, N, H_S) + teacher_forward, rel=0.01)


def test_probe_leaves_no_gradients_or_rng_change():
    ctx, batch = context()
    (phase,) = Labels().phases(ctx, Labels.Params())
    state = torch.get_rng_state()
    measure_step_flops(phase, batch, ctx.student.parameters())
    assert all(p.grad is None for p in ctx.student.parameters())
    assert torch.equal(state, torch.get_rng_state())


def phase(name, **kw):
    return Phase(name, loss=lambda b: None, **kw)


def test_allot_last_phase_takes_the_rest_and_never_exceeds():
    phases = [phase("a", share=0.45), phase("b")]
    steps = allot_steps(phases, [30, 70], 10_000)
    assert steps[0] == 150  # floor(4500 / 30)
    spent = steps[0] * 30 + steps[1] * 70
    assert spent <= 10_000 and 10_000 - spent < 70


def test_allot_fixed_steps_are_capped_by_budget():
    steps = allot_steps([phase("a", steps=100), phase("b", steps=100), phase("c")], [10, 10, 10], 1_500)
    assert steps == [100, 50, 0]


def test_eval_steps_cover_boundaries_and_even_flops():
    marks = eval_steps([10, 40], [10, 10], 5)
    assert marks[0] == 0 and 10 in marks and marks[-1] == 20
    # 5 evenly spaced FLOP marks over 500 FLOPs: 100 at step 10 (boundary), 200.. in phase 2
    assert marks == [0, 10, 13, 15, 18, 20]


def test_budget_in_steps_of_a_method(write_suite):
    text = tiny_suite(methods="  - name: labels\n  - name: one-shot").replace(
        "budget: {flops: 2000000.0}", "budget: {steps: 40, method: one-shot}")
    loaded, registry = load_suite(write_suite(text), load_plugins)
    dev = torch.device("cpu")
    prepared = {}
    for run in loaded.runs:
        task = build_task(run, registry, dev, None)
        prepared[run.method] = prepare(run, registry, task, ProbeTeacher(task, 0), dev)
    one_shot = prepared["one-shot"]
    assert one_shot.phase_steps == [40]
    assert one_shot.budget_flops == 40 * one_shot.phase_flops[0]
    labels = prepared["labels"]  # no teacher forward: cheaper steps, more of them, same FLOPs
    assert labels.budget_flops == one_shot.budget_flops
    assert labels.phase_steps[0] > 40
    assert labels.phase_steps[0] * labels.phase_flops[0] <= labels.budget_flops


EQUAL_STEPS = """
name: equal-steps
seeds: [0, 1]
budget: {student_steps: 60}
eval: {points: 5}
tasks:
  - name: parity-mlp
    params: {n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256}
    teacher: {optimizer: adam, lr: 0.01, batch_size: 16, steps: 50}
    student: {optimizer: adam, lr: 0.01, batch_size: 16}
methods:
  - name: labels
  - name: one-shot
  - name: curriculum-extraction
"""


def test_a_budget_in_student_steps_gives_every_method_the_same_steps(write_suite, tmp_path):
    """The progressive-distillation paper compares at equal student steps: every method gets 60 steps
    (extraction split 45/55 between its phases by steps), and its FLOPs are reported, not matched."""
    from kdbench.results.plots import plot_task
    from kdbench.results.folder import load_results

    out = tmp_path / "out"
    kdbench("run", write_suite(EQUAL_STEPS), "-o", out, "-q")
    runs = load_results(out).runs()
    assert (runs.steps == 60).all() and len(runs) == 6
    flops = runs.groupby("method").flops.first()
    assert flops["labels"] < flops["one-shot"]  # one-shot's steps also run the teacher
    phases = runs[runs.method == "curriculum-extraction"].phases.iloc[0]
    assert [p["steps"] for p in phases] == [27, 33]  # floor(0.45 * 60), then the rest
    curves = load_results(out).curves()
    labels = runs.run_id[runs.method == "labels"].iloc[0]
    assert curves[curves.run_id == labels].step.tolist() == [0, 12, 24, 36, 48, 60]  # evenly spaced in steps
    board = (out / "leaderboard.md").read_text()
    assert "Budget: 60 student steps per run for every method (equal steps: FLOPs are reported, not matched" in board
    fig = plot_task(runs[runs.task == "parity-mlp"], load_results(out).curves(), x="steps")
    assert fig.axes[0].get_xlabel() == "student steps"
    kdbench("plot", out, "--x", "flops")
    assert "allowed: flops, steps" in kdbench("plot", out, "--x", "time", expect=2).output


@pytest.mark.parametrize("budget, message", [
    ("{student_steps: 10, counts: total}", "counts: total needs a FLOP budget"),
    ("{student_steps: 10, flops: 1e6}", "give one of flops, steps (with method) or student_steps"),
    ("{student_steps: 10, method: one-shot}", "method goes with steps"),
])
def test_bad_step_budgets(write_suite, tmp_path, budget, message):
    text = EQUAL_STEPS.replace("{student_steps: 60}", budget)
    result = kdbench("validate", write_suite(text), expect=2)
    assert message in result.output.replace("\n", "")


def test_flop_probe_does_not_import_dynamo():
    """torch's FlopCounterMode imports torch._dynamo on its first dispatch (1-3 s of every
    `kdbench run`); the probe's counter gives the same totals without it."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from torch.utils.flop_counter import FlopCounterMode\n"
        "from kdbench.run.budget import StepFlopCounter\n"
        "m = torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.ReLU(), torch.nn.Linear(20, 2))\n"
        "x = torch.randn(16, 30)\n"
        "with StepFlopCounter(display=False) as ours: m(x).sum().backward()\n"
        "print('torch._dynamo' in sys.modules, ours.get_total_flops())\n"
        "with FlopCounterMode(display=False) as theirs: m(x).sum().backward()\n"
        "print(theirs.get_total_flops())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False"
    assert int(out[1]) == int(out[2]) == mlp_step_flops(16, 30, 20)
