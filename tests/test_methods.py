"""Progressive distillation and curriculum extraction on tiny parity configs."""

import json

import pytest
import torch

from kdbench.api import MethodContext, Recipe
from kdbench.run.budget import measure_step_flops
from kdbench.methods.curriculum_extraction import CurriculumExtraction, ExtractionParams, draw_projection
from kdbench.methods.progressive import Progressive, ProgressiveParams, checkpoint_schedule
from kdbench.tasks.parity import ParityMLP, ParityParams
from kdbench.run.teachers import ProbeTeacher

from conftest import kdbench, tiny_suite

TEACHER = "teacher: {optimizer: adam, lr: 0.01, batch_size: 16, steps: 50}"
WITH_CKPTS = "teacher: {optimizer: adam, lr: 0.01, batch_size: 16, steps: 50, checkpoint_every: 10}"


def run_suite(write_suite, tmp_path, methods, teacher=WITH_CKPTS):
    out = tmp_path / "out"
    kdbench("run", write_suite(tiny_suite(methods=methods).replace(TEACHER, teacher)), "-o", out, "-q")
    runs = {}
    for d in (out / "runs").iterdir():
        config = json.loads((d / "config.json").read_text())
        runs[config["method_label"]] = (json.loads((d / "summary.json").read_text()),
                                        json.loads((d / "curve.json").read_text()))
    return out, runs


def teacher_checkpoints(out):
    return sorted(p.name for p in out.glob("teachers/*/checkpoints/*.pt"))


def test_one_shot_alone_stores_no_checkpoints(write_suite, tmp_path):
    out, runs = run_suite(write_suite, tmp_path, "  - name: one-shot\n  - name: curriculum-extraction")
    assert teacher_checkpoints(out) == []
    assert all(s["checkpoints_used"] == 0 and s["checkpoint_bytes"] == 0 for s, _ in runs.values())


def test_progressive_stores_and_reports_checkpoints(write_suite, tmp_path):
    out, runs = run_suite(write_suite, tmp_path, "  - name: progressive\n  - name: one-shot")
    assert teacher_checkpoints(out) == [f"step-{s:09d}.pt" for s in (10, 20, 30, 40)]
    summary, curve = runs["progressive"]
    assert summary["status"] == "finished"
    assert summary["checkpoints_used"] == 4 and summary["checkpoint_bytes"] > 0
    names = [p["name"] for p in summary["phases"]]
    assert names == ["checkpoint-10", "checkpoint-20", "checkpoint-30", "checkpoint-40", "final-teacher"]
    # proportional, multiplier 1: ten student steps per checkpoint, the rest on the final teacher
    assert [p["steps"] for p in summary["phases"][:4]] == [10, 10, 10, 10]
    # FLOPs charged per phase add up; a curve point at every phase boundary
    assert summary["flops"] == sum(p["steps"] * p["step_flops"] for p in summary["phases"])
    boundaries = {10, 20, 30, 40}
    assert boundaries <= {row["step"] for row in curve}
    assert runs["one-shot"][0]["checkpoints_used"] == 0


def test_curriculum_extraction_phases_and_costs(write_suite, tmp_path):
    _, runs = run_suite(write_suite, tmp_path, "  - name: curriculum-extraction")
    summary, curve = runs["curriculum-extraction"]
    extract, final = summary["phases"]
    assert extract["name"] == "extract-layer-1" and final["name"] == "final-teacher"
    assert extract["steps"] > 0 and final["steps"] > 0
    # the extraction stage got 45% of the budget (to within one step)
    share = extract["steps"] * extract["step_flops"] / summary["budget_flops"]
    assert 0.45 - extract["step_flops"] / summary["budget_flops"] < share <= 0.45
    assert summary["flops"] == sum(p["steps"] * p["step_flops"] for p in summary["phases"])
    assert {"extract-layer-1", "final-teacher"} <= {row["phase"] for row in curve}


def context(seed=0, depth=1, n=20, widths=(64, 16)):
    params = ParityParams(n=n, k=3, teacher_width=widths[0], student_width=widths[1], depth=depth)
    task = ParityMLP().build(params, 0, torch.device("cpu"))
    torch.manual_seed(seed)
    ctx = MethodContext(task=task, student=task.student_model(), teacher=ProbeTeacher(task, 0),
                        teacher_recipe=Recipe(steps=100, checkpoint_every=25), seed=seed,
                        device=torch.device("cpu"), generator=torch.Generator().manual_seed(seed))
    return ctx, task.train_batch(torch.Generator().manual_seed(1), 8)


def test_projection_fixed_by_seed():
    a = draw_projection("gaussian", 64, 16, None, torch.Generator().manual_seed(3))
    b = draw_projection("gaussian", 64, 16, None, torch.Generator().manual_seed(3))
    c = draw_projection("gaussian", 64, 16, None, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.std().item() == pytest.approx(1 / 8, rel=0.15)  # N(0, 1/d_teacher)
    # the same run seed gives the same stage loss (same projection), another seed another one
    losses = []
    for seed in (0, 0, 1):
        ctx, batch = context(seed=0)
        ctx.generator = torch.Generator().manual_seed(seed)
        phase = CurriculumExtraction().phases(ctx, ExtractionParams())[0]
        losses.append(phase.loss(batch).item())
    assert losses[0] == losses[1] != losses[2]


@pytest.mark.parametrize("kind", ["rademacher", "orthogonal"])
def test_other_projections_have_the_requested_scale(kind):
    p = draw_projection(kind, 64, 16, 0.5, torch.Generator().manual_seed(0))
    assert p.shape == (64, 16) and p.std().item() == pytest.approx(0.5, rel=0.15)


def test_extraction_steps_cheaper_than_full_steps_on_a_deep_model():
    ctx, batch = context(depth=3, widths=(256, 32))
    phases = CurriculumExtraction().phases(ctx, ExtractionParams())
    params = list(ctx.student.parameters())
    costs = {ph.name: measure_step_flops(ph, batch, params) for ph in phases}
    assert costs["extract-layer-1"] < costs["extract-layer-2"] < costs["final-teacher"]
    assert [ph.params is not None and len(ph.params) for ph in phases[:3]] == [2, 4, 6]  # layers <= i train


def test_extraction_layer_map_and_trained_params():
    ctx, _ = context(depth=2)
    phases = CurriculumExtraction().phases(ctx, ExtractionParams(layers=[2], layer_map=[1], train="layer"))
    assert [ph.name for ph in phases] == ["extract-layer-2", "final-teacher"]
    assert phases[0].info["teacher_layer"] == 1
    assert {id(p) for p in phases[0].params} == {id(p) for p in ctx.student.layer_parameters(2)}


def test_progressive_schedules():
    recipe = Recipe(steps=100, checkpoint_every=25)
    assert checkpoint_schedule(ProgressiveParams(), recipe) == [25, 50, 75]
    assert checkpoint_schedule(ProgressiveParams(checkpoints="2-shot", intermediate=40), recipe) == [40]
    assert checkpoint_schedule(ProgressiveParams(checkpoints=[60, 10, 100]), recipe) == [10, 60]
    ctx, _ = context()
    phases = Progressive().phases(ctx, ProgressiveParams(multiplier=2.0))
    assert [(p.name, p.steps) for p in phases] == [("checkpoint-25", 12), ("checkpoint-50", 13),
                                                   ("checkpoint-75", 12), ("final-teacher", None)]
    fixed = Progressive().phases(ctx, ProgressiveParams(switch="fixed", steps_per_checkpoint=7))
    assert [p.steps for p in fixed] == [7, 7, 7, None]


def test_progressive_without_cadence_is_a_user_error(write_suite):
    result = kdbench("validate", write_suite(tiny_suite(methods="  - name: progressive")), expect=2)
    assert "methods[0].params" in result.output and "no teacher checkpoint" in result.output
