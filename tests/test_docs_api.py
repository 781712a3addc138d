"""docs/writing-plugins.md and the public API agree: every exported name is documented, every
``kdbench.X`` the guide names exists."""

import re
from pathlib import Path

import pytest

import kdbench

from conftest import resolve

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "writing-plugins.md"


def code_in_guide() -> str:
    """The guide's code: fenced blocks and inline code spans (where API names are written)."""
    text = GUIDE.read_text()
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return "\n".join(fenced + inline)


@pytest.mark.parametrize("name", kdbench.__all__)
def test_every_exported_name_is_in_the_guide(name):
    assert re.search(rf"(?<![\w.]){re.escape(name)}\b|kdbench\.{re.escape(name)}\b", code_in_guide()), (
        f"kdbench.{name} is exported but docs/writing-plugins.md never names it in code: add it to "
        f"'The public API' and where it is used")


def test_every_kdbench_name_in_the_guide_exists():
    names = sorted(set(re.findall(r"\bkdbench(?:\.[A-Za-z_]\w*)+", GUIDE.read_text())))
    assert "kdbench.Clock" in names and "kdbench.testing.tiny_encoder_task" in names
    missing = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert not missing, f"docs/writing-plugins.md names what does not exist: {missing}"


def test_the_public_api_table_lists_exactly_the_exports():
    section = GUIDE.read_text().split("## The public API", 1)[1]
    table = re.findall(r"^\| (`.*?) \|", section, flags=re.M)
    listed = {name for row in table for name in re.findall(r"`(\w+)`", row)}
    assert listed == set(kdbench.__all__)
