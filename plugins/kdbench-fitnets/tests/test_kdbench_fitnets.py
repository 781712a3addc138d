"""FitNets through the real engine, with the fixtures kdbench's pytest plugin provides
(``run_method``, ``tiny_task``, ``tiny_budget``): no conftest needed."""

import math

import pytest
import torch
from kdbench import BasicDistillOptions, UserError
from kdbench.plugins import load_plugins
from kdbench.run.runner import build_task, method_phases
from kdbench.run.teachers import ProbeTeacher
from kdbench.testing import check_method, resolve_run, tiny_encoder_task

from kdbench_fitnets import FitNets, FitNetsParams

BUDGET = 2e7  # ~45 hint steps and ~370 logits steps on the tiny task


def test_registered_through_its_entry_point():
    info = load_plugins().methods["fitnets"]
    assert info.cls is FitNets
    assert info.source.startswith("entry point fitnets (kdbench-fitnets ")


def test_passes_the_checks_every_method_must_pass():
    """Params, gradients of every phase, FLOPs, budget and reproducibility, on an MLP and an encoder task."""
    check_method(FitNets, bad_params=[{"hint_share": 1.5}, {"student_layer": 3}])


def test_hint_phase_then_logits_within_the_budget(run_method):
    result = run_method(FitNets, budget_flops=BUDGET)
    hint, rest = result.phases
    assert (hint.name, rest.name) == ("hint", "logits")
    assert result.status == "finished"
    assert all(n > 0 for n in result.phase_steps)
    # the hint gets its share of the budget (to one step), the logits phase what is left
    hint_flops = result.phase_steps[0] * result.phase_step_flops[0]
    assert 0.3 * BUDGET - result.phase_step_flops[0] < hint_flops <= 0.3 * BUDGET
    assert BUDGET - result.phase_step_flops[1] < result.flops <= BUDGET
    assert result.metric("accuracy") >= 0.95  # the tiny teacher is perfect; the student learns it


def test_hint_step_charges_student_regressor_and_teacher_prefix(run_method, tiny_task):
    # MLP n -> h -> 2, hint at layer 1 of both. Forward: student layer 1, regressor, teacher layer 1.
    # Backward: regressor weight and input gradients, student layer-1 weight gradient (the data needs none).
    result = run_method(FitNets, teacher="probe", budget_flops=BUDGET)
    p, b = tiny_task.params, tiny_task.student["batch_size"]
    n, hs, ht = p["n"], p["student_width"], p["teacher_width"]
    expected = 2 * b * (n * hs + hs * ht + n * ht) + 2 * b * (2 * hs * ht + n * hs)
    assert result.phase_step_flops[0] == expected


def test_hint_loss_falls(run_method):
    points = [p["train_loss"] for p in run_method(FitNets, budget_flops=BUDGET, eval_points=8).phase_points("hint")]
    losses = [x for x in points if x is not None]
    assert len(losses) >= 2 and losses[-1] < 0.7 * losses[0]


def test_hint_trains_the_guided_layers_and_the_regressor_only(run_method):
    result = run_method(FitNets, teacher="probe")
    hint = result.phases[0]
    student = result.student
    regressor = [p for p in hint.params if not any(p is q for q in student.parameters())]
    assert [tuple(p.shape) for p in regressor] == [(64, 16), (64,)]  # Linear(student 16 -> teacher 64)
    guided = {id(p) for p in student.layer_parameters(1)}
    assert {id(p) for p in hint.params} - {id(p) for p in regressor} == guided
    assert not guided & {id(p) for p in student.head.parameters()}
    assert hint.info == {"student_layer": 1, "teacher_layer": 1}


def test_other_seed_other_curve(run_method):  # same seed, same curve: check_method
    def curve(seed):
        return [{k: v for k, v in p.items() if k != "time"} for p in run_method(FitNets, seed=seed).curve]

    assert curve(0) != curve(1)


@pytest.mark.parametrize("init", ["xavier", "kaiming", "orthogonal"])
def test_regressor_inits(init):
    """Each init is what its definition says (fan_in 16, fan_out 64), before any training."""
    registry, run = resolve_run(FitNets, {"regressor_init": init})
    task = build_task(run, registry, torch.device("cpu"), None)
    _, phases, _ = method_phases(run, registry, task, ProbeTeacher(task, 0), torch.device("cpu"), run.method,
                                 run.method_params)
    weight = phases[0].params[-2].detach()
    assert weight.shape == (64, 16)
    xavier, kaiming = math.sqrt(6 / (16 + 64)), 1 / math.sqrt(16)  # uniform bounds: 0.274 and 0.25
    if init == "orthogonal":
        assert torch.allclose(weight.T @ weight, torch.eye(16), atol=1e-5)  # orthonormal columns
    else:
        bound = xavier if init == "xavier" else kaiming
        assert weight.abs().max() <= bound and weight.abs().max() > 0.97 * bound  # 1024 draws reach the bound
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.08)  # uniform(-b, b)
        assert not torch.allclose(weight.T @ weight, torch.eye(16), atol=0.1)


def test_layer_out_of_range_names_the_field(run_method):
    with pytest.raises(UserError, match=r"student_layer: 3 is out of range.*1\.\.1"):
        run_method(FitNets, {"student_layer": 3}, teacher="probe")


@pytest.mark.parametrize("params, field", [({"hint_share": 1.5}, "hint_share"), ({"temperature": 0}, "temperature"),
                                           ({"regressor_init": "zeros"}, "regressor_init"), ({"hint": 1}, "hint")])
def test_bad_params_are_user_errors(run_method, params, field):
    with pytest.raises(UserError, match=rf"methods\[0\]\.params\.{field}"):
        run_method(FitNets, params, teacher="probe")


def test_encoder_per_token_hint(run_method):
    """Encoders give [batch, tokens, width]: the regressor maps every token's vector."""
    result = run_method(FitNets, task=tiny_encoder_task(), budget_flops=1e8, eval_points=6)  # 25 hint steps
    hint = result.phases[0]
    assert hint.info == {"student_layer": 1, "teacher_layer": 1}
    assert tuple(hint.params[-2].shape) == (16, 8)
    assert result.status == "finished" and all(n > 0 for n in result.phase_steps)
    losses = [p["train_loss"] for p in result.phase_points("hint") if p["train_loss"] is not None]
    assert losses[-1] < losses[0]


def test_logits_phase_params_are_kdbenchs_basic_distill_options():
    """temperature and label_weight come from kdbench.BasicDistillOptions; the params dump (so the run
    ids) as when fitnets declared them itself."""
    assert issubclass(FitNetsParams, BasicDistillOptions)
    assert FitNetsParams().model_dump(mode="json") == {
        "student_layer": None, "teacher_layer": None, "hint_share": 0.3, "temperature": 1.0, "label_weight": 0.0,
        "pre_activation": False, "regressor_init": "xavier"}
