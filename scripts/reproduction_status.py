"""README.md's Reproduction status table, generated from the committed results' claims.

``kdbench run`` (and ``kdbench check RESULTS --json RESULTS/claims.json``) writes
``results/<folder>/claims.json`` for a suite with ``claims:``. This script rewrites the
table between ``<!-- claims:begin -->`` and ``<!-- claims:end -->`` in README.md from
those files: a row per claim (and task), with the teacher seeds it holds on and its verdict.

::

    python scripts/reproduction_status.py           # rewrite README.md in place
    python scripts/reproduction_status.py --check   # exit 1 (and show the difference) if README.md is out of date

tests/test_reproduction_status.py runs ``--check``, so README and the committed results cannot disagree.
"""

from __future__ import annotations

import argparse
import difflib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- claims:begin -->", "<!-- claims:end -->"
HEADER = ["| suite | claim | task | metric | teacher seeds | verdict |", "|---|---|---|---|---|---|"]
NONE_YET = ("No committed claims yet: no `results/*/claims.json` (`kdbench run` writes one for a suite with "
            "`claims:`).")


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def claim_row(folder: str, suite: str, claim: dict) -> str:
    """One table row: the suite (linked to its claims.json), the claim, its task and metric, on how many
    teacher seeds it holds (which, and the paired student seeds at each), and the verdict."""
    seeds = claim["teacher_seeds"]
    by_status: dict[str, list[str]] = {}
    for t in claim["teachers"]:
        by_status.setdefault(t["status"], []).append(str(t["teacher_seed"]))
    named = "; ".join(f"{status}: {', '.join(found)}" for status, found in by_status.items())
    holds = (f"holds on {claim['held']} of {len(seeds)} teacher seeds ({named}; "
             f"{claim['student_seeds']} student seeds each)")
    by = f" by > {claim['margin']:g}" if claim.get("margin") else ""
    return (f"| [{_cell(suite)}]({folder}/claims.json) | {_cell(claim['name'])}: {_cell(claim['better'])} > "
            f"{_cell(claim['than'])}{by} | {_cell(claim['task'])} | {_cell(claim['metric'])} | {holds} | "
            f"**{_cell(claim['verdict'])}** |")


def claims_files(root: Path) -> list[Path]:
    """``root/results/*/claims.json``, in order; in a git checkout only those git does not ignore (run
    output such as results/smoke/ is ignored: only the reference results are committed)."""
    found = sorted((root / "results").glob("*/claims.json"))
    try:
        listed = subprocess.run(["git", "-C", str(root), "ls-files", "--cached", "--others", "--exclude-standard",
                                 "--", "results"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):  # no git, or not a checkout: every file counts
        return found
    kept = {(root / line).resolve() for line in listed}
    return [path for path in found if path.resolve() in kept]


def status_table(root: Path) -> str:
    """The generated table (markdown, markers excluded) from :func:`claims_files`."""
    rows = []
    for path in claims_files(root):
        doc = json.loads(path.read_text(encoding="utf-8"))
        folder = path.parent.relative_to(root).as_posix()
        rows += [claim_row(folder, doc.get("suite") or path.parent.name, c) for c in doc.get("claims", [])]
    lines = ([NONE_YET, ""] if not rows else []) + HEADER + rows
    return "\n".join(lines)


def rewritten(readme: str, table: str, where: str = "README.md") -> str:
    """``readme`` with ``table`` between the markers (each on a line of its own)."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise SystemExit(f"{where}: needs one {BEGIN} line followed by one {END} line")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{table}\n\n{END}{tail}"  # blank lines: the table is its own block


def main(argv=None) -> int:
    """Rewrite README.md's generated table, or with ``--check`` report whether it is up to date (0) or not (1)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md differs from the results")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (README.md and results/)")
    args = parser.parse_args(argv)
    readme_path = args.root / "README.md"
    readme = readme_path.read_text(encoding="utf-8")
    new = rewritten(readme, status_table(args.root), str(readme_path))
    if new == readme:
        return 0
    if args.check:
        sys.stdout.writelines(difflib.unified_diff(readme.splitlines(keepends=True), new.splitlines(keepends=True),
                                                   str(readme_path), "from results/*/claims.json"))
        print(f"{readme_path}: the Reproduction status table differs from the committed results; "
              "run python scripts/reproduction_status.py", file=sys.stderr)
        return 1
    readme_path.write_text(new, encoding="utf-8")
    print(f"rewrote {readme_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
