"""Fair tuning: every tuned method gets the same number of trials, chosen on dev seeds only.

:func:`kdbench.run_suite` runs a suite with a ``tune:`` block (:mod:`kdbench.suite.tune`)
in two stages. The sweep: one Optuna study per (task, method), stored in a
file-locked journal in the results folder (``OUT/tuning/optuna.journal``, which
several processes or Slurm jobs on a shared file system can use). A trial is
ordinary runs: its settings on top of the method's params, for every dev seed and
dev teacher seed (``tune.dev_teacher_seeds``; same run ids, cache, resume and launchers
as any run); it scores the mean of its runs' objectives
(:func:`kdbench.tuning.records.run_objective`). The dev teachers are trained once each,
with every checkpoint the space can read (:meth:`Sweep.teacher_checkpoints`). Then the
test runs: every method on the suite's ``seeds`` x ``teacher_seeds`` with the settings
of its best trial (ties: the earlier trial); an untuned method with its given params.
Settings are thus chosen on neither the students nor the teachers that are reported.

Rounds: each study still short of trials is asked ``ceil(jobs / studies left)``
trials (at least one), the round's runs go to the launcher together, and the
results are told. So at ``--jobs N`` up to N trials are in flight, and while
there are at least as many studies as jobs each study sees one trial per round
whatever ``--jobs`` is: its sampling history, hence the chosen settings, do not
depend on ``--jobs``. Each sampler is seeded per trial from ``tune.seed``, the
task, the method and the trial's number, so a sweep is reproducible and a resumed
one samples what an uninterrupted one would. On a restart, trials left running
in the journal are run again (their runs resume, or are found done) and told
before any new trial is asked; a method never gets more than ``trials`` trials.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import optuna
from optuna.trial import TrialState
from pydantic import ValidationError

from kdbench.run.store import read_json, read_run, run_dir, teacher_dir
from kdbench.suite.expand import LoadedSuite
from kdbench.suite.identity import Run, identity, short_hash
from kdbench.suite.tune import STUDENT, Dimension, apply_settings
from kdbench.tuning.records import TUNING, run_objective, settings_text, write_record

JOURNAL = "optuna.journal"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def startup_trials(trials: int) -> int:
    """Random trials TPE starts with before it models the results: a third of the budget, at least 2."""
    return max(2, trials // 3)


def _scalar(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def encode_choices(dim: Dimension) -> list:
    """A choice dimension's values as Optuna stores them: as they are, or JSON text when one is
    not a scalar (a list of checkpoint steps, a pair of betas)."""
    if all(_scalar(c) for c in dim.choices):
        return list(dim.choices)
    return [json.dumps(c) for c in dim.choices]


def decode(dim: Dimension, value):
    """A value Optuna stored for ``dim``, as the param takes it."""
    if dim.kind == "choice" and not all(_scalar(c) for c in dim.choices):
        return json.loads(value)
    return int(value) if dim.kind == "int" else value


def suggest(trial: optuna.Trial, dim: Dimension):
    """Ask ``trial`` for a value of ``dim``."""
    if dim.kind == "choice":
        return decode(dim, trial.suggest_categorical(dim.name, encode_choices(dim)))
    if dim.kind == "int":
        return trial.suggest_int(dim.name, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
    return trial.suggest_float(dim.name, dim.low, dim.high, step=dim.step, log=dim.log)


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, without the ``study.stop()`` it calls once the grid is walked: that
    works only inside ``study.optimize``, and a sweep asks and tells (never past the grid's size)."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


@dataclass
class TaskFacts:
    """What a study needs to know of its task: its metric, direction and target."""

    metric: str
    higher_is_better: bool
    target: Optional[float]


@dataclass
class MethodStudy:
    """One (task, method) study: its Optuna study, space and the runs its trials start from."""

    task: str
    method: str
    templates: dict[int, Run]  # dev teacher seed -> the method's run as the suite gives it, on that teacher
    dims: dict[str, Dimension]
    study: optuna.Study
    maximize: bool
    limit: int  # the suite's trials: a study that holds more (trials lowered since) uses its first ones

    def trials(self, *states: TrialState) -> list:
        return self.study.get_trials(deepcopy=False, states=states or None)

    def settings(self, trial) -> Optional[dict]:
        """A trial's settings, decoded; None when they were never all asked (an abandoned trial)."""
        if set(trial.params) != set(self.dims):
            return None
        return {name: decode(dim, trial.params[name]) for name, dim in self.dims.items()}

    def counted(self) -> list:
        """Trials told and counted against ``trials``: complete, or failed with all their settings;
        the first ``limit`` of them by number."""
        told = [t for t in self.trials(TrialState.COMPLETE, TrialState.FAIL) if self.settings(t) is not None]
        return sorted(told, key=lambda t: t.number)[:self.limit]

    def shown(self) -> list:
        """The counted trials and those still running with all their settings, by number."""
        running = [t for t in self.trials(TrialState.RUNNING) if self.settings(t) is not None]
        return sorted(self.counted() + running, key=lambda t: t.number)

    def chosen(self):
        """The best complete trial among the counted ones (ties: the earlier), or None."""
        done = [t for t in self.counted() if t.state == TrialState.COMPLETE]
        sign = 1 if self.maximize else -1
        return max(done, key=lambda t: (sign * t.value, -t.number)) if done else None


@dataclass
class Pending:
    """An asked trial: its settings and runs, or why the settings make no valid run."""

    study: MethodStudy
    number: int
    settings: dict
    runs: list[Run]
    error: Optional[str] = None


class Sweep:
    """The tuning stage of a suite (see the module docstring). ``launch(runs)`` executes runs
    through the suite's launcher; ``on_round(trial runs)`` is called before every round."""

    def __init__(self, loaded: LoadedSuite, registry, out: Path, tasks: dict[str, tuple[str, bool]], jobs: int,
                 log: Callable[[str], None] = lambda message: None):
        self.loaded, self.registry, self.out, self.log = loaded, registry, Path(out), log
        self.spec, self.jobs = loaded.tune.spec, max(1, jobs)
        suite = loaded.suite
        self.facts = {label: TaskFacts(metric, hib, suite.eval.target) for label, (metric, hib) in tasks.items()}
        (self.out / TUNING).mkdir(parents=True, exist_ok=True)
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(self.out / TUNING / JOURNAL)))
        self.studies: list[MethodStudy] = []
        for run in loaded.runs:
            dims = loaded.tune.spaces.get(run.method_label)
            if dims is None or any((s.task, s.method) == (run.task_label, run.method_label) for s in self.studies):
                continue
            templates = loaded.tune.dev_templates(run)
            maximize = self.spec.objective != "flops_to_target" and self.facts[run.task_label].higher_is_better
            name = f"{run.task_label}/{run.method_label}/{self._study_key(run, dims)}"
            study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                        direction="maximize" if maximize else "minimize")
            self.studies.append(MethodStudy(run.task_label, run.method_label, templates, dims, study, maximize,
                                            self.spec.trials))

    def _study_key(self, run: Run, dims: dict[str, Dimension]) -> str:
        """What makes two sweeps the same: the method's run without its seeds, the space and the
        protocol, dev seeds and dev teacher seeds included (not ``trials``: raising it extends a sweep)."""
        base = {k: v for k, v in identity(run).items() if k not in ("seed", "teacher_seed")}
        protocol = self.spec.model_dump(exclude={"trials", "space"})
        return short_hash([base, {n: d.spec() for n, d in dims.items()}, protocol])

    # ------------------------------------------------------------ trials

    def _pending(self, study: MethodStudy, number: int, settings: dict) -> Pending:
        try:
            runs = [apply_settings(template, settings, seed, self.registry)
                    for template in study.templates.values() for seed in self.spec.dev_seeds]
        except (ValidationError, ValueError) as exc:
            return Pending(study, number, settings, [], f"settings make no valid run: {' '.join(str(exc).split())}")
        return Pending(study, number, settings, runs)

    def _sampler(self, study: MethodStudy, number: int) -> optuna.samplers.BaseSampler:
        """The sampler that asks trial ``number``: seeded per trial, except the grid sampler,
        whose seed shuffles the grid it walks (trial k takes the k-th point): per study."""
        grid = self.spec.sampler == "grid"
        text = f"kdbench-tune:{self.spec.seed}:{study.task}:{study.method}" + ("" if grid else f":{number}")
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        if grid:
            return GridSampler({n: encode_choices(d) if d.kind == "choice" else d.grid()
                                for n, d in study.dims.items()}, seed=seed)
        if self.spec.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(self.spec.trials))

    def _ask(self, study: MethodStudy) -> Pending:
        study.study.sampler = self._sampler(study, len(study.trials()))
        trial = study.study.ask()
        return self._pending(study, trial.number, {name: suggest(trial, dim) for name, dim in study.dims.items()})

    def _resumed(self) -> list[Pending]:
        """Trials an earlier, interrupted sweep left running: run again, or failed when their
        settings were never all asked (those do not count)."""
        pending = []
        for study in self.studies:
            for trial in study.trials(TrialState.RUNNING):
                settings = study.settings(trial)
                if settings is None:
                    study.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                else:
                    pending.append(self._pending(study, trial.number, settings))
        return pending

    def _round(self) -> list[Pending]:
        """Ask the next round's trials (see the module docstring)."""
        trials = self.spec.trials
        left = {id(s): trials - len(s.counted()) - len(s.trials(TrialState.RUNNING)) for s in self.studies}
        active = [s for s in self.studies if left[id(s)] > 0]
        per = math.ceil(self.jobs / len(active)) if active else 0
        return [self._ask(s) for s in active for _ in range(min(per, left[id(s)]))]

    def _tell(self, p: Pending) -> None:
        values, error = [], p.error
        facts = self.facts[p.study.task]
        for run in p.runs if error is None else []:
            value, error = run_objective(read_run(run_dir(self.out, run.run_id)), self.spec.objective, facts.target)
            if error is not None:
                break
            values.append(value)
        where = f"tuning {p.study.task} / {p.study.method}: trial {p.number}"
        if error is None:
            mean = sum(values) / len(values)
            p.study.study.tell(p.number, mean, skip_if_finished=True)
            self.log(f"{where}: {self.spec.objective} {mean:.4g} ({settings_text(p.settings)})")
        else:
            p.study.study.tell(p.number, state=TrialState.FAIL, skip_if_finished=True)
            self.log(f"{where}: failed ({error}); it counts as one of the {self.spec.trials} trials")

    def _play(self, batch: list[Pending], launch: Callable[[list[Run]], list],
              on_round: Callable[[list[Run]], None]) -> None:
        runs = list({r.run_id: r for p in batch for r in p.runs}.values())
        on_round(self.trial_runs())
        if runs:
            launch(runs)
        for p in batch:
            self._tell(p)
        self.write_records()

    def run(self, launch: Callable[[list[Run]], list], on_round: Callable[[list[Run]], None] = lambda runs: None
            ) -> list[Run]:
        """Run the sweep to ``trials`` counted trials per study (resuming an interrupted one); return
        the suite's test runs with the chosen settings. ``on_round`` gets the trial runs (those
        about to run included) before each round."""
        total = len(self.studies) * self.spec.trials
        done = sum(len(s.counted()) for s in self.studies)
        self.log(f"tuning: {len(self.studies)} method(s) x {self.spec.trials} trials on dev seeds "
                 f"{self.spec.dev_seeds} on dev teacher seeds {self.spec.dev_teacher_seeds} ({self.spec.objective}, "
                 f"{self.spec.sampler}); {done} of {total} trials done")
        batch = self._resumed() or self._round()
        while batch:
            self._play(batch, launch, on_round)
            batch = self._round()
        runs = self.test_runs()
        self.write_records(runs)
        return runs

    # ------------------------------------------------------------ results

    def test_runs(self) -> list[Run]:
        """The suite's runs on its test seeds: tuned methods with their chosen settings."""
        chosen = {}
        for study in self.studies:
            best = study.chosen()
            chosen[(study.task, study.method)] = None if best is None else study.settings(best)
        out = []
        for run in self.loaded.runs:
            settings = chosen.get((run.task_label, run.method_label))
            out.append(run if settings is None else apply_settings(run, settings, run.seed, self.registry))
        return out

    def trial_runs(self) -> list[Run]:
        """The runs of every trial asked so far, each once (the manifest's ``tuning_run_ids``)."""
        runs = {}
        for study in self.studies:
            for trial in study.shown():
                runs.update((r.run_id, r) for r in self._pending(study, trial.number, study.settings(trial)).runs)
        return list(runs.values())

    def teacher_checkpoints(self) -> dict[str, set[int]]:
        """Per dev teacher id, the checkpoints the trials may read: every combination of the method
        params' finite values (choices, stepped ranges, small int ranges; a float range's ends),
        so each dev teacher is trained once with all of them. Best effort: a trial that reads one
        missing here has its teacher retrained (deterministically) with it. The test teachers are
        trained with the test runs, with the checkpoints the chosen settings read."""
        wanted: dict[str, set[int]] = {}
        for study in self.studies:
            if not self.registry.methods[next(iter(study.templates.values())).method].cls.needs_teacher:
                continue
            values = {n: _candidates(d) for n, d in study.dims.items() if not n.startswith(STUDENT)}
            for template in study.templates.values():
                steps = wanted.setdefault(template.teacher_id, set())
                for combo in itertools.islice(itertools.product(*values.values()), 4096):
                    try:
                        steps.update(apply_settings(template, dict(zip(values, combo)), 0, self.registry).checkpoints)
                    except (ValidationError, ValueError):
                        continue
        return wanted

    def write_records(self, test_runs: Optional[list[Run]] = None) -> None:
        """Write every study's record (:mod:`kdbench.tuning.records`); with ``test_runs``, the
        chosen settings and the test runs that use them."""
        for study in self.studies:
            write_record(self.out, self._record(study, test_runs))

    def _record(self, study: MethodStudy, test_runs: Optional[list[Run]]) -> dict:
        facts, spec = self.facts[study.task], self.spec
        trials = []
        for trial in study.shown():
            settings = study.settings(trial)
            p = self._pending(study, trial.number, settings)
            runs = []
            for run in p.runs:
                folder = read_run(run_dir(self.out, run.run_id))
                value, _ = run_objective(folder, spec.objective, facts.target)
                runs.append({"run_id": run.run_id, "seed": run.seed, "teacher_seed": run.teacher_seed,
                             "status": folder.status if folder.problem is None else "unreadable",
                             "objective": value, "flops": (folder.summary or {}).get("flops")})
            state = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed"}.get(trial.state, "running")
            error = p.error or next((f"run {r['run_id']} {r['status']}" for r in runs if r["objective"] is None), None)
            trials.append({"number": trial.number, "state": state, "settings": settings, "runs": runs,
                           "objective": trial.value if state == "complete" else None,
                           "error": error if state == "failed" else None})
        best = study.chosen() if len(study.counted()) >= spec.trials else None
        record = {
            "task": study.task, "method": study.method, "study": study.study.study_name,
            "protocol": {"trials": spec.trials, "dev_seeds": spec.dev_seeds,
                         "dev_teacher_seeds": spec.dev_teacher_seeds,
                         "teacher_seeds": list(self.loaded.suite.teacher_seeds), "objective": spec.objective,
                         "sampler": spec.sampler, "seed": spec.seed, "metric": facts.metric,
                         "maximize": study.maximize, "target": facts.target,
                         "dev_teachers": self._dev_teachers(study)},
            "space": {n: d.spec() for n, d in study.dims.items()}, "trials": trials,
            "chosen": None if best is None else {"trial": best.number, "settings": study.settings(best),
                                                 "objective": best.value},
        }
        if test_runs is not None:
            record["test_run_ids"] = [r.run_id for r in test_runs
                                      if (r.task_label, r.method_label) == (study.task, study.method)]
        return record

    def _dev_teachers(self, study: MethodStudy) -> list[dict]:
        """The cached dev teachers ``study``'s trials read, as their folders record them (FLOPs None
        until trained; ``given``: a teacher loaded, not trained); none for a method without a cached teacher."""
        if not self.registry.methods[next(iter(study.templates.values())).method].cls.needs_teacher:
            return []
        teachers = []
        for seed, template in study.templates.items():
            summary = read_json(teacher_dir(self.out, template.teacher_id) / "summary.json")
            summary = summary if isinstance(summary, dict) and summary.get("status") == "finished" else {}
            teachers.append({"teacher_id": template.teacher_id, "teacher_seed": seed, "flops": summary.get("flops"),
                             "given": bool(summary.get("given"))})
        return teachers


def _candidates(dim: Dimension) -> list:
    if dim.kind == "choice" or dim.step is not None:
        return dim.grid()
    if dim.kind == "int" and dim.high - dim.low <= 64:
        return list(range(int(dim.low), int(dim.high) + 1))
    return [int(dim.low), int(dim.high)] if dim.kind == "int" else [dim.low, dim.high]

