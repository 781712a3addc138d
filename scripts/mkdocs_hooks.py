r"""mkdocs hooks for kdbench's documentation site (mkdocs.yml: ``hooks:``).

The pages under docs/ are read on GitHub as well as on the site, so their links to
files beside docs/ (``../results/quickstart/leaderboard.md``, ``../kdbench/streams.py``)
are written relative to the page, which works on GitHub and in a clone. mkdocs cannot
follow them (they are not pages), so before each page is rendered:

- a link whose target does not exist is a warning (``mkdocs build --strict`` fails);
- a link to a file outside docs/ points at ``repo_url``'s copy of it when mkdocs.yml
  sets ``repo_url``, and is left as its text (no link) while it does not;
- ``<!-- include ../README.md#section-slug -->`` on a line of its own is replaced by that
  section of the file (its heading left out), with its links rebased to the page;
- in a table row, ``\|`` inside a code span becomes ``|``: GitHub needs the backslash there
  (``auto\|cpu``), Python-Markdown's tables do not and would show it.

Links between pages are left to mkdocs, which checks pages and headings.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.kdbench")

FENCE = re.compile(r"^(```|~~~)[^\n]*\n.*?^\1[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1", re.S)
# [text](target) and ![alt](target): text may hold one level of brackets; target has no spaces
LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^()\s]+)\)")
INCLUDE = re.compile(r"^<!-- include (\S+?)#(\S+) -->[ \t]*$", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def slug(heading: str) -> str:
    """The anchor GitHub and mkdocs' toc give a heading (for the headings used here)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return re.sub(r"\s+", "-", text)


def section(path: Path, anchor: str) -> str:
    """The body of the section of markdown file ``path`` whose heading's slug is ``anchor``."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = level = None
    for i, line in enumerate(lines):
        heading = re.match(r"(#{1,6}) (.*)", line)
        if heading is None:
            continue
        if start is None and slug(heading.group(2)) == anchor:
            start, level = i + 1, len(heading.group(1))
        elif start is not None and len(heading.group(1)) <= level:
            return "".join(lines[start:i])
    if start is None:
        raise ValueError(f"{path} has no section #{anchor}")
    return "".join(lines[start:])


class Page:
    """Rewrites one page's links (see the module docstring)."""

    def __init__(self, src: Path, docs: Path, root: Path, repo_url: str | None, ref: str):
        self.src, self.docs, self.root, self.repo_url, self.ref = src, docs, root, repo_url, ref

    def target(self, link: str, base: Path) -> str | None:
        """The link to write for ``link`` found in text whose links are relative to ``base``;
        None to leave the link's text unlinked."""
        if SCHEME.match(link) or link.startswith(("#", "/")):
            return link
        path, hash_, anchor = link.partition("#")
        resolved = Path(os.path.normpath(base / path))
        if not resolved.exists():
            log.warning("%s: the link %s names %s, which does not exist", self.src.relative_to(self.root), link,
                        resolved.relative_to(self.root) if resolved.is_relative_to(self.root) else resolved)
            return link
        if resolved.is_relative_to(self.docs):  # a page or a file of the site: mkdocs checks it
            return Path(os.path.relpath(resolved, self.src.parent)).as_posix() + hash_ + anchor
        if not resolved.is_relative_to(self.root):
            log.warning("%s: the link %s leaves the repository", self.src.relative_to(self.root), link)
            return link
        if not self.repo_url:
            return None
        kind = "tree" if resolved.is_dir() else "blob"
        return f"{self.repo_url.rstrip('/')}/{kind}/{self.ref}/{resolved.relative_to(self.root).as_posix()}{hash_}{anchor}"

    def links(self, text: str, base: Path) -> str:
        """``text`` with every link outside code rewritten by :meth:`target`."""
        out, last = [], 0
        for fence in FENCE.finditer(text):
            out.append(self._prose(text[last:fence.start()], base))
            out.append(fence.group(0))
            last = fence.end()
        out.append(self._prose(text[last:], base))
        return "".join(out)

    def _prose(self, text: str, base: Path) -> str:
        text = re.sub(r"(?m)^\|.*$", lambda row: CODE_SPAN.sub(lambda c: c.group(0).replace("\\|", "|"),
                                                             row.group(0)), text)
        spans = [m.span() for m in CODE_SPAN.finditer(text)]

        def replace(match: re.Match) -> str:
            if any(a <= match.start() < b for a, b in spans):
                return match.group(0)
            bang, label, link = match.groups()
            new = self.target(link, base)
            if new is None:
                return label if not bang else match.group(0)
            return f"{bang}[{label}]({new})"

        return LINK.sub(replace, text)

    def includes(self, text: str) -> str:
        """``text`` with each include comment replaced by the section it names (links rebased)."""

        def paste(match: re.Match) -> str:
            path = Path(os.path.normpath(self.src.parent / match.group(1)))
            return self.links(section(path, match.group(2)), path.parent)

        return INCLUDE.sub(paste, text)


def on_page_markdown(markdown, page, config, files, **kwargs):
    docs = Path(config["docs_dir"]).resolve()
    root = Path(config["config_file_path"]).resolve().parent
    ref = (config.get("extra") or {}).get("source_ref", "main")
    rewriter = Page(docs / page.file.src_uri, docs, root, config.get("repo_url"), ref)
    pasted = []

    def keep(match: re.Match) -> str:  # included text is rebased once, when pasted
        pasted.append(match.group(0))
        return f"\x00{len(pasted) - 1}\x00"

    text = INCLUDE.sub(keep, markdown)
    text = rewriter.links(text, rewriter.src.parent)
    return re.sub("\x00(\\d+)\x00", lambda m: rewriter.includes(pasted[int(m.group(1))]), text)
