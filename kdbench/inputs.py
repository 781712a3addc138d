"""Files a suite names: where they are, and what they hold.

A plugin param that names a file or folder is declared with :class:`PathParam`
metadata, e.g. ``corpus: Annotated[str, PathParam()] = Field(...)``. When a suite
is loaded, such a value (and the suite's ``teacher_checkpoint``):

- may name environment variables, ``${NAME}`` or ``${NAME:-default}``, so a
  suite can leave a corpus or a checkpoint to each user's machine;
- is resolved relative to the folder of the suite file (an absolute path, or
  one starting with ``~``, is used as it is);
- is hashed: the sha256 of the contents of every file it names. The hash, not
  the path, is part of the ids of the runs and the teacher that read it, so new
  contents behind the same path are new runs (never a cached teacher trained on
  the old ones), and a results folder made elsewhere keeps its ids.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from pydantic import BaseModel

from kdbench.errors import UserError

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class PathParam:
    """Marks a ``str`` param as naming a file or folder (see the module docstring).

    ``when(value)`` says whether a value is a path at all (``hf:NAME`` corpora and
    named grammars are not); ``files(path)`` lists the files the plugin will read
    (default: the file, or every file below the folder), whose contents are hashed.
    """

    when: Callable[[str], bool] = lambda value: True
    files: Optional[Callable[[Path], list[Path]]] = None


def expand_variables(value: str, where: str) -> str:
    """``value`` with ``${NAME}`` / ``${NAME:-default}`` replaced from the environment; as in
    the shell, the default also replaces a variable set to the empty string."""

    def substitute(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if default is not None:
            return os.environ.get(name) or default
        if name in os.environ:
            return os.environ[name]
        raise UserError(f"{where}: environment variable {name} is not set (write ${{{name}:-default}} "
                        "to give a default)")

    return _VARIABLE.sub(substitute, value)


def resolve_path(value: str, base: Path, where: str) -> str:
    """``value`` (variables expanded, ``~`` expanded) as an absolute path, relative ones against ``base``."""
    path = Path(expand_variables(value, where)).expanduser()
    return str(path if path.is_absolute() else (Path(base) / path).resolve())


def content_hash(files: list[Path]) -> str:
    """sha256 over the files' names (relative to their common folder) and contents, in sorted order."""
    files = sorted(Path(f) for f in files)
    root = Path(os.path.commonpath([str(f.parent) for f in files])) if files else Path()
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def path_params(model: type[BaseModel]) -> dict[str, PathParam]:
    """The params of ``model`` declared with :class:`PathParam`, by name."""
    return {name: marker for name, field in model.model_fields.items()
            for marker in field.metadata if isinstance(marker, PathParam)}


def resolve_params(raw: dict, model: type[BaseModel], base: Path, where: str) -> dict:
    """``raw`` params with every path param's variables expanded and, where the value is a path,
    resolved against ``base`` (before validation)."""
    resolved = dict(raw)
    for name, marker in path_params(model).items():
        value = raw.get(name)
        if isinstance(value, str):
            value = expand_variables(value, f"{where}.{name}")
            resolved[name] = resolve_path(value, base, f"{where}.{name}") if marker.when(value) else value
    return resolved


def hash_params(params: BaseModel, where: str) -> dict[str, str]:
    """``{param: "sha256:..."}`` for every path param of validated ``params`` that names files."""
    hashes = {}
    for name, marker in path_params(type(params)).items():
        value = getattr(params, name)
        if isinstance(value, str) and marker.when(value):
            hashes[name] = "sha256:" + content_hash(_files(Path(value), marker, f"{where}.{name}"))
    return hashes


def hash_file(path: Path, where: str) -> str:
    """``"sha256:..."`` of one file a suite names."""
    return "sha256:" + content_hash(_files(Path(path), PathParam(), where))


def _files(path: Path, marker: PathParam, where: str) -> list[Path]:
    try:
        if marker.files is not None:
            return marker.files(path)
        if path.is_dir():
            return [p for p in path.rglob("*") if p.is_file()]
        if path.is_file():
            return [path]
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from exc
    raise UserError(f"{where}: no such file or folder {str(path)!r}")
