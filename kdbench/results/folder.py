"""A results folder read once into pandas DataFrames: the one way kdbench reads results.

::

    import kdbench
    res = kdbench.load_results("out/quickstart")
    res.runs()          # one row per run folder: identity, status, numbers, per-run curve metrics
    res.curves()        # long form: run_id, task, method, seed, teacher_seed, step, flops, phase, metrics
    res.teachers()      # one row per teacher: its summary
    res.unreadable()    # run folders that could not be read, and why
    res.claims()        # the suite's claims judged on its runs
    print(res.leaderboard(fmt="md"))

Which runs: ``kdbench run`` records the run ids of the suite it runs in
``OUT/suite.json``, and only those runs are loaded unless ``all_runs=True``; a
folder without that manifest loads every run. Runs whose configs differ other than
by seed and teacher seed have different ``config_key`` values and never share a
leaderboard row: when one method label has several configs in a task, each config
gets its own row label, ``"<label> [cfg <key>]"``. Leaderboards, figures, reports and
``kdbench status`` all read through this module (run folders through
:func:`kdbench.run.store.read_run`, so what ``kdbench run`` redoes is what is listed
here as unreadable).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import pandas as pd
import yaml

from kdbench.errors import UserError
from kdbench.results.claims import ClaimsReport, claims_report
from kdbench.results.leaderboard import FIDELITY, build_leaderboard
from kdbench.results.render import render
from kdbench.run.curves import curve_auc, flops_to_target
from kdbench.run.store import FINAL_STATUSES, MANIFEST, RunFolder, read_json, read_run, teacher_problems
from kdbench.suite.identity import SEEDS, config_identity
from kdbench.tuning.records import read_trials

IDENTITY = ("task", "method", "seed", "teacher_seed")  # the run's, beside each curve point in curves()
CURVE_COLUMNS = ("step", "samples", "flops", "phase", "time", "train_loss")
# summary.json numbers carried into runs() as they are
SUMMARY_NUMBERS = ("flops", "total_flops", "steps", "wall_time")


# ---------------------------------------------------------------- per-run numbers


def phase_boundaries(summary: dict, curve: list[dict]) -> list[float]:
    """FLOPs at which a run moves from one phase to the next (internal boundaries only).

    From the summary's phases (steps x per-step FLOPs, exactly what the engine
    charged); for folders without them, from the curve: the last point recorded
    under each phase name before the name changes."""
    out: list[float] = []
    phases = summary.get("phases") or []
    if phases and all("steps" in p and "step_flops" in p for p in phases):
        total, ends = 0.0, []
        for p in phases:
            total += float(p["steps"]) * float(p["step_flops"])
            ends.append(total)
        out = ends[:-1]
        end = total
    else:
        for a, b in zip(curve, curve[1:]):
            if a.get("phase") != b.get("phase"):
                out.append(float(a["flops"]))
        end = float(curve[-1]["flops"]) if curve else 0.0
    return sorted({x for x in out if 0 < x < end})


def config_key(config: dict) -> str:
    """A short hash of what determines a run's result (its identity, as in its run id) without
    its seeds: runs with the same key differ only by seed and teacher seed."""
    kept = {k: v for k, v in config_identity(config).items() if k not in SEEDS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


def code_text(code: object) -> Optional[str]:
    """A run's recorded code fingerprints (config.json ``code``) as short text, ``"method 1a2b3c4d, task
    5e6f7a8b"``; None for runs recorded before fingerprints, or whose code was not known."""
    if not isinstance(code, dict) or not any(isinstance(code.get(k), str) for k in ("method", "task")):
        return None
    return ", ".join(f"{k} {code[k][:8] if isinstance(code.get(k), str) else '?'}" for k in ("method", "task"))


def _num(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def _run_row(run: RunFolder, labels: dict) -> dict:
    c, s = run.config, run.summary or {}
    task, method = labels.get(run.path.name) or (c["task_label"], c["method_label"])
    return {
        "run_id": run.path.name, "task": task, "method": method,
        "method_label": method, "method_name": c["method"], "version": str(c["method_version"]),
        "task_name": c["task"], "task_version": str(c["task_version"]), "seed": c["seed"],
        "teacher_seed": c["teacher_seed"], "teacher_id": c.get("teacher_id"), "config_key": config_key(c),
        "status": run.status, "error": s.get("error"), "diverged_at": s.get("diverged_at"),
        "metric": s.get("metric"), "higher_is_better": s.get("higher_is_better"), "target": c["eval"].get("target"),
        "budget_spec": c["budget"], "budget": s.get("budget_flops"), "device": s.get("device"),
        "checkpoints": s.get("checkpoints_used", 0), "checkpoint_bytes": s.get("checkpoint_bytes", 0),
        "student_bytes": s.get("student_bytes", 0),
        # the top-k teacher-logit cache the run read (kdbench.run.logit_cache), and the teacher FLOPs it saved
        "logit_top_k": (s.get("teacher_logits") or {}).get("top_k"),
        "saved_flops": (s.get("teacher_logits") or {}).get("saved_flops"),
        "kdbench_version": c.get("kdbench_version"), "code": code_text(c.get("code")),
        "metrics": s.get("metrics") or {},
        "phases": s.get("phases") or [], "config": c, **{k: s.get(k) for k in SUMMARY_NUMBERS},
    }


def _runs_frame(folders: list[RunFolder], labels: dict) -> pd.DataFrame:
    """One row per readable run folder, with the per-run derived numbers; a run the manifest labels
    (``labels``: run id -> (task label, method label)) under those labels, else its config's."""
    df = pd.DataFrame([_run_row(r, labels) for r in folders])
    if df.empty:
        return df
    curves = [r.curve or [] for r in folders]
    # a failed run has no metric in its summary: take the task's from its other runs
    for col, default in (("metric", "accuracy"), ("higher_is_better", True)):
        known = df.dropna(subset=[col]).groupby("task")[col].first()
        df[col] = [v if v is not None and v == v else known.get(t, default) for t, v in zip(df.task, df[col])]
    df["higher_is_better"] = df.higher_is_better.astype(bool)
    finished = df.status == "finished"
    df["value"] = [_num(m.get(metric)) if done else math.nan for m, metric, done in zip(df.metrics, df.metric, finished)]
    for col in FIDELITY:  # NaN for runs that did not measure it (older runs, runs without a teacher)
        df[col] = [_num(m.get(col)) for m in df.metrics]
    df["to_target"] = [flops_to_target(cv, m, t if t == t else None, h)
                       for cv, m, t, h in zip(curves, df.metric, df.target, df.higher_is_better)]
    df["auc"] = [curve_auc(cv, m) if done else math.nan for cv, m, done in zip(curves, df.metric, finished)]
    df["boundaries"] = [phase_boundaries(r.summary or {}, r.curve or []) if r.status in FINAL_STATUSES else []
                        for r in folders]
    for col in ("budget", "checkpoints", "checkpoint_bytes", "student_bytes", "target", "logit_top_k", "saved_flops",
                *SUMMARY_NUMBERS):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    # one row label per config: a method label with several configs in a task is split
    n_configs = df.groupby(["task", "method_label"]).config_key.transform("nunique")
    df["method"] = [f"{label} [cfg {key[:6]}]" if n > 1 else label
                    for label, key, n in zip(df.method_label, df.config_key, n_configs)]
    return df


def _long_form(curves: dict[str, list], id_column: str) -> pd.DataFrame:
    """Curves as one row per evaluation, ``id_column`` first, then the engine's columns,
    then every metric; numbers (JSON's "inf" strings included) as floats."""
    records = [{id_column: key, **point} for key, curve in curves.items() for point in curve]
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return pd.DataFrame(columns=[id_column, *CURVE_COLUMNS])
    first = [id_column, *[c for c in CURVE_COLUMNS if c in frame]]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    for col in frame.columns:
        if col not in (id_column, "phase") and not pd.api.types.is_numeric_dtype(frame[col]):
            values = frame[col].replace({"inf": math.inf, "-inf": -math.inf})
            numbers = pd.to_numeric(values, errors="coerce")
            if numbers.notna().sum() == values.notna().sum():  # nothing but numbers and nulls
                frame[col] = numbers.astype(float)
    return frame


def _teachers(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Teacher summaries (one row each) and the teachers' curves (long form), each where readable and
    verified (:func:`kdbench.run.store.teacher_problems`; ``problem`` says what did not verify)."""
    rows, curves = [], {}
    for d in sorted((path / "teachers").glob("*")):
        problems = teacher_problems(d) if d.is_dir() else {}
        curve = read_json(d / "curve.json") if "curve.json" not in problems else None
        if isinstance(curve, list) and all(isinstance(p, dict) and "flops" in p for p in curve):
            curves[d.name] = curve
        summary = read_json(d / "summary.json") if "summary.json" not in problems else None
        if isinstance(summary, dict) or problems:
            summary = summary if isinstance(summary, dict) else {}
            rows.append({"teacher_id": d.name, "status": summary.get("status"),
                         "metrics": summary.get("metrics") or {}, "steps": summary.get("steps"),
                         "flops": summary.get("flops"), "wall_time": summary.get("wall_time"),
                         "checkpoints": len(summary.get("checkpoints") or []),
                         "checkpoint_bytes": summary.get("checkpoint_bytes", 0), "source": summary.get("source"),
                         "summary": summary, "problem": "; ".join(problems.values()) or None})
    columns = ["teacher_id", "status", "metrics", "steps", "flops", "wall_time", "checkpoints", "checkpoint_bytes",
               "source", "summary", "problem"]
    return pd.DataFrame(rows, columns=columns), _long_form(curves, "teacher_id")


def _manifest_labels(manifest: Optional[dict]) -> dict[str, tuple[str, str]]:
    """The suite's (task label, method label) of each of its runs, from its manifest's ``labels``
    (empty for older manifests, which have none). A label is no part of a run id: a run finished
    under an earlier label is shown under the suite's current one."""
    labels = (manifest or {}).get("labels")
    if not isinstance(labels, dict):
        return {}
    pairs = {run_id: (entry.get("task"), entry.get("method")) for run_id, entry in labels.items()
             if isinstance(entry, dict)}
    return {run_id: pair for run_id, pair in pairs.items() if all(isinstance(x, str) and x for x in pair)}


def _manifest(path: Path) -> tuple[Optional[dict], Optional[str]]:
    """OUT/suite.json when it is well formed, else (None, why not; None when absent)."""
    if not (path / MANIFEST).exists():
        return None, None
    manifest = read_json(path / MANIFEST)
    ids = manifest.get("run_ids") if isinstance(manifest, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return None, f"{MANIFEST} is not a kdbench suite manifest (no list of run ids)"
    return manifest, None


@dataclass(frozen=True)
class Frames:
    """What a results folder holds, as DataFrames (see the :class:`Results` methods of the same names)."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    teachers: pd.DataFrame
    teacher_curves: pd.DataFrame
    unreadable: pd.DataFrame


@dataclass(frozen=True)
class Scope:
    """Which run folders of a results folder a :class:`Results` holds, and why (see its attributes)."""

    suite: Optional[dict]  # the manifest of the suite last run into the folder (None without one)
    all_runs: bool
    outside: int
    not_started: list[str]
    manifest_problem: Optional[str]
    suite_yaml: Optional[dict]
    tuning_ids: Optional[set] = None
    tuning_runs: int = 0


class Results:
    """A results folder, read once by :func:`load_results`: runs, curves, teachers and the
    run folders that could not be read, as DataFrames, and the leaderboard built on them.

    ``suite`` is the manifest of the suite last run into the folder (None without one);
    ``all_runs`` says whether every run folder was loaded or only that suite's;
    ``outside`` counts the run folders left out (other suites, earlier versions), not
    the tuning runs of a tuned suite (``tuning_runs``, whose sweeps :meth:`tuning` reads);
    ``not_started`` lists the suite's run ids that have no folder yet."""

    def __init__(self, path: Path, frames: "Frames", scope: "Scope"):
        self.path = Path(path)
        self._tuning_ids = scope.tuning_ids
        #: run folders of the suite's tuning trials (on dev seeds), not shown (see :meth:`tuning`)
        self.tuning_runs = scope.tuning_runs
        self._runs, self._curves, self._unreadable = frames.runs, frames.curves, frames.unreadable
        self._teachers, self._teacher_curves = frames.teachers, frames.teacher_curves
        self.suite, self.all_runs, self.outside = scope.suite, scope.all_runs, scope.outside
        self.not_started, self.manifest_problem = scope.not_started, scope.manifest_problem
        self._suite_yaml = scope.suite_yaml or {}

    def runs(self) -> pd.DataFrame:
        """One row per readable run folder: ``run_id``, ``task`` (label), ``method`` (the row
        label), ``method_label``, ``method_name``, ``version``, ``seed``, ``teacher_seed``,
        ``teacher_id``, ``config_key``, ``status`` (finished, diverged, failed, incomplete),
        ``error``, ``metric``, ``higher_is_better``, ``target``, the summary's numbers
        (``flops``, ``total_flops``, ``steps``, ``wall_time``, ``budget``, ``checkpoints``,
        ``student_bytes``: the kept student's files, 0 when none was kept, ...), ``code`` (the
        fingerprints of the method's and task's code that produced it, None for older runs),
        the derived ``value`` (final metric, finished runs), ``auc``, ``to_target`` and
        ``boundaries`` (phase switches in FLOPs), the fidelity to the final teacher at the last
        evaluation from the summary's metrics (``agreement``: top-1 agreement; ``teacher_kl``: mean
        KL(teacher || student); NaN where the run did not measure them), and the raw ``config``,
        ``metrics``, ``phases``."""
        return self._runs.copy()

    def curves(self) -> pd.DataFrame:
        """Every finished or diverged run's curve in long form: ``run_id``, ``task``, ``method``,
        ``seed``, ``teacher_seed`` (its run's, as in :meth:`runs`), ``step``, ``samples``, ``flops``,
        ``phase``, ``time``, ``train_loss`` and a column per metric."""
        if self._curves.empty or self._runs.empty:
            return self._curves.copy()
        ids = self._runs[["run_id", *IDENTITY]]
        curves = self._curves.merge(ids, on="run_id", how="left", validate="many_to_one")
        return curves[["run_id", *IDENTITY, *(c for c in self._curves.columns if c != "run_id")]]

    def teachers(self) -> pd.DataFrame:
        """One row per teacher folder with a summary: ``teacher_id``, ``status``, ``metrics``,
        ``steps``, ``flops``, ``wall_time``, ``checkpoints`` (count), ``checkpoint_bytes``,
        ``source`` (a loaded checkpoint file), the raw ``summary``, and ``problem``: which of its record
        files do not verify, and why (None when all do; ``kdbench run`` repairs them)."""
        return self._teachers.copy()

    def teacher_curves(self) -> pd.DataFrame:
        """The teachers' training curves in long form, keyed by ``teacher_id``."""
        return self._teacher_curves.copy()

    def unreadable(self) -> pd.DataFrame:
        """The run folders that could not be read: ``run_id``, ``reason``, and ``task``,
        ``method``, ``seed`` when the config could be read. ``kdbench run`` redoes them."""
        return self._unreadable.copy()

    def tuning(self) -> pd.DataFrame:
        """One row per trial of the suite's tuning sweeps (``OUT/tuning/<task>/<method>.json``, see
        :mod:`kdbench.tuning.records`): ``task``, ``method``, ``trial``, ``state`` (complete, failed,
        running), ``settings`` (dict), ``objective`` (mean over its dev runs), ``objectives`` (per
        dev run), ``run_ids``, ``flops`` (its runs' student FLOPs), ``chosen``, ``error``, ``kind``
        (the objective: final, auc, flops_to_target), ``maximize`` and the sweep's ``protocol``.
        Empty for a suite without a ``tune:`` block."""
        return read_trials(self.path, None if self.all_runs else self._tuning_ids)

    def order(self, section: str, labels: list[str]) -> list[str]:
        """``labels`` in the order OUT/suite.yaml lists its ``section`` (tasks or methods),
        the others after them in the order given."""
        entries = self._suite_yaml.get(section)
        order = [e.get("label") or e.get("name") for e in entries if isinstance(e, dict)] \
            if isinstance(entries, list) else []
        return sorted(labels, key=lambda t: order.index(t) if t in order else len(order) + labels.index(t))

    def claims(self) -> ClaimsReport:
        """The claims of the suite last run into the folder (``claims:`` of OUT/suite.yaml) judged on
        its runs (:mod:`kdbench.results.claims`): per claim, task and teacher seed the paired
        differences and whether it holds there, and the verdict; no claims when the suite states none."""
        runs = self._runs
        if self.suite is not None and not runs.empty:  # the suite's runs, even when every run was loaded
            runs = runs[runs.run_id.isin(self.suite["run_ids"])]
        return claims_report(self._suite_yaml, runs, self.path / "suite.yaml")

    def leaderboard(self, fmt: Optional[str] = None, baseline: Optional[str] = None,
                    ci: bool = False, columns: Optional[list[str]] = None) -> Union[pd.DataFrame, str]:
        """The leaderboard: a DataFrame with one row per (task, method) when ``fmt`` is None,
        else its text as ``md``, ``latex``, ``csv`` or ``json``. ``baseline`` (default
        one-shot) is the method the others are compared with over matching seeds; ``ci``
        adds 95% intervals to the text (Student-t over seeds with one teacher seed, over the
        per-teacher means with several; the DataFrame always has them). ``columns`` chooses the md
        and LaTeX columns (:func:`kdbench.results.render.render`)."""
        board = build_leaderboard(self, baseline, ci)
        return board.frame() if fmt is None else render(board, fmt, columns)


def _suite_yaml(path: Path) -> Optional[dict]:
    try:
        suite = yaml.safe_load((path / "suite.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return suite if isinstance(suite, dict) else None


def load_results(path: Union[str, Path], all_runs: bool = False) -> Results:
    """Read results folder ``path`` (written by ``kdbench run``). Only the runs of the
    suite last run into it (``OUT/suite.json``) are loaded unless ``all_runs``; every run
    folder is checked with :func:`kdbench.run.store.read_run` and one that fails the check is
    listed by :meth:`Results.unreadable` with the reason."""
    path = Path(path)
    if not (path / "runs").is_dir():
        raise UserError(f"{path}: not a kdbench results folder (no runs/ inside)")
    suite, problem = _manifest(path)
    folders = sorted(d for d in (path / "runs").iterdir() if d.is_dir())
    scoped = suite is not None and not all_runs
    tuning = None
    if scoped:
        ids = set(suite["run_ids"])
        inside = [d for d in folders if d.name in ids]
        not_started = [i for i in dict.fromkeys(suite["run_ids"]) if not (path / "runs" / i).is_dir()]
        tuning = set(suite.get("tuning_run_ids") or ()) - ids
    else:
        inside, not_started = folders, []
    tuned = sum(d.name in (tuning or ()) for d in folders)
    read = [read_run(d) for d in inside]
    good = [r for r in read if r.problem is None]
    labels = _manifest_labels(suite)
    bad = [{"run_id": r.path.name, "reason": r.problem,
            **{k: (r.config or {}).get(c) for k, c in (("task", "task_label"), ("method", "method_label"),
                                                         ("seed", "seed"))},
            **dict(zip(("task", "method"), labels.get(r.path.name, ())))} for r in read if r.problem]
    curves = _long_form({r.path.name: r.curve for r in good if r.status in FINAL_STATUSES}, "run_id")
    teachers, teacher_curves = _teachers(path)
    unreadable = pd.DataFrame(bad, columns=["run_id", "reason", "task", "method", "seed"], dtype=object)
    return Results(path, Frames(_runs_frame(good, labels), curves, teachers, teacher_curves, unreadable),
                   Scope(suite, not scoped, len(folders) - len(inside) - tuned, not_started, problem, _suite_yaml(path),
                         tuning, tuned))
