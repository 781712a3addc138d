"""Options of one-shot and progressive (issue 19): the distillation loss's options and schedules,
phases that end early (Phase.until) and progressive's switch: saturate, with exact resumption."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdbench import MLP, DistillOptions, Method, Phase, Plateau, distill_phase, distillation_loss, logits
from kdbench.api import Batch, Clock
from kdbench.run.budget import allot_steps
from kdbench.run.engine import PlannedPhase, check_early_endings, end_phase_early, train
from kdbench.plugins import load_plugins
from kdbench.run.runner import build_task, prepare, train_teacher
from kdbench.run.stop import StopRequested, clear_stop, request_stop
from kdbench.run.store import teacher_dir
from kdbench.run.pricing import load_suite
from kdbench.run.teachers import CachedTeacher
from kdbench.testing import TinyTask, check_method, run_method

from conftest import SUITES, kdbench, tiny_suite, without_time

# the ids of suites/quickstart.yaml's runs on the main branch before these options existed
# kdbench 0.2: a budget in steps of a method is identified by its FLOPs (issue 27), which moved these ids
QUICKSTART_IDS = {"12b21ad34682", "3aef21d78f8c", "535a00538e75", "54180714a7bd", "5c63fed1164b", "863287084d14",
                  "a26eefb3c00b", "b23ec50b224f", "c00c0617e7ea", "cbfc47e40e6f", "d18d3486296f", "f3ef5009f18f"}


def logits_pair(seed=0, rows=64, classes=4):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, classes, generator=g) * 2, torch.randn(rows, classes, generator=g) * 2,
            torch.randint(0, classes, (rows,), generator=g))


# ------------------------------------------------------------------ the loss


def test_default_loss_is_hintons_forward_kl_bit_for_bit():
    s, t, y = logits_pair()
    for temperature in (1.0, 2.5):  # the formula kdbench used before these options, written out
        before = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                          reduction="batchmean") * temperature ** 2
        assert torch.equal(distillation_loss(s, t, y, temperature), before)


def test_reverse_kl_is_kl_of_student_from_teacher():
    s, t, y = logits_pair(1)
    for temperature in (1.0, 3.0):
        ps, pt = (torch.softmax(v.double() / temperature, -1) for v in (s, t))
        oracle = (ps * (ps.log() - pt.log())).sum(-1).mean() * temperature ** 2
        got = distillation_loss(s, t, y, temperature, divergence="reverse")
        assert got.item() == pytest.approx(oracle.item(), rel=1e-5)
        forward = distillation_loss(s, t, y, temperature)
        assert abs(got.item() - forward.item()) > 1e-3  # the two divergences differ on these logits
    assert distillation_loss(t, t, y, 2.0, divergence="reverse").item() == pytest.approx(0.0, abs=1e-6)


def test_temperature_zero_trains_on_the_teachers_argmax():
    s, t, y = logits_pair(2)
    hard = t.argmax(-1)
    oracle = -torch.log_softmax(s.double(), -1)[torch.arange(len(s)), hard].mean()
    assert distillation_loss(s, t, y, 0.0).item() == pytest.approx(oracle.item(), rel=1e-6)
    mixed = distillation_loss(s, t, y, 0.0, label_weight=0.25)
    oracle_mixed = 0.75 * oracle - 0.25 * torch.log_softmax(s.double(), -1)[torch.arange(len(s)), y].mean()
    assert mixed.item() == pytest.approx(oracle_mixed.item(), rel=1e-6)


def test_schedules_follow_the_clock():
    """The phase's loss at run fraction f is Hinton's loss at the temperature and label weight the
    schedule gives at f: linear and cosine meet at the middle; cosine at a quarter is analytic."""
    torch.manual_seed(0)
    student, teacher = MLP(6, 8, 3), MLP(6, 8, 3)
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g))
    with torch.no_grad():
        s, t = student(batch.inputs), teacher(batch.inputs)
    clock = Clock(total_steps=100)
    quarter = 1 + (4 - 1) * 0.5 * (1 + math.cos(math.pi / 4))  # cosine from 4 to 1 after a quarter
    cases = [("linear", 50, 2.5, 0.3), ("cosine", 50, 2.5, 0.3), ("cosine", 25, quarter, None), ("linear", 0, 4.0, 0.1)]
    for shape, step, temperature, weight in cases:
        options = DistillOptions(temperature=4.0, temperature_end=1.0, temperature_schedule=shape, label_weight=0.1,
                                 label_weight_end=0.5, label_weight_schedule=shape)
        phase = distill_phase("p", student, lambda: teacher, options=options, clock=clock)
        clock.step = step
        weight = weight if weight is not None else 0.5 + (0.1 - 0.5) * 0.5 * (1 + math.cos(math.pi / 4))
        with torch.no_grad():
            expected = distillation_loss(s, t, batch.labels, temperature, weight).item()
            assert phase.loss(batch).item() == pytest.approx(expected, rel=1e-6), (shape, step)
    with pytest.raises(ValueError, match="clock"):
        distill_phase("p", student, lambda: teacher, options=options)


@pytest.mark.parametrize("params, field", [
    ({"temperature": 0, "divergence": "reverse"}, "divergence"),
    ({"temperature": 0, "temperature_schedule": "linear", "temperature_end": 1.0}, "temperature_schedule"),
    ({"temperature_end": 2.0}, "temperature_end"),
    ({"temperature_schedule": "cosine"}, "temperature_end"),
    ({"label_weight_schedule": "linear"}, "label_weight_end"),
    ({"label_weight_end": 0.5}, "label_weight_end"),
    ({"divergence": "js"}, "divergence"),
])
def test_meaningless_combinations_exit_2_naming_the_field(write_suite, params, field):
    methods = f"  - name: one-shot\n    params: {json.dumps(params)}"
    result = kdbench("validate", write_suite(tiny_suite(methods=methods)), expect=2)
    assert "methods[0].params" in result.output and field in result.output


def test_new_options_keep_the_quickstart_run_ids(write_suite):
    loaded, _ = load_suite(SUITES / "quickstart.yaml", load_plugins)
    assert {r.run_id for r in loaded.runs} == QUICKSTART_IDS
    # an option spelled at its default is the same run; another value is another run
    ids = {}
    for key, params in (("none", "{}"), ("defaults", "{divergence: forward, temperature_schedule: constant}"),
                        ("reverse", "{divergence: reverse}")):
        path = write_suite(tiny_suite(methods=f"  - name: one-shot\n    params: {params}"), f"{key}.yaml")
        (run,) = load_suite(path, load_plugins)[0].runs
        ids[key] = run.run_id
    assert ids["none"] == ids["defaults"] != ids["reverse"]


@pytest.mark.parametrize("params", [
    {"temperature": 0},
    {"divergence": "reverse", "temperature": 2.0},
    {"temperature": 3.0, "temperature_schedule": "cosine", "temperature_end": 1.0, "label_weight": 0.1,
     "label_weight_schedule": "linear", "label_weight_end": 0.6},
], ids=["hard", "reverse", "schedules"])
def test_one_shot_options_pass_check_method(params):
    check_method("one-shot", params, bad_params=[{"temperature": 0, "divergence": "reverse"},
                                                 {"temperature_schedule": "constant", "temperature_end": 2.0}])


def test_each_option_learns_tiny_parity(run_method):
    base = run_method("one-shot", budget_flops=8e6)
    for params in ({"temperature": 0}, {"divergence": "reverse"},
                   {"temperature": 2.0, "temperature_schedule": "linear", "temperature_end": 1.0}):
        result = run_method("one-shot", params, budget_flops=8e6)
        assert result.status == "finished" and result.metric() >= 0.9, params
        assert result.flops == base.flops  # the options cost nothing extra per step
        assert result.curve != base.curve  # and do change the training


# ------------------------------------------------------------------ phases that end early


def planned(steps, asked, costs, untils=()):
    out = []
    for i, (n, a, c) in enumerate(zip(steps, asked, costs)):
        phase = Phase(f"p{i}", loss=lambda b: None, steps=a, until=(lambda c, l: True) if i in untils else None)
        out.append(PlannedPhase(phase, n, c))
    return out


def test_unused_steps_are_allotted_as_if_the_phase_had_asked_for_fewer():
    # phases asking 20 and 10 steps, one with a share, then the last; a budget of 24 steps + a bit
    cost, budget = 100, 24 * 100 + 50
    phases = [Phase("a", loss=None, steps=20), Phase("b", loss=None, steps=10), Phase("c", loss=None, share=0.0),
              Phase("d", loss=None)]
    plan = [PlannedPhase(ph, n, cost) for ph, n in zip(phases, allot_steps(phases, [cost] * 4, budget))]
    assert [p.steps for p in plan] == [20, 4, 0, 0]
    end_phase_early(plan, 0, 7)
    shorter = [Phase("a", loss=None, steps=7), *phases[1:]]
    assert [p.steps for p in plan] == allot_steps(shorter, [cost] * 4, budget) == [7, 10, 0, 7]


def test_a_phase_that_may_end_early_must_cost_what_its_receivers_cost():
    check_early_endings(planned([5, 5, 5], [5, None, None], [10, 99, 10], untils=[0]))  # a share phase takes none
    with pytest.raises(ValueError, match="p0.*p2"):
        check_early_endings(planned([5, 5, 5], [5, None, None], [10, 10, 11], untils=[0]))
    with pytest.raises(ValueError, match="p0.*p1"):
        check_early_endings(planned([5, 5, 5], [5, 5, None], [10, 11, 10], untils=[0]))


class EndsEarly(Method):
    """Labels in three phases; the first ends once 7 of its steps are done (if ``until``)."""

    name, version, needs_teacher = "ends-early", "1", False
    until = True

    def phases(self, ctx, params):
        def loss(b):
            return F.cross_entropy(logits(ctx.student, b), b.labels)

        until = (lambda clock, _loss: clock.phase_step == 7) if self.until else None
        return [Phase("a", loss=loss, steps=20, cost_key="x", until=until), Phase("b", loss=loss, steps=10, cost_key="x"),
                Phase("c", loss=loss, cost_key="x")]


class RunsOn(EndsEarly):
    name, until = "runs-on", False


def test_a_phase_ends_early_and_the_run_keeps_its_steps_and_flops(run_method):
    cost = run_method(RunsOn, budget_flops=1e5, teacher="probe").phase_step_flops[0]
    budget = 24 * cost + cost // 2  # a, then 4 of b's 10 steps, nothing left for c
    planned_run, ended = (run_method(m, budget_flops=budget, teacher="probe", eval_points=1)
                          for m in (RunsOn, EndsEarly))
    assert planned_run.phase_steps == [20, 4, 0]
    assert ended.phase_steps == [7, 10, 7]
    assert ended.flops == planned_run.flops == 24 * cost
    # a point at every boundary as it moved (and at the planned one, 20, now inside c)
    assert [(p["step"], p["phase"]) for p in ended.curve] == [(0, "a"), (7, "a"), (17, "b"), (20, "c"), (24, "c")]


# ------------------------------------------------------------------ switch: saturate


def test_plateau_fires_where_the_windowed_means_stop_improving():
    rng = np.random.default_rng(0)
    losses = np.concatenate([np.exp(-np.arange(60) / 15), np.full(80, np.exp(-4))]) + rng.normal(0, 1e-3, 140)
    patience, tolerance = 10, 0.02
    oracle = next(t for t in range(2 * patience, len(losses) + 1)
                  if losses[t - 2 * patience:t - patience].mean() - losses[t - patience:t].mean()
                  <= tolerance * abs(losses[t - 2 * patience:t - patience].mean()))
    info = {}
    criterion = Plateau(patience, tolerance, record=info)
    clock = Clock()
    fired = None
    for t, loss in enumerate(losses, start=1):
        clock.step = t
        if criterion(clock, float(loss)):
            fired = t
            break
    assert fired == oracle and 60 < fired < 100 and info == {"plateau_at_step": fired}


def test_progressive_saturate_passes_check_method():
    check_method("progressive", {"checkpoints": [50, 100], "switch": "saturate", "steps_per_checkpoint": 4,
                                 "patience": 1, "temperature": 0},
                 bad_params=[{"switch": "saturate", "steps_per_checkpoint": None}, {"patience": 0}])


SATURATE = """
name: saturate
seeds: [0]
budget: {steps: 150, method: one-shot}
eval: {points: 5}
tasks:
  - name: parity-mlp
    params: {n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256}
    teacher: {optimizer: adam, lr: 0.01, batch_size: 16, steps: 60, checkpoint_every: 10}
    student: {optimizer: adam, lr: 0.01, batch_size: 16}
methods:
  - name: progressive
    params: {switch: saturate, steps_per_checkpoint: 30, patience: 5, tolerance: 0.05}
"""


def saturate_job(tmp_path, state):
    """The engine job of SATURATE's run with its teacher trained (in ``tmp_path/out``), saving to ``state``."""
    (tmp_path / "suite.yaml").write_text(SATURATE)
    loaded, registry = load_suite(tmp_path / "suite.yaml", load_plugins)
    (run,) = loaded.runs
    dev, out = torch.device("cpu"), tmp_path / "out"
    train_teacher(run, run.checkpoints, registry, out, dev)
    task = build_task(run, registry, dev, out)
    teacher = CachedTeacher(teacher_dir(out, run.teacher_id), task, run.teacher_seed)
    return prepare(run, registry, task, teacher, dev, state_path=tmp_path / state).job


def plan_of(job):
    return [(p.phase.name, p.steps, dict(p.phase.info)) for p in job.plan]


@pytest.fixture(scope="module")
def saturate_reference(tmp_path_factory):
    job = saturate_job(tmp_path_factory.mktemp("saturate"), "ref.pt")
    return job, train(job)


def test_saturate_switches_on_a_plateau_within_the_budget(saturate_reference):
    job, result = saturate_reference
    steps = [p.steps for p in job.plan]
    switched = [p.phase.info["plateau_at_step"] for p in job.plan if "plateau_at_step" in p.phase.info]
    assert switched, "no checkpoint plateaued: the test needs a switch"
    assert sum(steps) == result.steps == 150 and result.flops == sum(p.steps * p.step_flops for p in job.plan)
    assert all(s <= 30 for s in steps[:-1])
    ends = np.cumsum(steps).tolist()
    for p, end in zip(job.plan, ends):  # a plateau ends its phase at that step, recorded on the curve
        if "plateau_at_step" in p.phase.info:
            assert p.phase.info["plateau_at_step"] == end and p.steps < 30
            assert {"step": end, "phase": p.phase.name} in [{"step": c["step"], "phase": c["phase"]}
                                                          for c in result.curve]


@pytest.mark.parametrize("offset", [-1, 2, 40], ids=["just-before-a-switch", "just-after-a-switch",
                                                     "well-after-a-switch"])
def test_saturate_resumes_bit_for_bit(tmp_path, saturate_reference, offset):
    reference_job, reference = saturate_reference
    first = min(p.phase.info["plateau_at_step"] for p in reference_job.plan if "plateau_at_step" in p.phase.info)
    stop_at = first + offset
    job = saturate_job(tmp_path, "state.pt")
    job.on_step = lambda clock: request_stop() if clock.step == stop_at else None
    try:
        with pytest.raises(StopRequested, match=f"stopped at step {stop_at}"):
            train(job)
    finally:
        clear_stop()
    resumed_job = saturate_job(tmp_path, "state.pt")  # a fresh process would do exactly this
    resumed = train(resumed_job)
    assert resumed.resumed_from == stop_at
    assert without_time(resumed.curve) == without_time(reference.curve)
    assert plan_of(resumed_job) == plan_of(reference_job)


def test_saturate_through_the_cli_records_the_switches(write_suite, tmp_path):
    out = tmp_path / "out"
    kdbench("run", write_suite(SATURATE), "-o", out, "-q")
    (run,) = (out / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    phases = summary["phases"]
    assert summary["status"] == "finished" and sum(p["steps"] for p in phases) == summary["steps"]
    starts = np.cumsum([0] + [p["steps"] for p in phases]).tolist()
    for p, end in zip(phases, starts[1:]):
        assert p["info"].get("plateau_at_step", end) == end
    assert any("plateau_at_step" in p["info"] for p in phases)


def test_progressive_levels_follow_the_teachers_own_curve(tmp_path):
    """checkpoints: levels picks, per level, the first stored checkpoint whose evaluation reaches it
    (checked against the teacher's checkpoints evaluated here), and passes check_method."""
    task = TinyTask(teacher={"optimizer": "adam", "lr": 0.01, "batch_size": 32, "steps": 300, "checkpoint_every": 25})
    params = {"checkpoints": "levels", "levels": [0.6, 0.9, 0.99], "switch": "fixed", "steps_per_checkpoint": 10}
    got = run_method("progressive", params, task=task, out=tmp_path)
    chosen = [(p.info["teacher_step"], p.info["level"]) for p in got.phases[:-1]]
    registry = load_plugins()
    run = got.run
    task_instance = build_task(run, registry, torch.device("cpu"), tmp_path)
    teacher = CachedTeacher(teacher_dir(tmp_path, run.teacher_id), task_instance, run.teacher_seed)
    with torch.no_grad():
        curve = {s: task_instance.evaluate(teacher.at(s))["accuracy"] for s in range(25, 300, 25)}
    expected, after = [], 0
    for level in params["levels"]:
        step = next((s for s in sorted(curve) if s >= after and curve[s] >= level), None)
        if step is None:
            break
        if expected and expected[-1][0] == step:
            expected[-1] = (step, level)
        else:
            expected.append((step, level))
        after = step
    assert chosen == expected and len(chosen) >= 1
    assert all(p.info["teacher_metric"] == curve[p.info["teacher_step"]] for p in got.phases[:-1])
    check_method("progressive", {**params, "levels": [0.5], "every": 50, "steps_per_checkpoint": 4},
                 bad_params=[{"levels": None}, {"checkpoints": "all"}, {"levels": []}])
