"""Results on disk: atomic writes, run and teacher folders, loading them back.

Layout of an output folder::

    OUT/suite.yaml                    the suite as last run
    OUT/teachers/<teacher_id>/        final.pt, checkpoints/step-<N>.pt, summary.json, curve.json
    OUT/runs/<run_id>/                config.json, curve.json, summary.json, state.pt (while running)
    OUT/leaderboard.md

A run is finished when its ``summary.json`` exists and parses with status
``finished`` or ``diverged``; anything else is rerun.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

FINAL_STATUSES = ("finished", "diverged")


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file and rename: readers never see half a file."""
    _atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=1, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def read_json(path: Path) -> Optional[Any]:
    """The parsed file, or None if it is missing or not valid JSON (a corrupt file is rerun)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def run_dir(out: Path, run_id: str) -> Path:
    return Path(out) / "runs" / run_id


def teacher_dir(out: Path, teacher_id: str) -> Path:
    return Path(out) / "teachers" / teacher_id


def run_is_done(out: Path, run_id: str) -> bool:
    summary = read_json(run_dir(out, run_id) / "summary.json")
    return (isinstance(summary, dict) and summary.get("status") in FINAL_STATUSES
            and read_json(run_dir(out, run_id) / "curve.json") is not None)


def load_runs(out: Path) -> list[dict]:
    """Every run folder under ``out`` with a readable config and summary, as
    ``{"config", "summary", "curve", "dir"}``; unreadable folders are skipped."""
    runs = []
    for d in sorted((Path(out) / "runs").glob("*")):
        config, summary = read_json(d / "config.json"), read_json(d / "summary.json")
        if not isinstance(config, dict) or not isinstance(summary, dict):
            continue
        runs.append({"config": config, "summary": summary, "curve": read_json(d / "curve.json") or [], "dir": d})
    return runs


def load_teachers(out: Path) -> dict[str, dict]:
    """Teacher summaries under ``out`` by teacher id."""
    teachers = {}
    for d in sorted((Path(out) / "teachers").glob("*")):
        summary = read_json(d / "summary.json")
        if isinstance(summary, dict):
            teachers[d.name] = summary
    return teachers
