"""Results on disk: run and teacher folders, and the one check of a run folder (every write
goes through :mod:`kdbench.files`, atomically).

Layout of an output folder::

    OUT/suite.yaml                    the suite as last run
    OUT/suite.json                    its manifest: name, sha256 of the suite file, its run ids, time
    OUT/teachers/<teacher_id>/        final.pt, teacher.json, checkpoints/step-<N>.pt, summary.json, curve.json
    OUT/runs/<run_id>/                config.json, curve.json, summary.json, state.pt (while running),
                                      student.safetensors, student.json (kdbench.run.students)
    each of them also                 hashes.json: the sha256 of each file above (kdbench.run.integrity)
    OUT/leaderboard.md

:func:`read_run` reads a run folder and checks its files for completeness and
shape. A run is done when that check passes and its status is ``finished`` or
``diverged``; anything else is run again by ``kdbench run``. The results layer
(:mod:`kdbench.results`) reads folders through the same function, so a folder
it cannot read is listed with the reason, never dropped.

A write that fails raises an ``OSError`` naming the file being written; recording
a failure (:func:`write_failure`) never raises; a saved PyTorch file that no longer
loads is discarded with a warning naming it (:func:`discard_unreadable`), so that
it is rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from filelock import FileLock, Timeout

from kdbench.errors import UserError
from kdbench.files import atomic_write_json, atomic_write_text
from kdbench.run import integrity

FINAL_STATUSES = ("finished", "diverged")
STATUSES = (*FINAL_STATUSES, "failed")
MANIFEST = "suite.json"

_DICT, _INT, _STR = (dict,), (int,), (str,)
_NUMBER = (int, float)
# what config.json holds for a Run to be rebuilt from it (kdbench.suite.Run's fields without defaults)
RUN_CONFIG_KEYS = {
    "run_id": _STR, "suite": _STR, "task": _STR, "task_label": _STR, "task_version": _STR, "task_params": _DICT,
    "teacher_seed": _INT, "teacher_recipe": _DICT, "teacher_checkpoint": (str, type(None)), "checkpoints": (list,),
    "student_recipe": _DICT, "method": _STR, "method_label": _STR, "method_version": _STR, "method_params": _DICT,
    "seed": _INT, "budget": _DICT, "eval": _DICT,
}
# what summary.json of a finished or diverged run holds for the leaderboard
FINAL_SUMMARY_KEYS = {"metric": _STR, "higher_is_better": (bool,), "metrics": _DICT, "steps": _NUMBER,
                      "flops": _NUMBER, "budget_flops": _NUMBER, "wall_time": _NUMBER}
CURVE_POINT_KEYS = {"step": _NUMBER, "flops": _NUMBER, "phase": _STR}
log = logging.getLogger("kdbench")





def write_failure(folder: Path, summary: dict, traceback_text: str) -> Optional[str]:
    """Record a failure in ``folder``: ``traceback.txt`` and ``summary.json``, atomically. Never
    raises: if the folder cannot be written, say why (the caller reports it elsewhere)."""
    try:
        atomic_write_text(Path(folder) / "traceback.txt", traceback_text)
        atomic_write_json(Path(folder) / "summary.json", summary)
        integrity.record(folder, "summary.json")
    except Exception as exc:  # noqa: BLE001 - recording a failure must not fail in turn
        return f"not recorded on disk ({type(exc).__name__}: {exc})"
    return None


def make_results_folder(out: Path, suite_text: str) -> None:
    """Create ``out`` with its ``runs/`` and ``teachers/``, check that files can be created in
    each, and write the suite to ``OUT/suite.yaml``; an ``OSError`` naming the path if that
    cannot be done (read-only, a file in the way, no such place)."""
    for folder in (Path(out), Path(out) / "runs", Path(out) / "teachers"):
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    copy = Path(out) / "suite.yaml"
    if not (copy.is_file() and copy.read_text() == suite_text):  # unchanged: left as it is (see outputs_stamp)
        atomic_write_text(copy, suite_text)


def discard_unreadable(path: Path, what: str, check: Optional[Callable[[Any], None]] = None,
                       folder: Optional[Path] = None) -> bool:
    """If ``path`` exists but does not match the sha256 recorded in ``folder``'s ``hashes.json``
    (default: its own folder's; see :mod:`kdbench.run.integrity`), does not load with ``torch.load``,
    or ``check(obj)`` raises, log a warning naming it and delete it, so it is rebuilt; True if it was
    discarded. Tensors are memory-mapped, so checking keys and shapes does not read the weights;
    the hash does, once per process for a file over 1 MiB."""
    path = Path(path)
    folder = Path(folder) if folder is not None else path.parent
    if not path.exists():
        return False
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if check is not None:
            check(obj)
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with the file, it is rebuilt
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        log.warning(f"{path}: unreadable {what} ({reason}); discarded, it will be rebuilt")
    else:
        reason = integrity.problem(folder, path)
        if reason is None:
            return False
        log.warning(f"{path}: {what} that cannot be trusted ({reason}); discarded, it will be rebuilt")
    with contextlib.suppress(OSError):
        path.unlink()
    return True


# ---------------------------------------------------------------- reading

def read_json(path: Path) -> Optional[Any]:
    """The parsed file, or None if it is missing or not valid JSON (a corrupt file is rerun)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def run_dir(out: Path, run_id: str) -> Path:
    """The folder of run ``run_id`` in results folder ``out``."""
    return Path(out) / "runs" / run_id


def teacher_dir(out: Path, teacher_id: str) -> Path:
    """The folder of teacher ``teacher_id`` in results folder ``out``."""
    return Path(out) / "teachers" / teacher_id


def resolve_run_id(out: Path, text: str) -> str:
    """The run id ``text`` names in results folder ``out``: the id itself, or the one id of
    ``OUT/runs/`` it begins (a unique prefix). A UserError naming the folder and a few ids there
    when none matches, listing the matches when several do."""
    return _resolve(Path(out) / "runs", str(text), "run")


def resolve_teacher_id(out: Path, text: str) -> str:
    """:func:`resolve_run_id` for the teachers of ``OUT/teachers/``."""
    return _resolve(Path(out) / "teachers", str(text), "teacher")


ID_LIST_LIMIT = 20  # ids an error lists at most: enough to pick from, short enough to read


def _resolve(folder: Path, text: str, what: str) -> str:
    """The name of the subfolder of ``folder`` that ``text`` is, or is the only one to begin."""
    try:
        ids = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError:
        ids = []
    if text in ids:
        return text
    matches = [i for i in ids if text and i.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"{text}: {len(matches)} {what}s in {folder} begin with it: {_some(matches)}; "
                        "give more of the id")
    there = f"{what}s there: {_some(ids, 5)}" if ids else f"no {what}s there"
    raise UserError(f"{text}: no such {what} in {folder} (no {what} id is or begins with it); {there}")


def _some(ids: list[str], limit: int = ID_LIST_LIMIT) -> str:
    """``a, b, c and 4 more``."""
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


@dataclass(frozen=True)
class RunFolder:
    """A run folder's files as :func:`read_run` found them.

    ``problem`` says why the folder cannot be read (None when it can); ``summary`` is
    None while the run has not ended; ``curve`` is read for finished and diverged runs."""

    path: Path
    config: Optional[dict] = None
    summary: Optional[dict] = None
    curve: Optional[list] = None
    problem: Optional[str] = None

    @property
    def status(self) -> str:
        """``finished``, ``diverged``, ``failed``, or ``incomplete`` (no summary yet)."""
        return self.summary["status"] if self.summary is not None else "incomplete"

    @property
    def done(self) -> bool:
        """Readable, and finished or diverged: a result ``kdbench run`` keeps."""
        return self.problem is None and self.status in FINAL_STATUSES


def _load(path: Path) -> tuple[Any, Optional[str]]:
    """(parsed JSON, None), or (None, why not)."""
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, f"{path.name} missing"
    except OSError as exc:
        return None, f"{path.name} unreadable ({exc.strerror or exc})"
    except ValueError:
        return None, f"{path.name} is not valid JSON"


def _shape(obj: Any, keys: dict, where: str) -> Optional[str]:
    """Why ``obj`` is not a dict holding ``keys`` with values of the given types, or None."""
    if not isinstance(obj, dict):
        return f"{where} is not a JSON object"
    missing = [k for k in keys if k not in obj]
    if missing:
        return f"{where} lacks {', '.join(missing)}"
    for key, types in keys.items():
        value = obj[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            return f"{where}: {key} is {json.dumps(value)[:40]}, not {' or '.join(t.__name__ for t in types)}"
    return None


def _check_summary(summary: Any) -> Optional[str]:
    if not isinstance(summary, dict):
        return "summary.json is not a JSON object"
    if summary.get("status") not in STATUSES:
        return f"summary.json: status {summary.get('status')!r} is not one of {', '.join(STATUSES)}"
    if summary["status"] not in FINAL_STATUSES:
        return None
    problem = _shape(summary, FINAL_SUMMARY_KEYS, "summary.json")
    if problem is None and summary["status"] == "finished":
        value = summary["metrics"].get(summary["metric"])
        if not isinstance(value, _NUMBER) or isinstance(value, bool):
            problem = f"summary.json: metrics has no value for {summary['metric']}"
    return problem


def _check_curve(curve: Any) -> Optional[str]:
    if not isinstance(curve, list) or not curve:
        return "curve.json is not a non-empty list of evaluations"
    for i, point in enumerate(curve):
        problem = _shape(point, CURVE_POINT_KEYS, f"curve.json point {i}")
        if problem:
            return problem
    return None


def _load_checked(folder: Path, name: str, hashed: bool) -> tuple[Any, Optional[str]]:
    """:func:`_load`, then the file's recorded sha256 checked when ``hashed`` (the folder has a manifest)."""
    obj, problem = _load(folder / name)
    return (obj, problem) if problem or not hashed else (obj, integrity.problem(folder, name))


def _read_files(folder: Path) -> RunFolder:
    """:func:`read_run` without the hashes: the files' shapes."""
    config, problem = _load(folder / "config.json")
    problem = problem or _shape(config, RUN_CONFIG_KEYS, "config.json")
    if problem:
        return RunFolder(folder, problem=problem)
    if not (folder / "summary.json").exists():
        return RunFolder(folder, config)
    summary, problem = _load(folder / "summary.json")
    problem = problem or _check_summary(summary)
    if problem:
        return RunFolder(folder, config, problem=problem)
    if summary["status"] not in FINAL_STATUSES:
        return RunFolder(folder, config, summary)
    curve, problem = _load(folder / "curve.json")
    return RunFolder(folder, config, summary, curve, problem or _check_curve(curve))


def read_run(folder: Path) -> RunFolder:
    """Read run folder ``folder`` and check its files: config.json a dict with the keys
    a Run needs; summary.json (when present) a dict with a known status and, for
    finished and diverged runs, the numbers the leaderboard reads; curve.json (for
    those) a non-empty list of evaluations with step, flops and phase; and each file read
    matches the sha256 recorded in the folder's ``hashes.json`` (:mod:`kdbench.run.integrity`;
    a folder without one, written before kdbench recorded hashes, is trusted as it is)."""
    found = _read_files(Path(folder))
    if found.problem:
        return found
    manifest, problem = integrity.read_hashes(folder)
    if manifest is None and problem is None:
        if found.summary is not None and found.summary.get("content_hashes"):
            problem = f"{integrity.HASHES} missing (the run recorded its files' sha256 there)"
    else:
        read = [name for name, obj in (("config.json", found.config), ("summary.json", found.summary),
                                       ("curve.json", found.curve)) if obj is not None]
        problem = problem or next((p for p in (integrity.problem(folder, n) for n in read) if p), None)
    return replace(found, problem=problem) if problem else found


def run_is_done(out: Path, run_id: str) -> bool:
    """Whether run ``run_id`` has a complete, readable result in ``out`` (see :func:`read_run`)."""
    return read_run(run_dir(out, run_id)).done


def set_aside(folder: Path) -> None:
    """Make run folder ``folder`` unfinished (its summary removed) so that ``kdbench run`` redoes it;
    the curve and the kept student are replaced when it finishes again."""
    folder = Path(folder)
    for name in ("summary.json", "state.pt"):  # no state: the run starts again from step 0
        (folder / name).unlink(missing_ok=True)
    integrity.forget(folder, "summary.json", "state.pt")


TEACHER_RECORDS = ("summary.json", "curve.json", "teacher.json", "tokenizer.json")


def teacher_problems(folder: Path) -> dict[str, str]:
    """Why each record file of teacher folder ``folder`` cannot be trusted, ``{file name: reason}``
    (empty when all can): every one present must match its recorded sha256 (see
    :mod:`kdbench.run.integrity`; a folder without ``hashes.json`` is trusted), summary.json be a
    JSON object, a trained teacher's curve.json a non-empty list of evaluations, and teacher.json
    (absent from teachers cached before kdbench recorded models) a JSON object with the model's spec."""
    folder = Path(folder)
    manifest, broken = integrity.read_hashes(folder)
    if broken:
        return {integrity.HASHES: broken}
    found, problems = {}, {}
    for name in TEACHER_RECORDS:
        if (folder / name).exists():
            found[name], why = _load_checked(folder, name, manifest is not None)
            if why:
                problems[name] = why
    summary = found.get("summary.json")
    if "summary.json" in found and "summary.json" not in problems and not isinstance(summary, dict):
        problems["summary.json"] = "summary.json is not a JSON object"
    if isinstance(summary, dict) and summary.get("status") == "finished" and not summary.get("given"):
        curve = found.get("curve.json")
        if "curve.json" not in problems and (not isinstance(curve, list) or not curve
                                             or not all(isinstance(p, dict) and "flops" in p for p in curve)):
            problems["curve.json"] = "curve.json is missing or not a non-empty list of evaluations"
    record = found.get("teacher.json")
    well_formed = isinstance(record, dict) and isinstance(record.get("model"), dict)
    if "teacher.json" in found and "teacher.json" not in problems and not well_formed:
        problems["teacher.json"] = "teacher.json is not a model record (no model spec)"
    return problems


def read_progress(folder: Path) -> Optional[dict]:
    """A running job's ``progress.json`` (``step`` of ``total``), or None."""
    progress = read_json(Path(folder) / "progress.json")
    ok = isinstance(progress, dict) and all(isinstance(progress.get(k), int) for k in ("step", "total"))
    return progress if ok else None


def saved_step(folder: Path) -> Optional[tuple[int, int]]:
    """(step, total steps) of the state saved in ``folder/state.pt`` (a run or a teacher stopped
    before its end), or None when there is none or it does not load. Tensors are memory-mapped:
    only the counters are read."""
    try:
        state = torch.load(Path(folder) / "state.pt", map_location="cpu", weights_only=True, mmap=True)
        return int(state["step"]), int(sum(state.get("phase_steps") or [0]))
    except Exception:  # noqa: BLE001 - missing, half-written or of another version: no step to show
        return None


def is_locked(folder: Path) -> bool:
    """Whether a process holds ``folder/.lock`` now (a run or a teacher training there: the lock
    is the operating system's, so a process that died holds none). Takes and drops the lock
    when it is free; False when there is no lock file or it cannot be opened."""
    path = Path(folder) / ".lock"
    if not path.is_file():
        return False
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    except OSError:  # a read-only folder: the lock cannot be taken to find out
        return False
    lock.release()
    return False


OUTPUTS_STAMP = ".outputs-stamp"


def outputs_stamp(out: Path, version: str) -> str:
    """A digest of every file in results folder ``out`` (path, size, modification time) and of
    ``version`` (kdbench's): equal digests mean the leaderboard and figures written with the
    first are still those the folder's files give. The stamp file itself is left out."""
    digest = hashlib.sha256(version.encode())
    for root, dirs, files in os.walk(out):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if name == OUTPUTS_STAMP and Path(root) == Path(out):
                continue
            with contextlib.suppress(OSError):  # a file another process just replaced
                st = path.stat()
                digest.update(f"{path.relative_to(out)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def outputs_up_to_date(out: Path, version: str) -> bool:
    """Whether no file of ``out`` changed since :func:`record_outputs` was last called on it."""
    try:
        return (Path(out) / OUTPUTS_STAMP).read_text() == outputs_stamp(out, version)
    except OSError:
        return False


def record_outputs(out: Path, version: str) -> None:
    """Stamp ``out`` after its leaderboard and figures were written from its files."""
    atomic_write_text(Path(out) / OUTPUTS_STAMP, outputs_stamp(out, version))


def run_labels(run) -> dict:
    """What ``kdbench status`` names a run by before its folder exists (a :class:`kdbench.suite.Run`'s
    task and method labels, seeds and teacher id): the manifest's ``labels`` of one run."""
    return {"task": run.task_label, "method": run.method_label, "seed": run.seed, "teacher_seed": run.teacher_seed,
            "teacher_id": run.teacher_id}


def write_manifest(out: Path, suite_name: str, suite_file: Path, run_ids: list[str],
                   tuning_run_ids: list[str] = (), runs: list = ()) -> Path:
    """Record in ``OUT/suite.json`` which runs the suite being run consists of (its name,
    the sha256 of ``suite_file``, its run ids, and when that was first recorded); the
    results layer shows only those by default. A tuned suite's trial runs (on dev seeds)
    are listed apart, as ``tuning_run_ids``. ``runs`` (:class:`kdbench.suite.Run`) give
    the ``labels`` of those ids (:func:`run_labels`), so that ``kdbench status`` names a run
    whose folder is not written yet. A rerun of the same suite leaves the file as it is.
    Return its path."""
    path = Path(out) / MANIFEST
    manifest = {"suite": suite_name, "sha256": hashlib.sha256(Path(suite_file).read_bytes()).hexdigest(),
                "run_ids": list(run_ids)}
    if tuning_run_ids:
        manifest["tuning_run_ids"] = list(tuning_run_ids)
    listed = {*run_ids, *tuning_run_ids}
    labels = {r.run_id: run_labels(r) for r in runs if r.run_id in listed}
    if labels:
        manifest["labels"] = labels
    old = read_json(path)
    if not (isinstance(old, dict) and {k: v for k, v in old.items() if k != "time"} == manifest):
        atomic_write_json(path, {**manifest, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return path
