"""A griffe extension for kdbench's docstrings (mkdocs.yml: the python handler's ``extensions``).

kdbench's docstrings are written for ``help()`` and read as plain text, with a little
reStructuredText that markdown would show raw:

- ``:class:`kdbench.Task``` (and ``:func:``, ``:mod:``, ``:meth:``, ``:data:``, ...) becomes
  an optional cross-reference: a link where the API reference documents that name, code
  otherwise;
- a paragraph ending in ``::`` ends in ``:`` (the indented block after it is code in both);
- a definition list (a line such as ``tiny_task`` followed by lines indented four spaces,
  as in :mod:`kdbench.testing`) becomes a markdown definition list.

Double backticks (literal text in reST) are already code in markdown.
"""

from __future__ import annotations

import html
import re

import griffe

ROLE = re.compile(r":(?:py:)?(class|func|mod|meth|data|attr|exc|obj):`(~?)([^`]+)`")


def roles(text: str, obj: griffe.Object) -> str:
    """``:role:`name``` as an optional cross-reference to ``name``; a name without a dot is
    looked for beside ``obj``: in its class for ``:meth:`` and ``:attr:``, else in its module."""

    def role(match: re.Match) -> str:
        kind, short, name = match.groups()
        shown = name.rsplit(".", 1)[-1] if short else name
        identifier = name
        if "." not in name:
            scope = obj if obj.is_class or obj.is_module else obj.parent
            if kind not in ("meth", "attr"):
                scope = obj.module
            identifier = f"{scope.path}.{name}"
        return (f'<autoref identifier="{html.escape(identifier)}" optional>'
                f"<code>{html.escape(shown)}</code></autoref>")

    return ROLE.sub(role, text)


def definitions(text: str) -> str:
    """reST definition lists as markdown ones: a line followed by lines indented four spaces,
    after a blank line or another definition, becomes ``term`` then ``:   definition``."""
    lines, out, i, after_definition = text.split("\n"), [], 0, False
    while i < len(lines):
        line = lines[i]
        starts = i == 0 or not lines[i - 1].strip() or after_definition
        if (line.strip() and not line.startswith(" ") and starts and i + 1 < len(lines)
                and lines[i + 1].startswith("    ") and lines[i + 1].strip()):
            if after_definition:
                out.append("")
            out.append(line)
            i += 1
            first = True
            while i < len(lines) and lines[i].startswith("    "):
                out.append((":   " if first else "    ") + lines[i][4:])
                first, i = False, i + 1
            after_definition = True
            continue
        after_definition = False
        out.append(line)
        i += 1
    return "\n".join(out)


def convert(text: str, obj: griffe.Object) -> str:
    text = roles(text, obj)
    text = re.sub(r"(\S)::\n", r"\1:\n", text)
    text = re.sub(r"\n\s*::\n", "\n", text)
    return definitions(text)


class RestRoles(griffe.Extension):
    """Converts each docstring when griffe reads it (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value, obj)
