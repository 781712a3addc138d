"""Every hook has a docstring, a section in docs/writing-plugins.md and a test that uses it.

Adding a hookspec without all three fails here, naming what is missing.
"""

import re
from pathlib import Path

import pytest

from kdbench import hookspecs

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "writing-plugins.md"
HOOKS = sorted(name for name, fn in vars(hookspecs).items() if hasattr(fn, "kdbench_spec"))


def headings() -> list[str]:
    return [line for line in DOCS.read_text().splitlines() if re.match(r"#{2,4} ", line)]


def test_hooks_are_found():
    assert {"kdbench_register_tasks", "kdbench_register_methods", "kdbench_register_launchers"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring(hook):
    doc = getattr(hookspecs, hook).__doc__ or ""
    assert len(doc.split()) >= 10, f"hookspec {hook} in kdbench/hookspecs.py needs a docstring saying what it returns"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docs_section(hook):
    assert any(f"`{hook}`" in h for h in headings()), (
        f"docs/writing-plugins.md needs a section headed with `{hook}` (e.g. '### `{hook}`')")


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    files = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("plugins/*/tests/**/*.py")]
    # an implementation (a function named after the hook, right under @hookimpl) or a call of the hook;
    # the name in a comment or a string of prose is neither
    implements = re.compile(rf"@(?:kdbench\.)?hookimpl\b[^\n]*\n\s*def {hook}\(|\.hook\.{hook}\(")
    using = [f for f in files if f.name != Path(__file__).name and implements.search(f.read_text())]
    assert using, f"no test under tests/ or plugins/*/tests/ implements or calls the hook {hook}"


def test_docs_name_no_hook_that_does_not_exist():
    documented = {m for h in headings() for m in re.findall(r"`(kdbench_\w+)`", h)}
    assert documented <= set(HOOKS), f"docs/writing-plugins.md documents unknown hooks {documented - set(HOOKS)}"


def test_readme_links_the_plugin_guide():
    assert "docs/writing-plugins.md" in (ROOT / "README.md").read_text()
