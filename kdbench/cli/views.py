"""What ``kdbench status`` and ``kdbench plan`` print: a headline, a table whose run and teacher
ids are never wrapped or cut (on a terminal of any width, or piped: then plain aligned columns),
and the lines after it; or, with ``--format json``, the same data as one JSON document.

The JSON documents (:func:`status_document`, :func:`plan_document`) hold every field the
tables show, as numbers where they are numbers; the tables are built from them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console

from kdbench.cli.catalog import Format, print_table, to_json
from kdbench.commands import Plan
from kdbench.launchers.status import RunStatus
from kdbench.run.probe import format_seconds

STATUS_COLUMNS = ("run id", "task", "method", "seed", "state", "job", "detail")
STATUS_KEEP = ("run id", "seed", "state")
FOLDED_MIN = 10  # the other columns fold down to this: the table fits 80 columns more often


def status_document(out, rows: list[RunStatus], teachers: list[RunStatus]) -> dict[str, Any]:
    """``kdbench status --format json``: the folder, a row per run and per teacher, the counts of
    the runs by state, and how many are tuning trials and dev teachers."""
    return {
        "results": str(out),
        "runs": [{"run_id": r.run_id, "task": r.task, "method": r.method, "seed": r.seed,
                  "teacher_seed": r.teacher_seed, "trial": r.trial, "state": r.state, "job": r.job,
                  "detail": r.detail} for r in rows],
        "teachers": [{"teacher_id": t.run_id, "task": t.task, "teacher_seed": t.teacher_seed,
                      "dev": t.method == "dev teacher", "state": t.state, "job": t.job, "detail": t.detail}
                     for t in teachers],
        "counts": dict(sorted(Counter(r.state for r in rows).items())),
        "trial_runs": sum(r.trial for r in rows),
        "dev_teachers": sum(t.method == "dev teacher" for t in teachers),
    }


def print_status(console: Console, out, rows: list[RunStatus], teachers: list[RunStatus], fmt: Format) -> None:
    """``kdbench status``: the headline, a row per teacher and run, then the runs counted by state."""
    doc = status_document(out, rows, teachers)
    if fmt == Format.json:
        console.out(to_json(doc), highlight=False)
        return
    console.print(f"{out}: {len(rows)} runs, {len(teachers)} teacher(s)", highlight=False, soft_wrap=True)
    cells = [[t["teacher_id"], t["task"], "dev teacher" if t["dev"] else "teacher", "", t["state"], t["job"],
              t["detail"]] for t in doc["teachers"]]
    cells += [[r["run_id"], r["task"], r["method"], _seed(r), r["state"], r["job"], r["detail"]] for r in doc["runs"]]
    print_table(console, "", STATUS_COLUMNS, cells, keep=STATUS_KEEP, folded_min=FOLDED_MIN)
    dev = doc["dev_teachers"]
    console.print((", ".join(f"{n} {state}" for state, n in doc["counts"].items()) or "no runs")
                  + (f"; {doc['trial_runs']} of these runs are tuning trials (dev seeds on {dev} dev teacher(s))"
                     if doc["trial_runs"] else ""), highlight=False, soft_wrap=True)


def _seed(row: dict) -> str:
    """A run's seed cell: ``0``, ``100 (trial)``, or empty."""
    if row["seed"] is None:
        return ""
    return f"{row['seed']} (trial)" if row["trial"] else str(row["seed"])


def _seconds(estimate) -> dict[str, Any]:
    """An estimate's median and quartile seconds (None each without a time probe)."""
    if estimate is None:
        return {"seconds": None, "seconds_low": None, "seconds_high": None}
    return {"seconds": estimate.mid, "seconds_low": estimate.low, "seconds_high": estimate.high}


def plan_document(plan: Plan) -> dict[str, Any]:
    """``kdbench plan --format json``: where and how it was measured, a row per run (FLOPs, steps,
    estimated seconds), the teachers to train, the sweep of a tuned suite, and the totals."""
    loaded, low, high = plan.suite, *plan.spread_left
    runs = [{"run_id": row.run.run_id, "task": row.run.task_label, "method": row.run.method_label,
             "seed": row.run.seed, "teacher_seed": row.run.teacher_seed, "teacher_id": row.run.teacher_id,
             "budget_flops": row.budget_flops, "steps": sum(steps for _, steps, _ in row.phases),
             "phases": [{"name": name, "steps": steps, "flops_per_step": flops} for name, steps, flops in row.phases],
             "done": row.done, **_seconds(row.estimate)} for row in plan.runs]
    teachers = [{"teacher_id": tid, "dev": False, "seconds": s} for tid, s in plan.teachers.items()]
    teachers += [{"teacher_id": tid, "dev": True, "seconds": s if plan.probe_steps else None}
                 for tid, s in plan.dev_teachers.items()]
    timed = bool(plan.probe_steps)
    totals = {"runs": len(plan.runs), "runs_left": sum(not r.done for r in plan.runs), "trial_runs": plan.tuning_runs,
              "dev_teachers": len(plan.dev_teachers), "seconds_left": plan.seconds_left if timed else None,
              "seconds_left_low": low if timed else None, "seconds_left_high": high if timed else None,
              "teacher_seconds": sum(plan.teachers.values()) if timed else None,
              "trial_seconds": plan.tuning_seconds if timed and plan.tuning_runs else None,
              "dev_teacher_seconds": sum(plan.dev_teachers.values()) if timed and plan.tuning_runs else None}
    totals["seconds"] = (sum(totals[k] or 0.0 for k in ("seconds_left", "teacher_seconds", "trial_seconds",
                                                         "dev_teacher_seconds")) if timed else None)
    return {"suite": loaded.suite.name, "output": str(loaded.output), "device": str(plan.device),
            "precision": plan.precision, "threads": plan.threads, "threads_reason": plan.threads_reason,
            "probe_steps": plan.probe_steps, "load_average": plan.load[0], "cores": plan.load[1], "busy": plan.busy,
            "jobs": plan.jobs, "jobs_reason": plan.jobs_reason,
            "headline": plan_headline(plan), "runs": runs, "teachers": teachers, "totals": totals,
            "seed_groups": [{"runs": ids, "stacked": reason is None, "reason": reason}
                            for ids, reason in plan.seed_groups]}


def plan_headline(plan: Plan) -> str:
    """``tiny: 4 runs (1 done) + the sweep's 12 trial runs -> OUT; est. 2.0 min to run + sweep 5.1 min +
    teachers 30 s``: every run the suite will train, and with a time probe how long each part takes."""
    loaded, done = plan.suite, sum(r.done for r in plan.runs)
    text = f"{loaded.suite.name}: {len(plan.runs)} {'test ' if plan.tuning_runs else ''}runs ({done} done)"
    if plan.tuning_runs:
        text += f" + the sweep's {plan.tuning_runs} trial runs"
    text += f" -> {loaded.output}"
    if plan.probe_steps:
        text += f"; est. {format_seconds(plan.seconds_left)} to run"
        if plan.tuning_runs:
            text += f" + sweep {format_seconds(plan.tuning_seconds + sum(plan.dev_teachers.values()))}"
        text += f" + teachers {format_seconds(sum(plan.teachers.values()))}"
    return text


def print_plan_table(console: Console, plan: Plan) -> None:
    """The headline and a row per run of ``kdbench plan`` (ids whole)."""
    columns = ["run id", "task", "method", "seed", "budget FLOPs", "phases (steps x FLOPs/step)", "done"]
    if plan.probe_steps:
        columns.append(f"est. time ({plan.device.type})")
    cells = []
    for row in plan.runs:
        r = row.run
        phases = ", ".join(f"{name} {steps}x{flops:.3g}" for name, steps, flops in row.phases)
        cells.append([r.run_id, r.task_label, r.method_label, str(r.seed), f"{row.budget_flops:.3g}", phases,
                      "yes" if row.done else "no"])
        if plan.probe_steps:
            est = row.estimate
            cells[-1].append(f"{format_seconds(est.mid)} ({format_seconds(est.low)}-{format_seconds(est.high)})"
                             if est is not None else "")
    console.print(plan_headline(plan), highlight=False, soft_wrap=True)
    print_table(console, "", tuple(columns), cells, keep=("run id", "seed", "budget FLOPs", "done", columns[-1]),
                folded_min=FOLDED_MIN)
