"""Fidelity (agreement with the final teacher and KL(teacher || student)) at every evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from kdbench import streams
from kdbench.api import TaskInstance
from kdbench.cli.app import app
from kdbench.plugins import load_plugins
from kdbench.run.fidelity import Fidelity, fidelity_for
from kdbench.testing import run_method, tiny_encoder_task

SUITE = """
name: fid
seeds: [0, 1]
teacher_seeds: [0]
budget: {steps: 120, method: one-shot}
eval: {points: 3}
tasks:
  - name: parity-mlp
    params: {n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256}
    teacher: {optimizer: adam, lr: 0.01, batch_size: 32, steps: 200}
    student: {optimizer: adam, lr: 0.01, batch_size: 16}
methods:
  - name: labels
  - name: one-shot
"""


def by_hand(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> tuple[float, float]:
    """Agreement and mean KL(teacher || student) written out from their definitions."""
    p_t = torch.softmax(teacher_logits.double(), -1)
    log_p_s = torch.log_softmax(student_logits.double(), -1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(-1).mean()
    agree = (student_logits.argmax(-1) == teacher_logits.argmax(-1)).double().mean()
    return float(agree), float(kl)


def test_fidelity_equals_a_hand_computation_on_a_tiny_mlp():
    task = load_plugins().tasks["parity-mlp"].cls().build(
        load_plugins().tasks["parity-mlp"].cls.Params(n=10, k=2, teacher_width=32, student_width=8, eval_size=200),
        0, torch.device("cpu"))
    torch.manual_seed(0)
    teacher, student = task.teacher_model().eval(), task.student_model().eval()
    with torch.no_grad():
        got = Fidelity(task, teacher)(student)
        agree, kl = by_hand(student(task.eval_x), teacher(task.eval_x))
    assert abs(got["agreement"] - agree) < 1e-9 and abs(got["teacher_kl"] - kl) < 1e-5
    assert 0 < got["teacher_kl"] and 0 < got["agreement"] < 1  # two random nets: neither identical nor opposite
    with torch.no_grad():  # a model against itself: full agreement, no divergence
        same = Fidelity(task, teacher)(teacher)
    assert same["agreement"] == 1.0 and abs(same["teacher_kl"]) < 1e-6


def test_mlm_fidelity_counts_masked_positions_only():
    outcome = run_method("one-shot", task=tiny_encoder_task(), teacher="probe", eval_points=2)
    assert "agreement" in outcome.curve[-1]
    registry = load_plugins()
    cls = registry.tasks["pcfg-bert"].cls
    params = cls.Params(teacher_layers=1, teacher_heads=2, teacher_width=16, student_layers=1, student_heads=2,
                        student_width=8, seq_len=16, eval_size=8, eval_batch_size=3)
    task = cls().build(params, 0, torch.device("cpu"))
    torch.manual_seed(1)
    teacher, student = task.teacher_model().eval(), task.student_model().eval()
    batch = task.eval_batch
    with torch.no_grad():
        got = Fidelity(task, teacher)(student)
        full = {who: model(batch.inputs) for who, model in (("s", student), ("t", teacher))}  # every position
        agree, kl = by_hand(full["s"][batch.mask], full["t"][batch.mask])
    assert int(batch.mask.sum()) < batch.mask.numel()  # some positions are not masked: they must not count
    assert abs(got["agreement"] - agree) < 1e-9 and abs(got["teacher_kl"] - kl) < 1e-4


def test_tasks_without_eval_logits_measure_no_fidelity():
    class NoLogits(TaskInstance):
        pass

    assert fidelity_for(NoLogits(), torch.nn.Linear(2, 2)) is None
    assert fidelity_for(NoLogits(), None) is None


def test_every_run_records_fidelity_and_labels_runs_against_the_suites_teacher(tmp_path: Path):
    suite = tmp_path / "fid.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(suite), "--output", str(out), "--jobs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    teacher_dir = next((out / "teachers").iterdir())
    registry = load_plugins()
    cls = registry.tasks["parity-mlp"].cls
    task = cls().build(cls.Params(n=10, k=2, teacher_width=64, student_width=16, eval_size=256),
                       streams.derive_seed("task", 0), torch.device("cpu"))
    teacher = task.teacher_model()
    teacher.load_state_dict(torch.load(teacher_dir / "final.pt", weights_only=True))
    teacher.eval()
    methods = set()
    for run in (out / "runs").iterdir():
        config = json.loads((run / "config.json").read_text())
        curve = json.loads((run / "curve.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
        methods.add(config["method"])
        assert all("agreement" in p and "teacher_kl" in p for p in curve)  # every evaluation, step 0 included
        assert summary["metrics"]["agreement"] == curve[-1]["agreement"]
        student = task.student_model()  # the kept student: its last point recomputed
        student.load_state_dict(load_file(run / "student.safetensors"))
        student.eval()
        with torch.no_grad():
            agree, kl = by_hand(student(task.eval_x), teacher(task.eval_x))
        assert abs(curve[-1]["agreement"] - agree) < 1e-9 and abs(curve[-1]["teacher_kl"] - kl) < 1e-5
    assert methods == {"labels", "one-shot"}
