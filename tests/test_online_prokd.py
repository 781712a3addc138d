"""Online distillation and Pro-KD: a teacher trained in lockstep inside the run."""

import json

import pytest
import torch

from kdbench import distillation_loss, logits
from kdbench.run.engine import train
from kdbench.methods.pro_kd import temperature_at
from kdbench.plugins import load_plugins
from kdbench.run.runner import build_task, prepare
from kdbench.run.stop import StopRequested, clear_stop, request_stop
from kdbench.run.pricing import load_suite
from kdbench.run.teachers import ProbeTeacher

from conftest import kdbench, without_time

SUITE = """
name: online
seeds: [0]
budget: {{steps: 60, method: one-shot{counts}}}
eval: {{points: 5}}
tasks:
  - name: parity-mlp
    params: {{n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 512}}
    teacher: {{optimizer: adam, lr: 0.02, batch_size: 32, steps: {tsteps}}}
    student: {{optimizer: adam, lr: 0.02, batch_size: 32}}
methods:
{methods}
"""


def write(tmp_path, methods, tsteps=40, counts=""):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.format(methods=methods, tsteps=tsteps, counts=counts))
    return path


def prepared(path, label, tmp_path=None):
    loaded, registry = load_suite(path, load_plugins)
    run = next(r for r in loaded.runs if r.method_label == label)
    task = build_task(run, registry, torch.device("cpu"), None)
    return prepare(run, registry, task, ProbeTeacher(task, run.teacher_seed), torch.device("cpu"),
                   state_path=tmp_path / "state.pt" if tmp_path else None)


def test_teacher_inside_an_online_run_improves_and_targets_change(tmp_path):
    p = prepared(write(tmp_path, "  - name: online"), "online")
    cotrain = p.job.plan[0].phase.cotrain
    task = p.job.task
    before = task.evaluate(cotrain.model)["accuracy"]
    initial_target = [t.clone() for t in cotrain.target.state_dict().values()]
    result = train(p.job)
    after = task.evaluate(cotrain.model)["accuracy"]
    assert result.status == "finished"
    assert after > before + 0.2
    assert any(not torch.equal(a, b) for a, b in zip(initial_target, cotrain.target.state_dict().values()))
    # the final target is the final co-trained teacher
    assert all(torch.equal(a, b) for a, b in zip(cotrain.model.state_dict().values(),
                                                 cotrain.target.state_dict().values()))
    assert result.teacher_flops == 40 * p.job.plan[0].cotrain_flops  # 40 teacher steps, every one charged


def test_target_refreshes_only_every_refresh_teacher_steps(tmp_path):
    p = prepared(write(tmp_path, "  - name: online\n    params: {refresh: 1000}", tsteps=5000), "online")
    cotrain = p.job.plan[0].phase.cotrain
    initial = [t.clone() for t in cotrain.target.state_dict().values()]
    train(p.job)  # the budget ends long before 1000 teacher steps
    assert all(torch.equal(a, b) for a, b in zip(initial, cotrain.target.state_dict().values()))
    assert any(not torch.equal(a, b) for a, b in zip(initial, cotrain.model.state_dict().values()))


def test_total_flops_include_teacher_training_and_curves_line_up(tmp_path):
    out = tmp_path / "out"
    kdbench("run", write(tmp_path, "  - name: online\n  - name: pro-kd\n  - name: one-shot"), "-o", out, "-q")
    runs = {}
    for d in (out / "runs").iterdir():
        label = json.loads((d / "config.json").read_text())["method_label"]
        runs[label] = (json.loads((d / "summary.json").read_text()), json.loads((d / "curve.json").read_text()))
    teacher = json.loads(next(out.glob("teachers/*/summary.json")).read_text())
    one_shot, one_shot_curve = runs["one-shot"]
    assert one_shot["teacher_train_flops"] == teacher["flops"] > 0  # the cached teacher's recorded cost
    for label in ("online", "pro-kd"):
        summary, curve = runs[label]
        assert summary["status"] == "finished"
        assert 0 < summary["teacher_train_flops"]
        assert summary["total_flops"] == summary["flops"] + summary["teacher_train_flops"]
        # same budget and FLOP axis (student FLOPs) as the others, same evaluation marks
        assert summary["budget_flops"] == one_shot["budget_flops"] and summary["flops"] <= summary["budget_flops"]
        # every evenly spaced FLOP mark of one-shot's curve is on this curve too (plus phase boundaries)
        assert {r["flops"] for r in one_shot_curve} <= {r["flops"] for r in curve}
        assert curve[-1]["flops"] == summary["flops"] and curve[-1]["teacher_flops"] == summary["teacher_train_flops"]
    board = (out / "leaderboard.md").read_text()
    assert "Total FLOPs" in board


def test_budget_counting_total_flops(tmp_path):
    path = write(tmp_path, "  - name: online\n  - name: one-shot", counts=", counts: total")
    online, one_shot = prepared(path, "online"), prepared(path, "one-shot")
    assert online.budget_flops == one_shot.budget_flops
    result = train(online.job)
    assert result.flops + result.teacher_flops <= online.budget_flops
    # a budget of "60 one-shot steps" counting totals covers one-shot's cached teacher too:
    # one-shot keeps its 60 steps, online spends the same total on its steps plus its teacher
    teacher_cost = 40 * online.job.plan[0].cotrain_flops
    assert one_shot.budget_flops == 60 * one_shot.phase_flops[0] + teacher_cost
    assert one_shot.phase_steps == [60]


def test_online_resumes_bit_for_bit(tmp_path):
    path = write(tmp_path, "  - name: online\n    params: {refresh: 3}")
    reference = train(prepared(path, "online").job)
    p = prepared(path, "online", tmp_path)
    p.job.on_step = lambda clock: request_stop() if clock.step == 25 else None  # mid-way through co-training
    try:
        with pytest.raises(StopRequested):
            train(p.job)
    finally:
        clear_stop()
    resumed = train(prepared(path, "online", tmp_path).job)
    assert resumed.resumed_from == 25
    assert without_time(resumed.curve) == without_time(reference.curve)
    assert resumed.teacher_flops == reference.teacher_flops


def test_pro_kd_temperature_schedule():
    assert temperature_at(0, 4, 1, "linear") == 4 and temperature_at(1, 4, 1, "linear") == 1
    assert temperature_at(0.5, 4, 1, "linear") == 2.5
    assert temperature_at(0.5, 4, 1, "cosine") == pytest.approx(2.5)
    assert temperature_at(0.5, 4, 1, "exponential") == pytest.approx(2.0)


def test_pro_kd_loss_follows_the_clock(tmp_path):
    p = prepared(write(tmp_path, "  - name: pro-kd"), "pro-kd")
    phase, clock = p.job.plan[0].phase, p.job.clock
    batch = p.job.task.train_batch(torch.Generator().manual_seed(0), 32)
    with torch.no_grad():  # the oracle: Hinton's loss at a given temperature, on the same logits
        student, teacher = logits(p.job.model, batch), logits(phase.cotrain.target, batch)
    at = {t: distillation_loss(student, teacher, batch.labels, t).item() for t in (4.0, 2.5, 1.0)}
    assert len(set(at.values())) == 3  # the temperatures are told apart on this batch
    clock.phase_steps = 100
    for step, temperature in ((0, 4.0), (50, 2.5), (100, 1.0)):  # defaults: 4 -> 1, linear in the phase's steps
        clock.phase_step = step
        assert phase.loss(batch).item() == pytest.approx(at[temperature], rel=1e-6), (step, temperature)
