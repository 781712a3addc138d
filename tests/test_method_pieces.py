"""The pieces the built-in methods share (issue 27, item 5): the distillation loss's params declared
once (DistillOptions and its bases), the lockstep base of online and pro-kd, one calling style of
distill_phase (the old one warns), and one encoder-size check for the encoder tasks."""

import warnings
from types import SimpleNamespace

import pytest
import torch

from kdbench import (MLP, BasicDistillOptions, DistillOptions, distill_phase, distillation_loss, final_teacher_phase,
                     lockstep_phases, logits)
from kdbench.api import Batch, Clock
from kdbench.distill_options import LabelWeight, Temperature
from kdbench.methods.curriculum_extraction import ExtractionParams
from kdbench.methods.lockstep import LockstepMethod, LockstepParams
from kdbench.methods.one_shot import OneShotParams
from kdbench.methods.online import Online, OnlineParams
from kdbench.methods.pro_kd import ProKD, ProKDParams
from kdbench.methods.progressive import ProgressiveParams
from kdbench.tasks.encoder_sizes import EncoderSizes
from kdbench.tasks.parity_transformer import ParityTransformerParams
from kdbench.tasks.pcfg import PCFGParams
from kdbench.tasks.wikipedia import WikipediaParams

# each method's default params as they dumped before the shared pieces (so in every run id)
DEFAULT_DUMPS = {
    OneShotParams: {"temperature": 1.0, "label_weight": 0.0},
    OnlineParams: {"every": 1, "refresh": 1, "temperature": 1.0, "label_weight": 0.0},
    ProKDParams: {"every": 1, "refresh": 1, "temperature_start": 4.0, "temperature_end": 1.0, "shape": "linear",
                  "label_weight": 0.0},
    ExtractionParams: {"extraction_share": 0.45, "stage_weights": None, "layers": None, "layer_map": None,
                       "projection": "gaussian", "projection_scale": None, "train": "upto", "student_repr": "pre",
                       "teacher_repr": "post", "positions": "all", "temperature": 1.0, "label_weight": 0.0},
}


@pytest.mark.parametrize("params", list(DEFAULT_DUMPS))
def test_default_params_dump_as_before(params):
    assert params().model_dump(mode="json") == DEFAULT_DUMPS[params]


def test_each_method_takes_its_loss_params_from_the_shared_classes():
    for params in (OneShotParams, ProgressiveParams):
        assert issubclass(params, DistillOptions)
    for params in (OnlineParams, ExtractionParams):
        assert issubclass(params, BasicDistillOptions) and not issubclass(params, DistillOptions)
    assert issubclass(ProKDParams, LabelWeight) and not issubclass(ProKDParams, Temperature)
    for method, params in ((Online, OnlineParams), (ProKD, ProKDParams)):
        assert issubclass(method, LockstepMethod) and issubclass(params, LockstepParams)
        assert not method.needs_teacher
    # declared once: no method re-declares a shared field
    for params in (OneShotParams, ProgressiveParams, OnlineParams, ProKDParams, ExtractionParams):
        assert not {"temperature", "label_weight"} & set(vars(params).get("__annotations__", {})), params


@pytest.mark.parametrize("params, zero_allowed", [
    (OneShotParams, True), (ProgressiveParams, True), (DistillOptions, True),
    (OnlineParams, False), (ExtractionParams, False), (BasicDistillOptions, False)])
def test_temperature_bounds_stay_each_methods(params, zero_allowed):
    """One-shot and progressive take temperature 0 (hard teacher labels); the others never did."""
    if zero_allowed:
        assert params(temperature=0).temperature == 0
    else:
        with pytest.raises(ValueError, match="greater than 0"):
            params(temperature=0)
    with pytest.raises(ValueError):
        params(temperature=-1)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        params(label_weight=1.5)


def _models_and_batch():
    torch.manual_seed(0)
    student, teacher = MLP(6, 8, 3), MLP(6, 8, 3)
    g = torch.Generator().manual_seed(0)
    return student, teacher, Batch(torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g))


def test_options_is_the_one_calling_style_and_the_old_one_warns():
    student, teacher, batch = _models_and_batch()
    with torch.no_grad():
        expected = distillation_loss(logits(student, batch), logits(teacher, batch), batch.labels, 2.0, 0.25).item()
    options = BasicDistillOptions(temperature=2.0, label_weight=0.25)
    ctx = SimpleNamespace(student=student, teacher=SimpleNamespace(final=lambda: teacher), clock=Clock())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new style warns about nothing
        new = [distill_phase("p", student, lambda: teacher, options=options),
               distill_phase("p", student, lambda: teacher, options=DistillOptions(temperature=2.0, label_weight=0.25)),
               final_teacher_phase(ctx, options=options)]
    old = []
    for call in (lambda: distill_phase("p", student, lambda: teacher, 2.0, 0.25),
                 lambda: distill_phase("p", student, lambda: teacher, temperature=2.0, label_weight=0.25),
                 lambda: final_teacher_phase(ctx, 2.0, 0.25)):
        with pytest.warns(DeprecationWarning, match=r"options=kdbench\.DistillOptions"):
            old.append(call())
    with torch.no_grad():
        for phase in new + old:
            assert phase.loss(batch).item() == pytest.approx(expected, rel=1e-6)
    assert old[2].name == new[2].name == "final-teacher" and old[2].teacher == "final"


def test_lockstep_phases_take_options_and_warn_on_floats():
    student, teacher, batch = _models_and_batch()
    ctx = SimpleNamespace(student=student, clock=Clock())
    cotrain = SimpleNamespace(target=teacher, every=2, total_steps=5)
    follow = lambda b: torch.zeros(())  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = lockstep_phases(ctx, cotrain, "follow", follow, options=BasicDistillOptions(temperature=3.0))
    with pytest.warns(DeprecationWarning, match="lockstep_phases"):
        old = lockstep_phases(ctx, cotrain, "follow", follow, 3.0, 0.0)
    assert [p.name for p in new] == [p.name for p in old] == ["follow", "final-teacher"]
    assert new[0].steps == 10 and new[1].teacher == "final (co-trained)"
    with torch.no_grad():
        assert new[1].loss(batch).item() == pytest.approx(old[1].loss(batch).item(), rel=1e-6)


def test_pro_kd_final_phase_is_at_temperature_end():
    options = ProKDParams(temperature_end=2.0, label_weight=0.3).final_options()
    assert isinstance(options, BasicDistillOptions) and (options.temperature, options.label_weight) == (2.0, 0.3)
    online = OnlineParams(temperature=1.5)
    assert online.final_options() is online


@pytest.mark.parametrize("params, extra", [(ParityTransformerParams, {}), (PCFGParams, {}),
                                           (WikipediaParams, {"corpus": "hf:wikitext"})])
def test_one_encoder_size_check(params, extra):
    assert issubclass(params, EncoderSizes)
    with pytest.raises(ValueError, match=r"student_width \(30\) must be a multiple of student_heads \(4\)"):
        params(student_width=30, student_heads=4, **extra)


def test_mlm_shares_are_still_checked_before_the_encoder_sizes():
    with pytest.raises(ValueError) as err:
        PCFGParams(replace_mask=0.9, replace_random=0.2, teacher_width=100, teacher_heads=8)
    assert "replace_mask + replace_random" in str(err.value) and "multiple" not in str(err.value)
