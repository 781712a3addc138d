"""``check_method``: the checks every method plugin must pass, in one call (``kdbench.testing.check_method``).

Like the tester mixins of large model libraries, it holds the contract a method
signs, so an author does not have to think of every check: params validate and
reject bad values; phases build on an MLP task and on an encoder task; every
phase's loss has a gradient on what the phase trains; FLOPs are measured for
every phase that runs; a run fits its budget; one seed gives one curve; a run
stopped half-way and resumed gives that curve too. It runs
on tiny tasks with an untrained teacher of the right shape, in seconds.
"""

from __future__ import annotations

import json
import tempfile
import typing
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from pydantic import BaseModel

from kdbench.api import Phase
from kdbench.errors import UserError
from kdbench.run.budget import measure_phases, probe_batch
from kdbench.run.engine import trainable_parameters, training_only
from kdbench.run.runner import build_task, execute_run, method_phases, uses_cached_teacher
from kdbench.run.stop import StopRequested, clear_stop, request_stop
from kdbench.run.teachers import ProbeTeacher
from kdbench.suite.schema import members
from kdbench.testing.helpers import TinyTask, resolve_run, run_method, tiny_encoder_task, torch_threads

CHECK_STEPS = 10  # the run's budget: this many steps of every phase's measured cost, summed
WRONG_VALUE = {"not": "a value of this type"}  # no int, float, str, bool, list or Literal accepts a mapping


def check_method(method: Union[str, type], params: Optional[dict] = None, *,
                 bad_params: Union[dict, Sequence[dict], None] = None, tasks: Optional[Sequence[Any]] = None,
                 budget_flops: Optional[float] = None, out: Optional[Path] = None) -> list[str]:
    """Run the standard checks on ``method`` (a registered name or a :class:`kdbench.Method` class)
    with ``params``; raise AssertionError naming the first check that fails; return one line per
    check passed.

    1. ``params`` (default: none) validate; an unknown param and a value of a wrong type (a mapping)
       for each param are rejected; every dict in ``bad_params`` is rejected with a
       :class:`kdbench.UserError` (or ValueError) naming one of its keys, when the suite is
       validated or, for checks that need the models, when the phases are built.
    2. On each task (default: the tiny MLP task and :func:`kdbench.testing.tiny_encoder_task`):
       the phases build; each loss is a scalar with a gradient, and after ``backward()`` at least
       one parameter the phase trains has a non-zero gradient; ``info`` is JSON.
    3. A run through the real engine is ``finished`` within its budget (``budget_flops``, default
       the cost of ``CHECK_STEPS`` steps of every phase), and every phase that ran has measured,
       non-zero FLOPs per step.
    4. A second run with the same seed gives the same curve (on the first task).
    5. A run stopped after half its steps and resumed from its saved state gives that curve too
       (on the first task): whatever a loss keeps between steps is a phase's ``state``.
    """

    tasks = list(tasks) if tasks is not None else [TinyTask(), tiny_encoder_task()]
    passed = [_check_params(method, params or {}, bad_params, tasks[0])]
    with tempfile.TemporaryDirectory(prefix="kdbench-check-") as tmp, torch_threads(1):  # tiny models: 1 is fastest
        out = Path(out or tmp)
        for i, task in enumerate(tasks):
            budget, line = _check_gradients(method, params, task)
            passed.append(line)
            passed.append(_check_run(method, params, task, budget_flops or budget, out, twice=i == 0))
    return passed


def _name(thing: Any) -> str:
    return thing if isinstance(thing, str) else getattr(thing, "name", repr(thing))


def _check_params(method, params: dict, bad_params, task) -> str:

    who = f"check_method({_name(method)!r})"
    try:
        registry, run = resolve_run(method, params, task=task)
    except UserError as exc:
        raise AssertionError(f"{who}: params {params} do not validate: {exc}") from exc
    model = registry.methods[run.method].cls.Params
    rejected = 0
    wrong = {"kdbench_no_such_param": 1}
    wrong.update({name: WRONG_VALUE for name, field in model.model_fields.items() if not _takes_mapping(field)})
    for key, value in wrong.items():
        try:
            resolve_run(method, {**params, key: value}, task=task)
        except UserError as exc:
            if f"methods[0].params.{key}" not in str(exc):
                raise AssertionError(f"{who}: the error for params.{key} = {value!r} does not name "
                                     f"methods[0].params.{key}: {exc}") from exc
            rejected += 1
            continue
        raise AssertionError(f"{who}: params.{key} = {value!r} was accepted; a Params model must forbid unknown "
                             f"keys (subclass kdbench.Params) and type every field")
    bad = [bad_params] if isinstance(bad_params, dict) else list(bad_params or [])
    for values in bad:
        try:
            resolve_run(method, {**params, **values}, task=task)
            _build(method, {**params, **values}, task)  # checks that need the models run in phases()
        except (UserError, ValueError) as exc:  # kdbench validate reports either, naming the method and task
            if not any(key in str(exc) for key in values):
                raise AssertionError(f"{who}: the error for bad params {values} names none of "
                                     f"{sorted(values)}: {exc}") from exc
            rejected += 1
            continue
        except Exception as exc:  # a bug's traceback, not a message naming the user's mistake
            raise AssertionError(f"{who}: bad params {values} raised {type(exc).__name__}: {exc}; a mistake in "
                                 f"params must raise kdbench.UserError (or ValueError) naming the param") from exc
        raise AssertionError(f"{who}: bad params {values} were accepted (validated, and the phases built)")
    return f"params: {params or 'defaults'} validate; {rejected} bad values rejected, each naming its field"


def _takes_mapping(field) -> bool:
    """True for a field a mapping may be valid for (dict, Any, a nested model): no wrong type to try."""
    for member in members(field.annotation):
        origin = typing.get_origin(member) or member
        if member is typing.Any or origin is dict or (isinstance(origin, type) and issubclass(origin, BaseModel)):
            return True
    return False


def _build(method, params: Optional[dict], task):
    """The run, its task instance, the student, phases and context, built with an untrained teacher."""
    registry, run = resolve_run(method, params, task=task)
    device = torch.device("cpu")
    instance = build_task(run, registry, device, None)
    teacher = ProbeTeacher(instance, run.teacher_seed, run.checkpoints) if uses_cached_teacher(registry, run.method) \
        else None
    student, phases, _ = method_phases(run, registry, instance, teacher, device, run.method, run.method_params)
    return run, instance, student, phases


def _check_gradients(method, params: Optional[dict], task) -> tuple[float, str]:
    """Every phase's loss has a gradient on what the phase trains; the budget for the run check."""
    where = f"check_method({_name(method)!r}) on {_name(task.name)}"
    try:
        run, instance, student, phases = _build(method, params, task)
    except Exception as exc:
        raise AssertionError(f"{where}: phases() failed: {type(exc).__name__}: {exc}") from exc
    if not phases or not all(isinstance(ph, Phase) for ph in phases):
        raise AssertionError(f"{where}: phases() must return a non-empty list of kdbench.Phase, got {phases!r}")
    everything = trainable_parameters(student, phases)
    batch = probe_batch(instance, run.student_recipe.batch_size, torch.device("cpu"))
    for ph in phases:
        trained = ph.params if ph.params is not None else list(student.parameters())
        with training_only(everything, ph.params):
            loss = ph.loss(batch)
            if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
                raise AssertionError(f"{where}: phase {ph.name!r}: loss(batch) must return a scalar tensor, "
                                     f"got {type(loss).__name__} {tuple(getattr(loss, 'shape', ()))}")
            if not loss.requires_grad:
                raise AssertionError(f"{where}: phase {ph.name!r}: its loss has no gradient (computed under "
                                     f"torch.no_grad(), detached, or from parameters the phase does not train)")
            loss.backward()
        moved = sum(1 for p in trained if p.grad is not None and bool(p.grad.abs().sum() > 0))
        for p in everything:
            p.grad = None
        if not moved:
            raise AssertionError(f"{where}: phase {ph.name!r}: after backward() none of the {len(trained)} parameters "
                                 f"it trains has a non-zero gradient")
        try:
            json.dumps(ph.info)
        except TypeError as exc:
            raise AssertionError(f"{where}: phase {ph.name!r}: info must be JSON data: {exc}") from exc
    costs = measure_phases(phases, student, instance, run.student_recipe.batch_size, torch.device("cpu"))
    for ph, cost in zip(phases, costs):
        if cost <= 0:
            raise AssertionError(f"{where}: phase {ph.name!r}: one step measured {cost} FLOPs; its loss must run "
                                 f"the models (matmuls, attention) where FlopCounterMode sees them")
    names = ", ".join(ph.name for ph in phases)
    return float(CHECK_STEPS * sum(costs)), f"{_name(task.name)}: phases {names} build; every loss has a gradient"


def _check_run(method, params: Optional[dict], task, budget: float, out: Path, twice: bool) -> str:
    """A run through the engine: finished, within its budget, every phase that ran measured; and,
    with ``twice``, a second run with the same seed on the same curve."""

    where = f"check_method({_name(method)!r}) on {_name(task.name)}"

    def run():
        try:
            return run_method(method, params, task=task, budget_flops=budget, teacher="probe", out=out)
        except Exception as exc:
            raise AssertionError(f"{where}: the run failed: {type(exc).__name__}: {exc}") from exc

    result = run()
    if result.status != "finished":
        raise AssertionError(f"{where}: the run ended {result.status!r}, not 'finished'")
    if not sum(result.phase_steps):
        raise AssertionError(f"{where}: a budget of {budget:.3g} FLOPs allows no step; pass a larger budget_flops")
    if not result.flops <= result.budget_flops:
        raise AssertionError(f"{where}: the run spent {result.flops} FLOPs, over its budget {result.budget_flops:.6g}")
    for ph, steps, flops in zip(result.phases, result.phase_steps, result.phase_step_flops):
        if steps and flops <= 0:
            raise AssertionError(f"{where}: phase {ph.name!r} ran {steps} steps measured at {flops} FLOPs each")
    line = f"{_name(task.name)}: a run of {sum(result.phase_steps)} steps used {result.flops:.3g} of {budget:.3g} FLOPs"
    if twice:
        if _without_time(run().curve) != _without_time(result.curve):
            raise AssertionError(f"{where}: two runs with seed 0 gave different curves: draw every random thing "
                                 f"from ctx.generator")
        line += "; a second run with the same seed gave the same curve"
        line += _check_resume(method, params, task, budget, out / "resumed", result.curve, where)
    return line


def _check_resume(method, params: Optional[dict], task, budget: float, out: Path, reference: list[dict],
                  where: str) -> str:
    """A run stopped (as Ctrl-C stops it) after half its steps, then resumed: the ``reference`` curve."""
    registry, run = resolve_run(method, params, task=task, budget_flops=budget)
    device = torch.device("cpu")

    def stop_half_way(done: int, total: int) -> None:
        if done >= max(1, total // 2):
            request_stop()

    try:
        execute_run(run, registry, out, device, progress=stop_half_way, probe_teacher=True)
    except StopRequested:
        pass
    else:
        raise AssertionError(f"{where}: a stop requested half-way through the run did not stop it")
    finally:
        clear_stop()
    outcome = execute_run(run, registry, out, device, probe_teacher=True)
    if outcome.error is not None:
        raise AssertionError(f"{where}: the resumed run failed: {outcome.error}") from outcome.error
    if _without_time(outcome.curve) != _without_time(reference):
        raise AssertionError(f"{where}: a run stopped half-way and resumed gave another curve than an "
                             f"uninterrupted one: keep what the loss carries between steps in Phase.state")
    return f"; stopped at step {outcome.summary['resumed_from']} and resumed, it gave the same curve"


def _without_time(curve: list[dict]) -> list[dict]:
    return [{k: v for k, v in point.items() if k != "time"} for point in curve]
