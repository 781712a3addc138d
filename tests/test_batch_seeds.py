"""`kdbench run --batch-seeds`: runs that differ only in their seed train as one stacked model, and
every run's folder holds what its own run would have written (same ids, curves within fp32
reduction order, summaries, students); groups that cannot stack run one by one, saying why."""

import json
import math

import pytest
import torch

from conftest import kdbench, without_time
from kdbench.plugins import load_plugins
from kdbench.run.options import RunOptions
from kdbench.run.pricing import load_suite
from kdbench.run.seed_groups import GROUP_STATE, execute_group, seed_groups
from kdbench.run.stop import StopRequested, clear_stop, request_stop
from kdbench.run.store import run_dir

PARITY = """
name: stacked
seeds: [0, 1, 2]
budget: {{steps: {steps}, method: one-shot}}
eval: {{points: 4}}
tasks:
  - name: {task}
    params: {params}
    teacher: {{optimizer: adam, lr: 0.01, batch_size: 16, steps: 40, checkpoint_every: 10}}
    student: {{optimizer: adam, lr: 0.01, batch_size: 16{clip}}}
methods:
{methods}
"""
MLP = "{n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256}"
TRANSFORMER = ("{n: 10, k: 2, teacher_layers: 2, teacher_width: 32, teacher_heads: 2, student_layers: 1, "
               "student_width: 16, student_heads: 2, eval_size: 128}")
METHODS = "  - name: labels\n  - name: one-shot\n  - name: progressive\n  - name: curriculum-extraction"


def suite_text(task="parity-mlp", params=MLP, methods=METHODS, steps=40, clip=""):
    return PARITY.format(task=task, params=params, methods=methods, steps=steps, clip=clip)


def results(out) -> dict:
    """run id -> (method, curve, summary)."""
    found = {}
    for folder in sorted((out / "runs").iterdir()):
        config = json.loads((folder / "config.json").read_text())
        found[folder.name] = (config["method"], json.loads((folder / "curve.json").read_text()),
                              json.loads((folder / "summary.json").read_text()))
    return found


def assert_same_curves(a: list, b: list, rtol: float = 1e-4) -> None:
    assert [p["step"] for p in a] == [p["step"] for p in b]
    for p, q in zip(without_time(a), without_time(b)):
        assert p.keys() == q.keys()
        for key, value in p.items():
            if isinstance(value, float) and not math.isnan(value):
                assert q[key] == pytest.approx(value, rel=rtol, abs=1e-6), key
            else:
                assert q[key] == value, key


@pytest.mark.parametrize("task,params", [("parity-mlp", MLP), ("parity-transformer", TRANSFORMER)])
def test_batched_seeds_write_what_separate_runs_write(write_suite, tmp_path, task, params):
    suite = write_suite(suite_text(task, params, clip=", grad_clip: 0.5"))
    kdbench("run", suite, "-o", tmp_path / "separate", "-q", "-j", "1")
    batched = kdbench("run", suite, "-o", tmp_path / "batched", "-j", "1", "--batch-seeds")
    separate, stacked = results(tmp_path / "separate"), results(tmp_path / "batched")
    assert separate.keys() == stacked.keys()  # the same run ids
    grouped = set()
    for run_id, (method, curve, summary) in separate.items():
        _, curve_b, summary_b = stacked[run_id]
        assert_same_curves(curve, curve_b)
        for key in ("status", "steps", "flops", "budget_flops", "phases", "teacher_id"):
            assert summary_b[key] == summary[key], key
        assert summary_b["metrics"] == pytest.approx(summary["metrics"], rel=1e-4, abs=1e-6)
        assert (tmp_path / "batched" / "runs" / run_id / "student.safetensors").exists()
        if "seed_group" in summary_b:
            grouped.add(method)
            assert summary_b["seed_group"]["size"] == 3 and run_id in summary_b["seed_group"]["runs"]
    assert grouped == {"labels", "one-shot", "progressive"}
    # extraction's random projections differ by seed: its seeds run one by one, and the log says why
    assert "seeds 0, 1, 2 run one by one: phase 'extract-layer-1''s loss depends on the seed" in batched.output
    assert batched.output.count("trained as one stacked model") == 3
    # the leaderboard ranks the same: method, version, metric (mean +- std), seeds
    rows = [[[c.strip() for c in line.split("|")[1:5]] for line in (tmp_path / d / "leaderboard.md").read_text()
             .splitlines() if line.startswith("| ") and "Method" not in line] for d in ("separate", "batched")]
    assert rows[0] == rows[1] and len(rows[0]) == 4


def test_groups_are_runs_that_differ_only_in_their_seed(write_suite):
    loaded, _ = load_suite(write_suite(suite_text()), load_plugins)
    groups = seed_groups(loaded.runs)
    assert [len(g) for g in groups] == [3, 3, 3, 3]
    assert all(len({(r.method, r.method_params) for r in g}) == 1 and [r.seed for r in g] == [0, 1, 2]
               for g in groups)


def _group(write_suite, tmp_path, methods="  - name: one-shot"):
    loaded, registry = load_suite(write_suite(suite_text(methods=methods)), load_plugins)
    return loaded.runs, registry


def test_a_stacked_group_resumes_exactly_after_a_stop(write_suite, tmp_path):
    runs, registry = _group(write_suite, tmp_path)
    options = RunOptions.resolve("cpu", batch_seeds=True)
    reference = execute_group(runs, registry, tmp_path / "ref", options)
    stop_at = 20

    def stop(done, total):
        if done == stop_at:
            request_stop()

    try:
        with pytest.raises(StopRequested, match=f"stopped at step {stop_at}"):
            execute_group(runs, registry, tmp_path / "out", options, progress=stop)
    finally:
        clear_stop()
    state = run_dir(tmp_path / "out", runs[0].run_id) / GROUP_STATE
    saved = torch.load(state, weights_only=True)
    assert saved["member_ids"] == [r.run_id for r in runs] and [m["step"] for m in saved["members"]] == [stop_at] * 3
    resumed = execute_group(runs, registry, tmp_path / "out", options)
    assert not state.exists()
    for a, b in zip(reference, resumed):
        assert b.summary["resumed_from"] == stop_at
        assert without_time(a.curve) == without_time(b.curve)


DIVERGES = '''
import torch
import torch.nn.functional as F
from kdbench import Method, Phase, hookimpl


class Fragile(Method):
    """Labels, until step 3 from which a seed whose head bias[0] starts below THRESHOLD gets a NaN loss."""
    name = "fragile"
    needs_teacher = False

    def phases(self, ctx, params):
        student, clock = ctx.student, ctx.clock

        def loss(batch):
            ce = F.cross_entropy(student(batch.inputs), batch.labels)
            bad = (student.head.bias[0] < THRESHOLD) & (torch.tensor(clock.step) >= 3)
            return torch.where(bad, torch.tensor(float("nan")), ce)

        return [Phase("labels", loss=loss)]


@hookimpl
def kdbench_register_methods():
    return [Fragile]
'''


def test_a_diverging_seed_ends_alone_and_the_group_goes_on(write_suite, tmp_path):
    runs, registry = _group(write_suite, tmp_path, "  - name: labels")
    biases = []
    for run in runs:  # the students' initial head bias, as each run draws it
        from kdbench.run.runner import build_task, method_phases
        task = build_task(run, registry, torch.device("cpu"), None)
        student, _, _ = method_phases(run, registry, task, None, torch.device("cpu"), "labels", run.method_params)
        biases.append(student.head.bias[0].item())
    order = sorted(range(3), key=lambda s: biases[s])
    threshold = (biases[order[0]] + biases[order[1]]) / 2  # only the lowest is below: it diverges at step 3
    plugin = tmp_path / "fragile.py"
    plugin.write_text(DIVERGES.replace("THRESHOLD", repr(threshold)))
    suite = write_suite(suite_text(methods="  - name: fragile"))
    kdbench("run", suite, "-o", tmp_path / "separate", "-q", "-j", "1", "--plugin", plugin)
    out = kdbench("run", suite, "-o", tmp_path / "batched", "-j", "1", "--batch-seeds", "--plugin", plugin).output
    assert "seeds 0, 1, 2 trained as one stacked model" in out
    separate, stacked = results(tmp_path / "separate"), results(tmp_path / "batched")
    statuses = {}
    for run_id, (_, curve, summary) in separate.items():
        _, curve_b, summary_b = stacked[run_id]
        assert (summary_b["status"], summary_b["diverged_at"]) == (summary["status"], summary["diverged_at"])
        assert_same_curves(curve, curve_b)
        statuses[json.loads((tmp_path / "batched" / "runs" / run_id / "config.json").read_text())["seed"]] = \
            summary_b["status"]
    assert statuses == {s: "diverged" if s == order[0] else "finished" for s in range(3)}


def test_plan_says_which_groups_stack(write_suite):
    out = kdbench("plan", write_suite(suite_text()), "--batch-seeds", "--probe-steps", "0").output
    lines = [line for line in out.splitlines() if line.startswith("--batch-seeds: runs")]
    assert len(lines) == 4 and sum(line.endswith("stacked as one model") for line in lines) == 3
    assert any("one by one: phase 'extract-layer-1''s loss depends on the seed" in line for line in lines)


def test_worker_processes_run_a_group_as_one_job(write_suite, tmp_path):
    suite = write_suite(suite_text(methods="  - name: labels\n  - name: curriculum-extraction"))
    kdbench("run", suite, "-o", tmp_path / "separate", "-q", "-j", "1")
    kdbench("run", suite, "-o", tmp_path / "pool", "-q", "-j", "2", "--batch-seeds")
    separate, pooled = results(tmp_path / "separate"), results(tmp_path / "pool")
    assert separate.keys() == pooled.keys()
    for run_id, (method, curve, _) in separate.items():
        _, curve_b, summary_b = pooled[run_id]
        assert_same_curves(curve, curve_b)
        assert ("seed_group" in summary_b) == (method == "labels")  # extraction fell back inside its job
