"""Every bad suite ends with exit code 2 and one message naming the file and the field,
never a traceback, and writes nothing to the results folder."""

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, SUITES, kdbench

BAD = sorted((ROOT / "tests" / "data" / "bad_suites").glob("*.yaml"))

# what the message must say, for the files that cannot carry "# expect:" comments
EXPECT = {
    "binary_suite": ["not a text (UTF-8) file"],
}
MAX_MESSAGE = 1500  # an error shows an excerpt of a bad value, never all of it


def expectations(path: Path) -> list[str]:
    if path.stem in EXPECT:
        return EXPECT[path.stem]
    return [line.split(":", 1)[1].strip() for line in path.read_text().splitlines() if line.startswith("# expect:")]


def test_the_corpus_is_big_enough():
    assert len(BAD) >= 30
    assert all(expectations(path) for path in BAD)


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_suite(path, tmp_path):
    out = tmp_path / "out"
    result = kdbench("run", path, "--output", out, "--quiet", expect=2)
    message = result.output
    assert str(path) in message
    for needle in expectations(path):
        assert needle in message, message
    assert "Traceback" not in message
    assert len(message) < MAX_MESSAGE + len(str(path)), message[:3000]
    assert not out.exists()


def test_a_suite_file_over_the_size_limit_is_refused(tmp_path):
    from kdbench.suite.file import MAX_SUITE_BYTES

    path = tmp_path / "huge.yaml"
    path.write_text("name: big\n" + "# padding\n" * (MAX_SUITE_BYTES // 10 + 1))
    result = kdbench("run", path, "--output", tmp_path / "out", "--quiet", expect=2)
    assert str(path) in result.output and f"a suite file is at most {MAX_SUITE_BYTES} bytes" in result.output
    assert not (tmp_path / "out").exists()


def test_merge_keys_and_aliases_are_still_fine(tmp_path):
    """A key merged with ``<<`` may be overridden (not a duplicate); a few aliases are no bomb."""
    path = tmp_path / "merge.yaml"
    path.write_text("""
name: merge
seeds: [0]
budget: {flops: 2e6}
tasks:
  - name: parity-mlp
    params: {n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256}
    teacher: &recipe {optimizer: adam, lr: 0.01, batch_size: 16, steps: 50}
    student: {<<: *recipe, lr: 0.02}
methods:
  - name: one-shot
""")
    assert "= 1 runs" in kdbench("validate", path).output


VALID = yaml.safe_load((SUITES / "smoke.yaml").read_text())


def paths(node, prefix=()):
    """Every (path, value) in a YAML tree."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, prefix + (i,))


def set_at(tree, path, value):
    node = tree
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def delete_at(tree, path):
    node = tree
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]


ALL = list(paths(VALID))
MAPPINGS = [p for p, v in ALL if isinstance(v, dict)]
LEAVES = [p for p, v in ALL if p and not isinstance(v, (dict, list)) and p[-1] != "description"]
REQUIRED = [("name",), ("seeds",), ("tasks",), ("methods",), ("tasks", 0, "name"), ("methods", 0, "name")]


@st.composite
def mutated(draw):
    """A mutation of the smoke suite that can never be valid."""
    tree = copy.deepcopy(VALID)
    kind = draw(st.sampled_from(["unknown-key", "wrong-type", "delete-required"]))
    if kind == "unknown-key":
        where = draw(st.sampled_from(MAPPINGS))
        key = "zz_" + draw(st.text("abcdefghij", min_size=1, max_size=6))
        node = tree
        for part in where:
            node = node[part]
        if where and where[-1] == "params":  # plugin params: the plugin must reject it too
            node[key] = 1
        else:
            node[key] = draw(st.one_of(st.integers(), st.text(max_size=5), st.none()))
    elif kind == "wrong-type":
        set_at(tree, draw(st.sampled_from(LEAVES)), {"zz_bad": [draw(st.integers())]})
    else:
        delete_at(tree, draw(st.sampled_from(REQUIRED)))
    return kind, tree


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated())
def test_mutated_suites_fail_cleanly(case, tmp_path_factory):
    kind, tree = case
    folder = tmp_path_factory.mktemp("mut")
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(tree))
    out = folder / "out"
    result = kdbench("run", path, "--output", out, "--quiet", expect=None)
    assert result.exit_code == 2, (kind, tree, result.output)
    assert str(path) in result.output and "Traceback" not in result.output
    assert not out.exists()
