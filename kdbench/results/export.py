"""``kdbench export``: a kept student, or a cached teacher, as a folder a user loads without kdbench.

A Hugging Face model becomes a ``save_pretrained`` folder (plus the task's tokenizer,
``AutoTokenizer`` loads it); a built-in model ``model.safetensors`` and ``config.json``
(class and constructor arguments). :mod:`kdbench.models.saving` describes both and
how to load them; :func:`kdbench.models.load_exported` loads either.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Union

from kdbench.errors import UserError
from kdbench.models.saving import write_exported
from kdbench.run.store import (read_json, read_run, resolve_run_id, resolve_teacher_id, run_dir, teacher_dir,
                                  teacher_problems)
from kdbench.run.students import STUDENT_RECORD, TEACHER_RECORD, load_kept

PathLike = Union[str, Path]


def run_folder(source: PathLike, results: Optional[PathLike]) -> Path:
    """The run folder ``source`` names: a run folder, or a run id or unique id prefix in ``results``
    (:func:`kdbench.run.store.resolve_run_id`)."""
    path = Path(source)
    if (path / "config.json").is_file():
        return path
    if results is None:
        raise UserError(f"{source}: not a run folder; give a run folder, or a run id with --results RESULTS")
    return run_dir(Path(results), resolve_run_id(Path(results), str(source)))


def teacher_folder(teacher_id: str, results: Optional[PathLike]) -> Path:
    """The folder of teacher ``teacher_id`` (or a unique prefix of it) in ``results``, which must hold
    a finished teacher."""
    if results is None:
        raise UserError("--teacher: give the results folder holding the teacher with --results RESULTS")
    teacher_id = resolve_teacher_id(Path(results), teacher_id)
    folder = teacher_dir(Path(results), teacher_id)
    corrupt = teacher_problems(folder).get("summary.json") if folder.is_dir() else None
    if corrupt:
        raise UserError(f"{folder / 'summary.json'}: corrupt: {corrupt}; `kdbench run` on its suite retrains the "
                        "teacher")
    summary = read_json(folder / "summary.json")
    if not isinstance(summary, dict) or summary.get("status") != "finished":
        known = sorted(p.name for p in (Path(results) / "teachers").glob("*") if p.is_dir())
        raise UserError(f"--teacher {teacher_id}: no finished teacher of that id in {results}; "
                        f"teachers there: {', '.join(known) or 'none'}")
    return folder


def export_model(source: PathLike, output: PathLike, *, results: Optional[PathLike] = None, teacher: bool = False,
                 force: bool = False) -> Path:
    """Do what ``kdbench export`` does: write the student of run ``source`` (a run folder, or a run
    id in ``results``), or with ``teacher`` the teacher of id ``source`` in ``results``, into the
    folder ``output`` (new or empty; ``force``: write into it anyway). Return ``output``."""
    if teacher:
        folder = teacher_folder(str(source), results)
        kept = load_kept(folder, TEACHER_RECORD, "the teacher was cached before kdbench recorded teacher models; "
                                                 f"remove {folder} and run its suite again to rebuild it",
                         "; `kdbench run` on its suite rewrites it (or retrains the teacher)")
    else:
        folder = run_folder(source, results)
        run = read_run(folder)
        if not run.done:
            raise UserError(f"{folder}: the run has no result to export ({run.problem or run.status})")
        kept = load_kept(folder, STUDENT_RECORD, "the run kept no student (the suite's keep_students: false, "
                                                 "kdbench run --no-keep-students, or a run made before students "
                                                 "were kept; diverged runs keep none)",
                         f"; remove {folder / 'summary.json'} and `kdbench run` on its suite redoes the run")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"{output}: exists and is not a folder")
    filled = output.is_dir() and any(output.iterdir())
    if filled and not force:
        raise UserError(f"{output}: not empty; give a new or empty folder, or --force to write into it")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}."))
    try:  # written next to it, then renamed: OUTPUT appears complete or not at all
        write_exported(kept.model, staging, kept.tokenizer, kept.special_tokens)
        umask = os.umask(0)
        os.umask(umask)
        for path in [staging, *staging.iterdir()]:  # mkdtemp and safetensors make private files
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        if filled:
            for path in staging.iterdir():
                os.replace(path, output / path.name)
            staging.rmdir()
        else:
            if output.is_dir():
                output.rmdir()
            os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output
