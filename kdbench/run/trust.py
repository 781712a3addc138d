"""What ``kdbench run`` checks before it trusts work already done: finished runs produced by other
plugin code than is installed now (:func:`code_changes`), and cached teachers whose record files no
longer verify (:func:`repair_teachers`).

A run's config.json records the fingerprints of its method's and task's code
(:func:`kdbench.run.integrity.fingerprints`). They are not part of the run id: an edit
to a plugin (a comment, a refactoring, a fix) must not orphan every earlier run
without a word; ``kdbench run`` names the runs whose code changed instead, keeps them
by default, and redoes them with ``--rerun-changed``. Runs recorded before fingerprints
(no ``code`` in their config) count as unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kdbench.plugins import Registry
from kdbench.run.integrity import code_differs, fingerprints
from kdbench.run.options import RunOptions
from kdbench.run.runner import train_teacher, uses_cached_teacher
from kdbench.run.store import read_run, run_dir, set_aside, teacher_dir, teacher_problems
from kdbench.run.teachers import TeacherFailed
from kdbench.suite.identity import Run


@dataclass
class CodeChange:
    """Finished runs of one (task, method) row produced by other code than installed now: ``parts`` says
    whose code changed (method, task), ``run_ids`` which runs."""

    task: str
    method: str
    parts: tuple[str, ...]
    run_ids: list[str] = field(default_factory=list)

    def line(self, redone: bool) -> str:
        """One console line on the change and what ``kdbench run`` does about it."""
        whose = " and ".join(f"{p} code" for p in self.parts)
        what = ("redone (--rerun-changed)" if redone
                else "kept as they are; `kdbench run --rerun-changed` redoes them")
        return (f"code changed: {len(self.run_ids)} finished run(s) of `{self.method}` on `{self.task}` were produced "
                f"by other code than installed now (the {whose}, without a version bump); {what}.")


def code_changes(out: Path, runs: list[Run], registry: Registry) -> list[CodeChange]:
    """The finished runs of ``runs`` in ``out`` whose recorded code fingerprints differ from the
    installed plugins', grouped by (task, method) row."""
    current: dict[tuple[str, str], dict] = {}
    changes: dict[tuple, CodeChange] = {}
    for run in runs:
        found = read_run(run_dir(out, run.run_id))
        if not found.done:
            continue
        key = (run.method, run.task)
        if key not in current:
            current[key] = fingerprints(registry.methods[run.method].cls, registry.tasks[run.task].cls)
        parts = tuple(code_differs(found.config.get("code"), current[key]))
        if parts:
            change = changes.setdefault((run.task_label, run.method_label, parts),
                                        CodeChange(run.task_label, run.method_label, parts))
            change.run_ids.append(run.run_id)
    return list(changes.values())


def set_aside_changed(out: Path, changes: list[CodeChange]) -> None:
    """Make the runs of ``changes`` unfinished, so that the launch redoes them (``--rerun-changed``)."""
    for change in changes:
        for run_id in change.run_ids:
            set_aside(run_dir(out, run_id))


def repair_teachers(out: Path, runs: list[Run], registry: Registry, options: RunOptions) -> list[str]:
    """Mend the cached teachers of ``runs`` whose record files (summary, curve, teacher.json) do not
    verify, even when every run that reads them is finished: a record is rewritten, or the teacher
    retrained (:func:`kdbench.run.teachers.repair_records`, warnings naming the files). Return the
    teacher ids repaired; a teacher that fails here is left to the launch, which reports it."""
    groups: dict[str, tuple[Run, set]] = {}
    for run in runs:
        if uses_cached_teacher(registry, run.method):
            groups.setdefault(run.teacher_id, (run, set()))[1].update(run.checkpoints)
    repaired = []
    for teacher_id, (run, checkpoints) in groups.items():
        folder = teacher_dir(out, teacher_id)
        if folder.is_dir() and teacher_problems(folder):
            try:
                train_teacher(run, checkpoints, registry, out, options)
                repaired.append(teacher_id)
            except TeacherFailed:  # recorded in its folder; the launch reports it with the runs that need it
                pass
    return repaired
