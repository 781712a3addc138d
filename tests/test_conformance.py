"""kdbench.testing.check_method: the built-in methods pass it; each kind of broken method fails it, by name."""

import os

import pytest
import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import nn

from kdbench import Method, Params, Phase, logits
from kdbench.testing import TinyTask, check_method, run_method

from conftest import DATA

BUILTINS = [
    ("labels", None, None),
    ("one-shot", None, {"temperature": 0, "divergence": "reverse"}),
    ("progressive", {"checkpoints": [50, 100]}, {"checkpoints": "3-shot"}),
    ("curriculum-extraction", None, {"layers": [5]}),  # refused by phases(): the students have 1 and 2 layers
    ("online", None, {"every": 0}),
    ("pro-kd", None, {"shape": "square"}),
]


@pytest.mark.parametrize("name, params, bad", BUILTINS, ids=[b[0] for b in BUILTINS])
def test_builtin_methods_pass(name, params, bad):
    passed = check_method(name, params, bad_params=bad)
    assert [line.split(":")[0] for line in passed] == ["params", "parity-mlp", "parity-mlp",
                                                         "parity-transformer", "parity-transformer"]
    assert "same curve" in passed[2] and "resumed, it gave the same curve" in passed[2]


def labels_loss(student):
    return lambda b: F.cross_entropy(logits(student, b), b.labels)


class NoGrad(Method):
    """The bug of a target computed with the student's output inside torch.no_grad()."""

    name, version, needs_teacher = "no-grad", "1", False

    def phases(self, ctx, params):
        student = ctx.student

        def loss(batch):
            with torch.no_grad():
                return F.cross_entropy(logits(student, batch), batch.labels)

        return [Phase("broken", loss=loss)]


class DeadRegressor(Method):
    """A phase that trains only a regressor its loss multiplies by zero: no gradient reaches it."""

    name, version, needs_teacher = "dead-regressor", "1", False

    def phases(self, ctx, params):
        student, regressor = ctx.student, nn.Linear(2, 2)

        def loss(batch):
            return F.cross_entropy(regressor(logits(student, batch)), batch.labels) * 0.0

        return [Phase("dead", loss=loss, steps=5, params=list(regressor.parameters())),
                Phase("labels", loss=labels_loss(student))]


class LooseParams(BaseModel):  # not kdbench.Params: unknown keys are silently dropped
    weight: float = 1.0


class Loose(Method):
    name, version, needs_teacher, Params = "loose", "1", False, LooseParams

    def phases(self, ctx, params):
        return [Phase("labels", loss=labels_loss(ctx.student))]


class WeightParams(Params):
    weight: float = 1.0  # no bound: a negative weight validates


class Unbounded(Method):
    name, version, needs_teacher, Params = "unbounded", "1", False, WeightParams

    def phases(self, ctx, params):
        loss = labels_loss(ctx.student)
        return [Phase("labels", loss=lambda b: params.weight * loss(b))]


class Unseeded(Method):
    """Draws its projection from a generator seeded by the OS, not from ctx.generator."""

    name, version, needs_teacher = "unseeded", "1", False

    def phases(self, ctx, params):
        student = ctx.student
        g = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
        projection = torch.randn(2, 2, generator=g)
        return [Phase("labels", loss=lambda b: F.cross_entropy(logits(student, b) @ projection, b.labels))]


class Uncounted(Method):
    """A phase whose loss runs no model: FlopCounterMode sees nothing, so its steps would be free."""

    name, version, needs_teacher = "uncounted", "1", False

    def phases(self, ctx, params):
        bias = nn.Parameter(torch.zeros(2))
        return [Phase("free", loss=lambda b: (bias - 1).pow(2).sum(), share=0.5, params=[bias]),
                Phase("labels", loss=labels_loss(ctx.student))]


class Counter:
    """What a loss carries between steps: how many times it ran."""

    def __init__(self):
        self.calls = 0

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = state["calls"]


class Forgetful(Method):
    """A loss whose weight grows with its calls, a count not saved with the run: a resumed run restarts it."""

    name, version, needs_teacher = "forgetful", "1", False
    keeps_state = False

    def phases(self, ctx, params):
        counter, loss = Counter(), labels_loss(ctx.student)

        def counted(batch):
            counter.calls += 1
            return (1 + 0.1 * counter.calls) * loss(batch)

        return [Phase("counted", loss=counted, state=counter if self.keeps_state else None)]


class Remembering(Forgetful):
    """The same loss with its count as the phase's state: resumed exactly."""

    name = "remembering"
    keeps_state = True


def test_a_phase_state_is_saved_and_restored_with_the_run():
    passed = check_method(Remembering, tasks=[TinyTask()])
    assert "resumed, it gave the same curve" in passed[2]


@pytest.mark.parametrize("method, kwargs, message", [
    (NoGrad, {}, "phase 'broken': its loss has no gradient"),
    (DeadRegressor, {}, "phase 'dead': after backward\\(\\) none of the 2 parameters it trains"),
    (Loose, {}, "params.kdbench_no_such_param = 1 was accepted"),
    (Unbounded, {"bad_params": {"weight": -1.0}}, "bad params {'weight': -1.0} were accepted"),
    (Unseeded, {"tasks": [TinyTask()]}, "two runs with seed 0 gave different curves"),
    (Uncounted, {}, "phase 'free': one step measured 0 FLOPs"),
    (Forgetful, {"tasks": [TinyTask()]}, "stopped half-way and resumed gave another curve"),
], ids=["loss-under-no-grad", "no-gradient-on-trained-params", "unknown-params-accepted", "bad-params-accepted",
        "not-reproducible", "uncounted-flops", "state-lost-on-resume"])
def test_broken_methods_fail_naming_the_problem(method, kwargs, message):
    with pytest.raises(AssertionError, match=message):
        check_method(method, **kwargs)


def test_a_bad_param_must_raise_an_error_naming_it_not_crash():
    class Crashing(Unbounded):
        name = "crashing"

        def phases(self, ctx, params):
            layers = [ctx.student.layer_parameters(1)]
            return super().phases(ctx, params) if params.weight >= 0 else layers[int(-params.weight)]

    with pytest.raises(AssertionError, match="raised IndexError: list index out of range; a mistake in params"):
        check_method(Crashing, bad_params={"weight": -1.0})


def test_a_bad_params_error_must_name_the_param():
    class Vague(Unbounded):
        name = "vague"

        def phases(self, ctx, params):
            from kdbench import UserError

            if params.weight < 0:
                raise UserError("something is wrong")
            return super().phases(ctx, params)

    with pytest.raises(AssertionError, match="names none of \\['weight'\\]"):
        check_method(Vague, bad_params={"weight": -1.0})


TINY_PCFG = TinyTask(name="pcfg-bert",
                     params={"seq_len": 24, "teacher_layers": 2, "teacher_heads": 2, "teacher_width": 16,
                             "student_layers": 2, "student_heads": 2, "student_width": 8, "eval_size": 32,
                             "eval_batch_size": 32},
                     teacher={"optimizer": "adam", "lr": 0.003, "batch_size": 8, "steps": 20},
                     student={"optimizer": "adam", "lr": 0.003, "batch_size": 8})


TINY_WIKI = TinyTask(name="wikipedia-bert",
                     params={"corpus": str(DATA / "wikitext-2-excerpt"), "vocab_size": 300, "seq_len": 16,
                             **{k: v for k, v in TINY_PCFG.params.items() if k != "seq_len"}},
                     teacher=TINY_PCFG.teacher, student=TINY_PCFG.student)


@pytest.mark.parametrize("task", [TINY_PCFG, TINY_WIKI], ids=["pcfg-bert", "wikipedia-bert"])
def test_curriculum_extraction_masked_positions_on_an_mlm_task(task):
    """positions: masked once selected the masked positions under torch.no_grad(), so the extraction
    loss had no gradient: exactly what check_method's gradient check reports. Now it trains."""
    check_method("curriculum-extraction", {"positions": "masked"}, tasks=[task])
    result = run_method("curriculum-extraction", {"positions": "masked", "layers": [1]}, task=task,
                        budget_flops=3e7, eval_points=8)
    losses = [p["train_loss"] for p in result.phase_points("extract-layer-1") if p["train_loss"] is not None]
    assert result.status == "finished" and len(losses) >= 2 and losses[-1] < losses[0]
