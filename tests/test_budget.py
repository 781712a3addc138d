"""FLOPs are measured, match the analytic counts, and the budget stops runs exactly."""

import pytest
import torch

from kdbench.api import Phase
from kdbench.budget import allot_steps, eval_steps, measure_step_flops
from kdbench.methods.labels import Labels
from kdbench.methods.one_shot import OneShot, OneShotParams
from kdbench.plugins import load_plugins
from kdbench.runner import build_task, prepare
from kdbench.suite import load_suite
from kdbench.tasks.parity import ParityMLP, ParityParams
from kdbench.teachers import ProbeTeacher
from kdbench.api import MethodContext, Recipe

from conftest import tiny_suite

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
