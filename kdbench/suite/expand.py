"""A suite file read, validated against the loaded plugins, and expanded into runs with stable ids
(:mod:`kdbench.suite.identity`)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import torch
from pydantic import ValidationError

from kdbench.api import Recipe
from kdbench.errors import UserError, without_cpp_frames
from kdbench.inputs import hash_file, hash_params, resolve_params, resolve_path
from kdbench.plugins import Registry
from kdbench.streams import VERSION as STREAMS_VERSION
from kdbench.suite.claims import validate_claims
from kdbench.suite.file import excerpt, read_suite_file
from kdbench.suite.identity import Run, run_identity
from kdbench.suite.model import Budget, ResolvedBudget, Suite
from kdbench.suite.schema import format_validation_error, unknown_name, validate_strictly
from kdbench.suite.tune import TunePlan, resolve_tune


@dataclass
class LoadedSuite:
    """A validated suite, its source path, and its runs."""

    suite: Suite
    path: Path
    runs: list[Run] = field(default_factory=list)
    plugin_paths: tuple = ()  # every plugin file loaded: the command line's, then the suite's
    tune: Optional[TunePlan] = None  # the validated tune: block (kdbench.suite.tune)

    @property
    def output(self) -> Path:
        return Path(self.suite.output or f"out/{self.suite.name}")


def parse_suite(path: Path) -> Suite:
    data = read_suite_file(path)
    try:
        return validate_strictly(Suite, data)
    except ValidationError as err:
        raise UserError(format_validation_error(path, err, model=Suite)) from err


def _validate_params(path: Path, where: str, model, params: dict):
    try:
        return validate_strictly(model, params)
    except ValidationError as err:
        raise UserError(format_validation_error(path, err, where, model)) from err


def _recipe(path: Path, where: str, default: Recipe, overrides: dict) -> Recipe:
    _validate_params(path, where, Recipe, overrides)  # names the bad key against the recipe's fields
    return _validate_params(path, where, Recipe, {**default.model_dump(), **overrides})


def apply_preset(path: Path, i: int, cls, entry) -> tuple[dict, dict, dict]:
    """Task entry ``i``'s params, teacher and student overrides with its ``preset:`` (a name of the
    task's ``presets``) applied under them; the ``preset`` key itself is gone, so a preset spelled
    out param by param gives the same runs and run ids. A UserError names an unknown preset."""
    params = dict(entry.params)
    name = params.pop("preset", None)
    if name is None:
        return params, entry.teacher, entry.student
    presets = cls.presets
    if not isinstance(name, str) or name not in presets:
        allowed = ", ".join(presets) if presets else f"none: task {entry.name} has no presets"
        raise UserError(f"{path}: tasks[{i}].params.preset: unknown preset {name!r} of task {entry.name} "
                        f"(allowed: {allowed})")
    preset = presets[name]
    return ({**preset.get("params", {}), **params}, {**preset.get("teacher", {}), **entry.teacher},
            {**preset.get("student", {}), **entry.student})


def check_state_dict(path: Path, where: str, file: Path) -> Path:
    """``file`` resolved, if it holds a PyTorch state dict (loaded with weights_only=True)."""
    if not file.is_file():
        raise UserError(f"{path}: {where}: no such file {str(file)!r}")
    try:
        with warnings.catch_warnings():  # torch warns of a pickled file's protocol before refusing it: ours says it
            warnings.simplefilter("ignore")
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: {where}: {file} is not a PyTorch state dict ({type(exc).__name__}); give a file "
                        "saved with torch.save(model.state_dict())") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: {where}: {file} is not a PyTorch state dict (name -> tensor)")
    return file.resolve()


def expand(suite: Suite, path: Path, registry: Registry,
           price: Optional[Callable[[Run, Registry], float]] = None) -> list[Run]:
    """Validate every plugin reference and param against ``registry``; return the runs. A budget in
    steps of a method is priced in FLOPs by ``price`` (:func:`kdbench.run.pricing.price_budget`; needed
    only for such budgets)."""
    path = Path(path)
    tasks, methods = [], []
    for i, entry in enumerate(suite.tasks):
        if entry.name not in registry.tasks:
            raise unknown_name(path, f"tasks[{i}].name", "task", entry.name, list(registry.tasks),
                               registry.failure_lines())
        cls = registry.tasks[entry.name].cls
        where = f"tasks[{i}].params"
        given, teacher_given, student_given = apply_preset(path, i, cls, entry)
        raw = resolve_params(given, cls.Params, path.parent, f"{path}: {where}")
        params = _validate_params(path, where, cls.Params, raw)
        inputs = hash_params(params, f"{path}: {where}")
        task = cls()
        teacher = _recipe(path, f"tasks[{i}].teacher", task.teacher_recipe(params), teacher_given)
        student = _recipe(path, f"tasks[{i}].student", task.student_recipe(params), student_given)
        budget = entry.budget or suite.budget
        if budget is None:
            raise UserError(f"{path}: budget: missing (give it for the suite or for tasks[{i}])")
        checkpoint = None
        if entry.teacher_checkpoint is not None:
            where = f"tasks[{i}].teacher_checkpoint"
            file = Path(resolve_path(entry.teacher_checkpoint, path.parent, f"{path}: {where}"))
            checkpoint = str(check_state_dict(path, where, file))
            inputs["teacher_checkpoint"] = hash_file(file, f"{path}: {where}")
        tasks.append((entry, cls, params, teacher, student, budget, checkpoint, inputs))
    labels = set()
    for i, entry in enumerate(suite.methods):
        if entry.name not in registry.methods:
            raise unknown_name(path, f"methods[{i}].name", "method", entry.name, list(registry.methods),
                               registry.failure_lines())
        label = entry.label or entry.name
        if label in labels:
            raise UserError(f"{path}: methods[{i}].label: {label!r} appears twice; give each entry a distinct label")
        labels.add(label)
        cls = registry.methods[entry.name].cls
        methods.append((entry, cls, _validate_params(path, f"methods[{i}].params", cls.Params, entry.params)))
    task_labels = [t[0].label or t[0].name for t in tasks]
    if len(set(task_labels)) != len(task_labels):
        raise UserError(f"{path}: tasks: two entries share the label {task_labels}; give each a distinct label")
    for i, (_, _, _, _, _, budget, _, _) in enumerate(tasks):
        if budget.method is not None and budget.method not in labels and budget.method not in registry.methods:
            raise unknown_name(path, "budget.method", "method", budget.method, sorted(labels | set(registry.methods)),
                               registry.failure_lines())

    runs = []
    for (entry, tcls, tparams, trecipe, srecipe, budget, checkpoint, inputs) in tasks:
        task_runs, resolved = [], _resolved_budget(budget, methods, registry)
        for tseed in suite.teacher_seeds:
            for (mentry, mcls, mparams) in methods:
                try:
                    checkpoints = tuple(sorted(set(mcls().checkpoints(mparams, trecipe))))
                except ValueError as exc:
                    i = next(i for i, e in enumerate(suite.methods) if e is mentry)
                    raise UserError(f"{path}: methods[{i}].params: {exc}") from exc
                for seed in suite.seeds:
                    run = Run(run_id="", suite=suite.name, task=entry.name, task_label=entry.label or entry.name,
                              task_version=str(tcls.version), task_params=tparams,
                              teacher_seed=tseed, teacher_recipe=trecipe, teacher_checkpoint=checkpoint,
                              checkpoints=checkpoints, student_recipe=srecipe, method=mentry.name,
                              method_label=mentry.label or mentry.name, method_version=str(mcls.version),
                              method_params=mparams, seed=seed, budget=resolved,
                              eval=suite.eval, streams=STREAMS_VERSION, inputs=inputs,
                              save_every_s=suite.save_every_s, keep_students=suite.keep_students,
                              teacher_logits=logit_option(entry, mcls))
                    task_runs.append(run)
        if resolved.method is not None:
            task_runs = _priced(task_runs, price, registry, path)
        runs += [replace(run, run_id=run_identity(run)) for run in task_runs]
    _check_distinct(runs, path)
    return runs


def logit_option(entry, method_cls) -> Optional[dict]:
    """A run's ``teacher_logits`` (``{"top_k": K}``): the task entry's, for a method that reads the cached
    teacher on the data's batches; None otherwise (a method without a teacher, or one whose teacher scores
    sequences generated at every step (``Method.generates``), which no cache could serve, keeps the run id
    it has without the option)."""
    if entry.teacher_logits is None or not method_cls.needs_teacher or getattr(method_cls, "generates", False):
        return None
    return {"top_k": entry.teacher_logits.top_k}


def _check_distinct(runs: list[Run], path: Path) -> None:
    """A UserError if two entries of the suite give the same runs (labels are not part of a run id)."""
    seen: dict[str, Run] = {}
    for run in runs:
        other = seen.setdefault(run.run_id, run)
        if other is not run:
            section, a, b = (("methods", other.method_label, run.method_label) if other.method_label != run.method_label
                             else ("tasks", other.task_label, run.task_label))
            raise UserError(f"{path}: {section}: {a!r} and {b!r} are the same runs (the same plugin, params and "
                            "budget under two labels); drop one, or give it other params")


def _resolved_budget(budget: Budget, methods: list, registry: Registry) -> ResolvedBudget:
    """``budget`` as its runs hold it: a budget in steps of a method resolved to the method entry it
    names (a label of the suite, else a plugin with its default params), params included."""
    if budget.method is None:
        return ResolvedBudget(flops=budget.flops, student_steps=budget.student_steps, counts=budget.counts)
    name, params = next(((e.name, mp) for e, _, mp in methods if (e.label or e.name) == budget.method),
                        (budget.method, registry.methods[budget.method].cls.Params()))
    return ResolvedBudget(steps=budget.steps, method=name, method_params=params,
                          counts=budget.counts)


def _priced(runs: list[Run], price: Optional[Callable[[Run, Registry], float]], registry: Registry,
            path: Path) -> list[Run]:
    """``runs`` (one task's) with their budget in steps of a method priced in FLOPs by ``price``, once:
    the FLOPs, not the params of the method that defined them, are part of each run's identity."""
    if price is None:
        raise ValueError("a budget in steps of a method needs a price function (kdbench.run.pricing)")
    budget = runs[0].budget
    reference = next((r for r in runs if r.method == budget.method and r.method_params == budget.method_params),
                     replace(runs[0], method=budget.method, method_params=budget.method_params))
    try:
        flops = price(reference, registry)
    except UserError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise UserError(f"{path}: {exc}") from exc  # the file, for a message from the task or a size
    except Exception as exc:
        raise UserError(f"{path}: budget: {budget.steps} steps of {budget.method} could not be priced in FLOPs "
                        f"({type(exc).__name__}: {without_cpp_frames(exc)})") from exc
    priced = budget.model_copy(update={"priced_flops": float(flops)})
    return [replace(run, budget=priced) for run in runs]


def check_plugin_file(file, where: str) -> None:
    """A UserError unless ``file`` is an existing Python (.py) file: ``where`` names who gave it."""
    file = Path(file)
    if not file.is_file():
        raise UserError(f"{where}: no such plugin file {excerpt(str(file))}")
    if file.suffix != ".py":
        raise UserError(f"{where}: {excerpt(str(file))} is not a Python file; a plugin file ends in .py")


OUTPUT_RULE = ("a suite's output is a folder inside the working directory, given relative to it without '..'; "
               "to write anywhere else, give -o/--output on the command line")


def check_output(path: Path, output: Optional[str]) -> None:
    """A UserError naming the suite file unless its ``output:`` stays inside the working directory: a
    relative path without ``..`` (or a leading ``~``) that no symlink leads out of. A suite file may come
    from anyone; only the command line (``-o``) may send results elsewhere."""
    if not output:
        return
    given = Path(output)
    if given.is_absolute() or output.startswith("~"):
        why = "starts at the home folder" if output.startswith("~") else "is an absolute path"
    elif ".." in given.parts:
        why = "climbs out with '..'"
    else:
        here = Path.cwd().resolve()
        target = (here / given).resolve()
        if target == here or here in target.parents:
            return
        why = f"leads to {excerpt(str(target))} through a symlink"
    raise UserError(f"{path}: output: {excerpt(output)} {why}; {OUTPUT_RULE}")


def read_suite(path: Path, registry_factory, extra_plugins: tuple = (),
               price: Optional[Callable[[Run, Registry], float]] = None) -> tuple[LoadedSuite, Registry]:
    """Parse ``path``, load plugins (built-ins, entry points, the suite's ``plugins:``
    and ``extra_plugins``), and expand into runs (``price``: see :func:`expand`). Raises
    UserError on any bad input. :func:`kdbench.run.pricing.load_suite` calls it with the pricer."""
    path = Path(path)
    suite = parse_suite(path)
    check_output(path, suite.output)
    plugin_paths = [str((path.parent / p).resolve()) if not Path(p).is_absolute() else p for p in suite.plugins]
    for i, p in enumerate(plugin_paths):
        check_plugin_file(p, f"{path}: plugins[{i}]")
    for p in extra_plugins:
        check_plugin_file(p, "--plugin")
    registry = registry_factory(tuple(extra_plugins) + tuple(plugin_paths))
    failed = [p for p in plugin_paths + list(extra_plugins) if str(p) in registry.failures]
    if failed:
        raise UserError(f"{path}: plugins: {failed[0]} failed to load: {registry.failures[str(failed[0])]}")
    if suite.launcher.name not in registry.launchers:
        raise unknown_name(path, "launcher.name", "launcher", suite.launcher.name, list(registry.launchers),
                           registry.failure_lines())
    _validate_params(path, "launcher.options", registry.launchers[suite.launcher.name].cls.Params,
                     suite.launcher.options)
    runs = expand(suite, path, registry, price)
    tune = resolve_tune(suite, path, registry, runs)
    validate_claims(suite, path)
    return LoadedSuite(suite, path, runs, tuple(extra_plugins) + tuple(plugin_paths), tune), registry
