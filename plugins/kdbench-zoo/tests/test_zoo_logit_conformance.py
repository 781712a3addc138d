"""The logit family: every method passes kdbench's conformance checks, is registered through the zoo's
entry point, describes its params, and is refused at validation (exit 2) on a task it cannot apply to."""

import json

import pytest
from typer.testing import CliRunner

from kdbench import UserError, validate_suite
from kdbench.cli.app import app
from kdbench.plugins import load_plugins
from kdbench.testing import TinyTask, check_method, tiny_encoder_task

from kdbench_zoo.logit import METHODS

# four classes (hierarchical parity, levels 2): DKD, DIST and logit-std refuse two-class tasks
MLP4 = TinyTask(params={"n": 10, "k": 2, "levels": 2, "teacher_width": 64, "student_width": 16, "eval_size": 256})


def encoder4() -> TinyTask:
    """kdbench's tiny encoder task with four classes."""
    task = tiny_encoder_task()
    task.params = {**task.params, "levels": 2}
    return task


BAD = {  # a bad value per method, beside check_method's unknown key and wrong types
    "dkd": [{"temperature": 0}, {"warmup": 1.0}, {"beta": -1}],
    "dist": [{"tau": 0}, {"gamma": -0.5}],
    "logit-std": [{"temperature": -2}, {"kd_weight": -1}],
    "ctkd": [{"module": "layer"}, {"t_range": 0}, {"lambda_rise": 0}],
    "takd": [{"assistant_share": 1.0}, {"assistant_size": 0}],
    "js-kd": [{"beta": 1.0}, {"temperature": 0}],
    "tv-kd": [{"label_weight": 2}],
    "skew-kl": [{"alpha": 0}, {"direction": "both"}],
    "akl": [{"mu": 1.5}],
}
PAPER_DEFAULTS = {
    "dkd": {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "ce_weight": 1.0, "warmup": 1 / 12},
    "dist": {"beta": 1.0, "gamma": 1.0, "tau": 1.0, "ce_weight": 1.0},
    "logit-std": {"temperature": 2.0, "kd_weight": 9.0, "ce_weight": 0.1},
    "ctkd": {"module": "global", "t_start": 1.0, "t_range": 20.0, "lambda_min": 0.0, "lambda_max": 1.0,
             "ce_weight": 0.1, "kd_weight": 0.9},
    "takd": {"assistant_size": 0.5, "assistant_share": 0.5, "temperature": 1.0, "label_weight": 0.0},
    "js-kd": {"beta": 0.5, "temperature": 1.0},
    "tv-kd": {"temperature": 1.0, "label_weight": 0.0},
    "skew-kl": {"alpha": 0.1, "direction": "forward"},
    "akl": {"mu": 0.5},
}


def test_the_family_lists_nine_methods():
    assert sorted(m.name for m in METHODS) == sorted(BAD)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_passes_the_checks_every_method_must_pass(method):
    check_method(method, bad_params=BAD[method.name], tasks=[MLP4, encoder4()])


def test_ctkd_instance_module_passes_the_checks():
    check_method("ctkd", {"module": "instance", "hidden": 8}, tasks=[MLP4, encoder4()])


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_registered_through_the_zoo_entry_point_with_version_and_description(method):
    info = load_plugins().methods[method.name]
    assert info.cls is method and info.source.startswith("entry point zoo (kdbench-zoo ")
    assert method.version == "1" and method.description


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_describe_shows_every_param_with_the_papers_default_and_a_description(method):
    result = CliRunner().invoke(app, ["describe", method.name, "--format", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (shown,) = json.loads(result.output)
    assert (shown["name"], shown["version"], shown["description"]) == (method.name, "1", method.description)
    params = {row["name"]: row for row in shown["params"]}
    assert set(params) == set(method.Params.model_fields)
    assert all(row["description"] for row in params.values())
    for name, value in PAPER_DEFAULTS[method.name].items():
        assert params[name]["default"] == (pytest.approx(value) if isinstance(value, float) else value), name


SUITE = """
name: refusal
seeds: [0]
budget: {{flops: 1e7}}
tasks:
  - name: parity-mlp
    params: {{n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 64}}
    teacher: {{steps: 10}}
methods:
  - name: {method}
"""


@pytest.mark.parametrize("method, reason", [("dkd", "non-target"), ("dist", "Pearson"), ("logit-std", "z-scores")])
def test_a_two_class_task_is_refused_at_validation_naming_method_task_and_reason(tmp_path, method, reason):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(method=method))
    with pytest.raises(UserError, match=rf"methods\[0\] \({method}\) on tasks\[0\] \(parity-mlp\).*"
                                        rf"needs at least 3 classes.*{reason}.*MLP.*scores 2"):
        validate_suite(suite)


def test_kdbench_validate_exits_2_on_a_two_class_task(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(method="dkd"))
    result = CliRunner().invoke(app, ["validate", str(suite)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "dkd" in result.output and "parity-mlp" in result.output and "classes" in result.output


def test_takd_refuses_a_model_it_cannot_interpolate():
    """A model other than kdbench's MLP and Encoder (a Hugging Face adapter, a plugin's own) is a UserError."""
    from types import SimpleNamespace

    import torch

    from kdbench_zoo.logit.takd import build_assistant

    ctx = SimpleNamespace(student=torch.nn.Linear(2, 2), teacher=SimpleNamespace(final=lambda: torch.nn.Linear(2, 2)))
    with pytest.raises(UserError, match="takd: .*kdbench.MLP or kdbench.Encoder.*Linear"):
        build_assistant(ctx, 0.5)
