"""Reading a suite file without letting it hurt: a bounded size, a bounded expansion of
YAML aliases ("billion laughs"), duplicate keys refused, and only short excerpts of bad
values in messages.
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Any

import yaml

from kdbench.errors import UserError

MAX_SUITE_BYTES = 1 << 20  # a suite is a page of YAML; a megabyte is not a suite
MAX_NODES = 100_000  # YAML nodes with every alias expanded
EXCERPT_CHARS = 200

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxdict, _repr.maxlist, _repr.maxtuple, _repr.maxset = 3, 8, 8, 8, 8
_repr.maxstring = _repr.maxother = _repr.maxlong = EXCERPT_CHARS


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters, at a cost bounded whatever ``value`` is."""
    text = _repr.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class SuiteYAMLError(yaml.YAMLError):
    """A suite's YAML is well-formed but not acceptable (duplicate key, too many nodes, a cycle)."""


class _SuiteLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (merge keys aside)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # keys merged with "<<" may be overridden: that is what merging is for
                key, line = self.construct_object(key_node, deep=deep), key_node.start_mark.line + 1
                try:
                    if key in first:
                        raise SuiteYAMLError(f"line {line}: duplicate key {excerpt(key)} (first given at "
                                             f"line {first[key]}); give each key once")
                    first[key] = line
                except TypeError:  # an unhashable key: the base class says so
                    continue
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 floats that YAML 1.1 (PyYAML) reads as strings: an exponent without a dot or without a sign
# (1e6, 1.0e5, 2E-3): a suite's `flops: 1e6` is the number it looks like
_SuiteLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_expansion(root: yaml.Node, limit: int = MAX_NODES) -> None:
    """Raise :class:`SuiteYAMLError` if ``root``, with every alias expanded, has more than
    ``limit`` nodes or contains itself. Linear in the distinct nodes (sizes are memoised)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            active.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[key] > limit:
                raise SuiteYAMLError(f"line {node.start_mark.line + 1}: expands to more than {limit} values "
                                     "(aliases of aliases); write the suite out plainly")
            continue
        if key in sizes:
            continue
        if key in active:
            raise SuiteYAMLError(f"line {node.start_mark.line + 1}: an alias refers to a node that contains it")
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def load_yaml(text: str) -> Any:
    """The single YAML document in ``text``, read safely (see the module docstring)."""
    loader = _SuiteLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        check_expansion(root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def read_suite_file(path: Path) -> dict:
    """The suite file's YAML mapping; any problem reading it is a :class:`UserError` naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such suite file" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        if path.stat().st_size > MAX_SUITE_BYTES:
            raise UserError(f"{path}: {path.stat().st_size} bytes; a suite file is at most {MAX_SUITE_BYTES} bytes")
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read the suite file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a text (UTF-8) file: byte {exc.start} is {exc.object[exc.start]:#04x}") from exc
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split())
        raise UserError(f"{path}: not valid YAML: {message[:500]}") from exc
    except RecursionError as exc:
        raise UserError(f"{path}: not valid YAML: nested too deeply") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: a suite is a YAML mapping with name, seeds, tasks, methods, budget")
    return data
