"""Content hashes of the files kdbench writes and later trusts, and fingerprints of plugin code.

Every run and teacher folder holds ``hashes.json``: ``{file name: sha256}`` (names
relative to the folder: ``curve.json``, ``checkpoints/step-000000020.pt``). A file is
hashed right after it is written (:func:`record`, under the folder's lock, the
manifest itself written atomically) and checked before it feeds a result or a
decision to skip work (:func:`problem`): a file that no longer matches is treated
as a corrupt one, named in a warning and recomputed. A folder without
``hashes.json`` was written before kdbench recorded hashes: its files are trusted
as they are (the structural checks of :mod:`kdbench.run.store` still apply).

A file's hash is remembered in the process by (path, inode, size, modification
time) when it is over 1 MiB, so a teacher's weights are read once per process
however many runs check them; smaller files are hashed on every check.

:func:`code_fingerprint` is the sha256 of the code of a plugin class: its module's
file for kdbench's own plugins and plugin files, every ``.py`` file of its top-level
package for an installed plugin package.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Optional, Union

from kdbench.files import atomic_write_json

HASHES = "hashes.json"
MEMO_BYTES = 1 << 20  # files at least this big are hashed once per process (see the module docstring)
_memo: dict[tuple, str] = {}
STATS = {"files": 0, "bytes": 0, "seconds": 0.0}  # what this process spent hashing (reported by benchmarks)

PathLike = Union[str, Path]


def sha256_file(path: PathLike) -> str:
    """The sha256 (hex) of the file at ``path``."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if st.st_size >= MEMO_BYTES and key in _memo:
        return _memo[key]
    started, digest = time.perf_counter(), hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    STATS["files"] += 1
    STATS["bytes"] += st.st_size
    STATS["seconds"] += time.perf_counter() - started
    if st.st_size >= MEMO_BYTES:
        _memo[key] = digest.hexdigest()
    return digest.hexdigest()


def _name(folder: Path, path: PathLike) -> str:
    """``path`` (a path under ``folder``, or a name relative to it) as the manifest names it."""
    path, folder = Path(path), Path(folder)
    if path.is_absolute():
        return path.relative_to(folder if folder.is_absolute() else folder.resolve()).as_posix()
    if path.parts[:len(folder.parts)] == folder.parts:
        return Path(*path.parts[len(folder.parts):]).as_posix()
    return path.as_posix()


def read_hashes(folder: PathLike) -> tuple[Optional[dict], Optional[str]]:
    """(``folder``'s manifest, None); (None, None) when it has none; (None, why) when it is corrupt."""
    path = Path(folder) / HASHES
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{HASHES} is unreadable ({type(exc).__name__})"
    if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
        return None, f"{HASHES} is not a JSON object of sha256 strings"
    return manifest, None


def record(folder: PathLike, *paths: PathLike) -> None:
    """Hash ``paths`` (files just written in ``folder`` or below it) into ``folder``'s manifest.
    Call it under the folder's lock: the manifest is read, updated and rewritten."""
    folder = Path(folder)
    manifest = read_hashes(folder)[0] or {}
    manifest.update({_name(folder, p): sha256_file(folder / _name(folder, p)) for p in paths})
    atomic_write_json(folder / HASHES, manifest)


def forget(folder: PathLike, *paths: PathLike) -> None:
    """Drop ``paths`` (files removed) from ``folder``'s manifest, if it names them."""
    folder = Path(folder)
    manifest = read_hashes(folder)[0]
    names = {_name(folder, p) for p in paths}
    if manifest is not None and names & set(manifest):
        atomic_write_json(folder / HASHES, {k: v for k, v in manifest.items() if k not in names})


def problem(folder: PathLike, path: PathLike, legacy_ok: bool = True) -> Optional[str]:
    """Why the file ``path`` of ``folder`` cannot be trusted, or None: its content does not match the
    recorded sha256, or the manifest has no entry for it. A folder without a manifest (written before
    kdbench recorded hashes) trusts its files unless not ``legacy_ok``."""
    folder = Path(folder)
    manifest, broken = read_hashes(folder)
    if broken:
        return broken
    name = _name(folder, path)
    if manifest is None:
        return None if legacy_ok else f"{HASHES} missing (the folder recorded its files' sha256 there)"
    if name not in manifest:
        return f"{name} has no sha256 recorded in {HASHES} (written by an interrupted kdbench?)"
    try:
        if sha256_file(folder / name) == manifest[name]:
            return None
    except OSError as exc:
        return f"{name} unreadable ({exc.strerror or exc})"
    return f"{name} does not match the sha256 kdbench recorded when writing it (changed or damaged since)"


# ---------------------------------------------------------------- plugin code


def code_files(cls: type) -> list[Path]:
    """The source files whose content is ``cls``'s code (see the module docstring); [] if unknown."""
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if not file or not Path(file).is_file():
        return []
    top = sys.modules.get(cls.__module__.partition(".")[0])
    package_dir = getattr(top, "__path__", None)
    if cls.__module__.startswith("kdbench.") or not package_dir:  # built-in, or a single-file plugin
        return [Path(file)]
    root = Path(list(package_dir)[0])
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def code_fingerprint(cls: type) -> Optional[str]:
    """16 hex digits of the sha256 of ``cls``'s code files (names and contents); None when unknown."""
    files = code_files(cls)
    if not files:
        return None
    digest = hashlib.sha256()
    root = files[0].parent if len(files) == 1 else Path(os.path.commonpath(files))
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def fingerprints(method_cls: type, task_cls: type) -> dict[str, Optional[str]]:
    """The ``code`` entry of a run's config.json: its method's and its task's code fingerprints."""
    return {"method": code_fingerprint(method_cls), "task": code_fingerprint(task_cls)}


def code_differs(recorded: object, current: dict) -> list[str]:
    """Which of ``current``'s fingerprints (method, task) differ from ``recorded`` (a config's
    ``code``); a fingerprint unknown on either side (older runs) counts as unchanged."""
    recorded = recorded if isinstance(recorded, dict) else {}
    return [k for k, v in current.items() if v and isinstance(recorded.get(k), str) and recorded[k] != v]


def all_hashed(folder: PathLike, paths: Iterable[PathLike]) -> list[str]:
    """The problems (see :func:`problem`) of the files of ``paths`` that exist."""
    folder = Path(folder)
    return [p for p in (problem(folder, x) for x in paths if (folder / _name(folder, x)).exists()) if p]
