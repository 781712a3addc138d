"""Run ids are stable hashes of what determines a result."""

from kdbench.plugins import load_plugins
from kdbench.suite.expand import load_suite

from conftest import tiny_suite


def ids(path):
    loaded, _ = load_suite(path, load_plugins)
    return [r.run_id for r in loaded.runs]


def test_same_suite_same_ids(write_suite):
    a = ids(write_suite(tiny_suite(), "a.yaml"))
    b = ids(write_suite(tiny_suite(), "b.yaml"))
    assert a == b and len(a) == 1 and len(a[0]) == 12


def test_ids_change_with_what_matters(write_suite):
    base = ids(write_suite(tiny_suite(), "a.yaml"))
    for changed in (tiny_suite(flops=3e6), tiny_suite().replace("n: 10,", "n: 11,"),
                    tiny_suite(methods="  - name: one-shot\n    params: {temperature: 2.0}"),
                    tiny_suite().replace("seeds: [0]", "seeds: [1]"),
                    tiny_suite().replace("steps: 50", "steps: 51")):
        assert ids(write_suite(changed, "b.yaml")) != base


def test_ids_ignore_labels_and_defaults(write_suite):
    base = ids(write_suite(tiny_suite(), "a.yaml"))
    relabelled = tiny_suite(methods="  - name: one-shot\n    label: hinton\n    params: {temperature: 1.0}")
    assert ids(write_suite(relabelled, "b.yaml")) == base
    assert ids(write_suite(tiny_suite().replace("name: tiny", "name: other"), "c.yaml")) == base
