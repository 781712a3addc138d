"""The models kdbench keeps: every finished run's student, and a record of every cached teacher.

A finished run folder holds, unless the suite says ``keep_students: false`` (or
``kdbench run --no-keep-students``)::

    student.safetensors   the student's final weights (safetensors.torch.save_model: tied weights once)
    student.json          {"model": its spec, "weights": "student.safetensors", "tokenizer": ...}
    tokenizer.json        the task's tokenizer (HF tokenizers JSON), when the task has one

The spec (:mod:`kdbench.models.saving`) rebuilds the model: a built-in model's class and
constructor arguments, or a Hugging Face model's config. ``"tokenizer"`` is
``{"file": "tokenizer.json", "special_tokens": {role: token}}`` or null. A teacher
folder holds the same record as ``teacher.json``, whose weights are its ``final.pt``
(a PyTorch state dict). Every file is written atomically, the record last, and a
run's before its ``summary.json``: a run counts as done only once they are complete.
``kdbench export`` (:mod:`kdbench.results.export`) turns either into a folder a user loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import save_model
from tokenizers import Tokenizer
from torch import nn

from kdbench.api import TaskInstance
from kdbench.errors import UserError
from kdbench.files import atomic_save_as, atomic_write_json, atomic_write_text
from kdbench.models.saving import load_weights, model_spec, rebuild
from kdbench.run.integrity import problem, record
from kdbench.run.store import read_json

STUDENT_WEIGHTS, STUDENT_RECORD = "student.safetensors", "student.json"
TEACHER_WEIGHTS, TEACHER_RECORD = "final.pt", "teacher.json"
TOKENIZER = "tokenizer.json"


def write_record(folder: Path, record_name: str, model: nn.Module, task: TaskInstance, weights: str) -> list[Path]:
    """Write ``folder/record_name`` (the model's spec, its weights file, the task's tokenizer) and the
    tokenizer's file, and record their sha256; return the files written."""
    folder = Path(folder)
    written, tokenizer = [], None
    if task.tokenizer is not None:
        atomic_write_text(folder / TOKENIZER, task.tokenizer.to_str())
        written.append(folder / TOKENIZER)
        tokenizer = {"file": TOKENIZER, "special_tokens": dict(task.special_tokens)}
    atomic_write_json(folder / record_name, {"model": model_spec(model), "weights": weights, "tokenizer": tokenizer})
    record(folder, *written, folder / record_name)
    return [*written, folder / record_name]


def keep_student(folder: Path, model: nn.Module, task: TaskInstance) -> int:
    """Write the run's student (weights, then its record) into run folder ``folder``; return the bytes kept."""
    folder = Path(folder)
    atomic_save_as(folder / STUDENT_WEIGHTS, lambda name: save_model(model, name))
    record(folder, STUDENT_WEIGHTS)
    files = [folder / STUDENT_WEIGHTS, *write_record(folder, STUDENT_RECORD, model, task, STUDENT_WEIGHTS)]
    return sum(f.stat().st_size for f in files)


def record_teacher(folder: Path, model: nn.Module, task: TaskInstance) -> None:
    """Write ``teacher.json`` (and the task's tokenizer) next to a teacher's ``final.pt``."""
    write_record(folder, TEACHER_RECORD, model, task, TEACHER_WEIGHTS)


class KeptModel:
    """A kept model read back: ``model`` (eval mode, on the CPU), and the task's ``tokenizer`` (a
    ``tokenizers.Tokenizer``) with its ``special_tokens`` by role, or None and {}."""

    def __init__(self, model: nn.Module, tokenizer: Any = None, special_tokens: Optional[dict] = None):
        self.model, self.tokenizer, self.special_tokens = model, tokenizer, special_tokens or {}


def load_kept(folder: Path, record_name: str, why_missing: str, remedy: str = "") -> KeptModel:
    """The model recorded in ``folder/record_name`` with its weights; ``why_missing`` ends the error
    raised when there is no record. A record, weights or tokenizer file that does not match its
    recorded sha256 (:mod:`kdbench.run.integrity`) or does not parse is a UserError naming it, ending
    with ``remedy``."""
    folder = Path(folder)
    if not (folder / record_name).exists():
        raise UserError(f"{folder}: no {record_name}: {why_missing}")
    entry = read_json(folder / record_name)
    why = problem(folder, record_name)
    if why is None and not (isinstance(entry, dict) and isinstance(entry.get("model"), dict)):
        why = "not a model record (truncated, or not valid JSON)"
    if why:
        raise UserError(f"{folder / record_name}: corrupt: {why}{remedy}")
    model = rebuild(entry["model"])
    weights = folder / entry["weights"]
    if not weights.is_file():
        raise UserError(f"{folder}: {entry['weights']} missing (named by {record_name})")
    tokenizer_file = (entry.get("tokenizer") or {}).get("file")
    for name in [entry["weights"], *([tokenizer_file] if tokenizer_file else [])]:
        why = problem(folder, name)
        if why:
            raise UserError(f"{folder / name}: corrupt: {why}{remedy}")
    if weights.suffix == ".safetensors":
        load_weights(model, weights)
    else:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    tokenizer, special = None, {}
    if tokenizer_file:
        tokenizer = Tokenizer.from_file(str(folder / tokenizer_file))
        special = entry["tokenizer"].get("special_tokens") or {}
    return KeptModel(model.eval(), tokenizer, special)
