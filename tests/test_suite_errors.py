"""Bad suites end with exit code 2 and one message naming the file, the field and the allowed values."""

import pytest

from conftest import kdbench, tiny_suite


CASES = [
    # (suite text, substrings the message must contain)
    (tiny_suite().replace("name: tiny", "name: tiny\nbogus: 1"), ["bogus", "unknown field"]),
    (tiny_suite().replace("seeds: [0]", "seeds: []"), ["seeds", "at least 1"]),
    (tiny_suite().replace("flops: 2000000.0", "flops: -5"), ["budget.flops", "greater than 0"]),
    (tiny_suite(methods="  - name: one-sot"), ["methods[0].name", "one-shot", "allowed", "labels"]),
    (tiny_suite().replace("name: parity-mlp", "name: parity"), ["tasks[0].name", "parity-mlp"]),
    (tiny_suite().replace("n: 10,", "n: ten,"), ["tasks[0].params.n", "integer"]),
    (tiny_suite().replace("k: 2,", "k: 20,"), ["tasks[0].params", "k (20) must be <= n (10)"]),
    (tiny_suite(methods="  - name: one-shot\n    params: {temperature: 0}"),
     ["methods[0].params.temperature", "greater than 0"]),
    (tiny_suite(methods="  - name: one-shot\n    params: {temp: 2}"), ["methods[0].params.temp", "unknown field"]),
    (tiny_suite().replace("optimizer: adam, lr: 0.01, batch_size: 16, steps", "optimizer: lbfgs, lr: 0.01, batch_size: 16, steps"),
     ["tasks[0].teacher.optimizer", "'sgd', 'adam' or 'adamw'"]),
    (tiny_suite(methods="  - name: one-shot\n  - name: one-shot"), ["methods[1].label", "twice"]),
    ("name: x\nseeds: [0\n", ["not valid YAML"]),
    ("- just\n- a list\n", ["YAML mapping"]),
    (tiny_suite().replace("budget: {flops: 2000000.0}", "budget: {steps: 10}"), ["budget", "needs method"]),
    (tiny_suite().replace("name: tiny", "name: ../escape"), ["name", "pattern"]),
]


@pytest.mark.parametrize("text,needles", CASES)
def test_bad_suite_exit_2(text, needles, write_suite, tmp_path):
    path = write_suite(text)
    out = tmp_path / "out"
    result = kdbench("run", path, "--output", out, "--quiet", expect=2)
    message = result.output
    assert str(path) in message
    for needle in needles:
        assert needle in message, message
    assert "Traceback" not in message
    assert not out.exists()


def test_missing_suite_file(tmp_path):
    result = kdbench("validate", tmp_path / "nope.yaml", expect=2)
    assert "no such suite file" in result.output
