"""The documentation site builds, and the API reference names what exists.

``mkdocs build --strict`` fails on a broken link between pages, a link to a repository file
that does not exist (scripts/mkdocs_hooks.py), a page missing from the nav and a docstring the
API reference cannot render. The ``::: dotted.name`` lines of docs/api/ must import, so a
renamed public name fails here, not for a reader; the public names must each have one.
"""

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kdbench
import kdbench.testing

from conftest import resolve

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"


def documented() -> list[str]:
    """Every name a ``::: dotted.name`` line of docs/api/*.md renders, with its members lists."""
    names = []
    for page in sorted(API.glob("*.md")):
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            match = re.match(r":::\s+([\w.]+)\s*$", line)
            if not match:
                continue
            names.append(match.group(1))
            members = False
            for option in lines[i + 1:]:  # the directive's indented YAML options
                if option.strip() and not option.startswith(" "):
                    break
                if re.match(r"\s+members:\s*$", option):
                    members = True
                elif members and (item := re.match(r"\s+- ([\w.]+)\s*$", option)):
                    names.append(f"{match.group(1)}.{item.group(1)}")
                elif option.strip():
                    members = False
    return names


@pytest.mark.parametrize("name", documented())
def test_every_documented_name_imports(name):
    try:
        resolve(name)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"docs/api/ documents {name}, which does not import ({exc}): rename it there")


@pytest.mark.parametrize("module,name", [("kdbench", n) for n in kdbench.__all__]
                         + [("kdbench.testing", n) for n in kdbench.testing.__all__])
def test_every_public_name_is_documented(module, name):
    """A name of ``kdbench.__all__`` or ``kdbench.testing.__all__`` has a ``:::`` entry in docs/api/,
    under any module path (``kdbench.results.load_results`` documents ``kdbench.load_results``)."""
    assert any(entry.rsplit(".", 1)[-1] == name for entry in documented()), (
        f"{module}.{name} is public but docs/api/ has no ::: entry for it")


def test_the_api_pages_are_found():
    names = documented()
    assert "kdbench.Method" in names and "kdbench.testing.MethodRun" in names
    assert "kdbench.run.runner.execute_run" in names and "kdbench.hookspecs.kdbench_register_tasks" in names


def test_relative_links_of_the_readme_exist():
    """README.md is not part of the site, so mkdocs does not check its links: this does."""
    text = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(), flags=re.S)
    missing = [link for link in re.findall(r"\]\(([^)\s]+)\)", text)
               if not re.match(r"[a-z]+:|#", link) and not (ROOT / link.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (pip install -e '.[docs]')")
def test_the_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1",  # this checkout's kdbench, whichever is installed
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert 'id="kdbench.testing.MethodRun"' in (site / "api" / "testing" / "index.html").read_text()
    # README's Reproduction status, pasted into the site by the hook, numbers included
    assert "0.4987 ± 0.0118" in (site / "reproduction" / "index.html").read_text()


def hooks():
    spec = importlib.util.spec_from_file_location("kdbench_mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(markdown: str, src: str = "results.md", repo_url=None) -> str:
    page = type("Page", (), {"file": type("File", (), {"src_uri": src})()})()
    config = {"docs_dir": str(ROOT / "docs"), "config_file_path": str(ROOT / "mkdocs.yml"), "repo_url": repo_url}
    return hooks().on_page_markdown(markdown, page=page, config=config, files=None)


def test_links_out_of_docs_are_checked_and_pointed_at_the_repository(caplog):
    text = "[guide](writing-plugins.md) [board](../results/quickstart/leaderboard.md#parity-mlp) `[x](../nope.md)`"
    assert render(text) == "[guide](writing-plugins.md) board `[x](../nope.md)`"
    assert render(text, repo_url="https://example.org/kdbench") == (
        "[guide](writing-plugins.md) [board](https://example.org/kdbench/blob/main/results/quickstart/"
        "leaderboard.md#parity-mlp) `[x](../nope.md)`")
    assert not caplog.records
    render("[gone](../results/no-such-file.md)")
    assert "results/no-such-file.md, which does not exist" in caplog.text


def test_an_include_pastes_a_section_with_its_links_rebased():
    text = render("<!-- include ../README.md#reproduction-status -->\n", src="reproduction.md")
    assert "| # | claim |" in text and "## Reproduction status" not in text and "## Documentation" not in text
    assert "[docs/cpu-regimes.md](cpu-regimes.md)" in text  # README's docs/ link, seen from docs/
