"""kdbench's pytest plugin (kdbench.testing): the fixtures method authors get."""

from importlib.metadata import entry_points

import pytest
import torch
import torch.nn.functional as F

from kdbench import Method, Params, Phase, UserError, logits
from kdbench.testing import TinyTask, run_method as run_method_plain


class ScaledParams(Params):
    weight: float = 0.5


class Scaled(Method):
    """A method that is not installed anywhere: run_method takes the class itself."""

    name = "scaled-labels"
    version = "4"
    Params = ScaledParams
    needs_teacher = False

    def phases(self, ctx, params):
        s = ctx.student
        return [Phase("scaled", loss=lambda b: params.weight * F.cross_entropy(logits(s, b), b.labels))]


def test_plugin_is_declared_for_pytest():
    assert any(ep.value == "kdbench.testing" for ep in entry_points(group="pytest11"))


def test_fixture_values(tiny_task, tiny_budget, run_method):
    """The tiny budget is worth a few hundred steps of the tiny task, as the fixtures promise."""
    assert tiny_task.name == "parity-mlp" and tiny_task.params["n"] == 10
    one_shot = run_method("one-shot", budget_flops=tiny_budget).phase_steps[0]
    labels = run_method("labels", budget_flops=tiny_budget).phase_steps[0]
    assert 50 <= one_shot < labels <= 1000  # labels' steps have no teacher forward: more of them


def test_builtin_method_by_name(run_method, tiny_budget):
    result = run_method("one-shot", {"temperature": 2.0}, budget_flops=tiny_budget)
    assert result.status == "finished" and result.run.method_params["temperature"] == 2.0
    assert tiny_budget - result.phase_step_flops[0] < result.flops <= tiny_budget
    assert [p["phase"] for p in result.curve] == ["final-teacher"] * len(result.curve)
    assert result.curve[0]["step"] == 0 and result.final["step"] == result.phase_steps[0]
    assert result.metric() >= 0.9  # learns from a perfect tiny teacher


def test_uninstalled_class_runs_and_needs_no_teacher(tmp_path):
    result = run_method_plain(Scaled, {"weight": 0.25}, out=tmp_path)
    assert result.status == "finished" and result.run.method_version == "4"
    assert not (tmp_path / "teachers").exists()  # labels-style methods train no teacher


def test_teacher_is_trained_once_per_cache(tmp_path):
    run_method_plain("one-shot", out=tmp_path)
    run_method_plain("one-shot", {"temperature": 3.0}, out=tmp_path, seed=1)
    assert len(list((tmp_path / "teachers").iterdir())) == 1


def test_bad_params_and_unknown_names_are_user_errors(run_method):
    with pytest.raises(UserError, match=r"methods\[0\]\.params\.weight"):
        run_method(Scaled, {"weight": "heavy"})
    with pytest.raises(UserError, match="unknown method 'no-such-method'"):
        run_method("no-such-method")


def test_other_task_and_threads_restored(run_method):
    before = torch.get_num_threads()
    task = TinyTask(params={"n": 8, "k": 1, "teacher_width": 8, "student_width": 4, "eval_size": 64})
    result = run_method("labels", task=task, budget_flops=1e6)
    assert result.run.task_params["n"] == 8 and result.status == "finished"
    assert torch.get_num_threads() == before


def test_uninstalled_task_class(run_method):
    from kdbench.tasks.parity import ParityMLP

    class Copy(ParityMLP):
        name = "parity-copy"
        version = "9"

    result = run_method("labels", task=TinyTask(name=Copy), budget_flops=1e6)
    assert (result.run.task, result.run.task_version, result.status) == ("parity-copy", "9", "finished")
