"""Bad suites end with exit code 2 and one message naming the file, the field and the allowed values."""

import pytest

from conftest import kdbench, tiny_suite


CASES = [
    # (suite text, substrings the message must contain)
    (tiny_suite().replace("name: tiny", "name: tiny\nbogus: 1"), ["bogus", "unknown field", "allowed: name, "]),
    (tiny_suite().replace("teacher_width: 64", "teacher_widht: 64"),
     ["tasks[0].params.teacher_widht: unknown field (did you mean 'teacher_width'?); allowed: n, k, support, "
      "levels, probe_degree, teacher_width, student_width, depth, eval_size"]),
    (tiny_suite().replace("teacher_width: 64, student_width", "teacher_widht: 64, studnt_width"),
     ["tasks[0].params.teacher_widht: unknown field (did you mean 'teacher_width'?)",
      "tasks[0].params.studnt_width: unknown field (did you mean 'student_width'?)"]),
    (tiny_suite().replace("optimizer: adam, lr: 0.01, batch_size: 16, steps", "optimiser: adam, lr: 0.01, batch_size: 16, steps"),
     ["tasks[0].teacher.optimiser: unknown field (did you mean 'optimizer'?); allowed: optimizer, lr"]),
    (tiny_suite() + "launcher: {options: {jobz: 2}}\n",
     ["launcher.options.jobz: unknown field (did you mean 'jobs'?); allowed: jobs"]),
    (tiny_suite().replace("seeds: [0]", "seeds: []"), ["seeds", "at least 1"]),
    (tiny_suite().replace("flops: 2000000.0", "flops: -5"), ["budget.flops", "greater than 0"]),
    (tiny_suite(methods="  - name: one-sot"), ["methods[0].name", "one-shot", "allowed", "labels"]),
    (tiny_suite().replace("name: parity-mlp", "name: parity"), ["tasks[0].name", "parity-mlp"]),
    (tiny_suite().replace("n: 10,", "n: ten,"), ["tasks[0].params.n", "integer"]),
    (tiny_suite().replace("k: 2,", "k: 20,"), ["tasks[0].params", "k (20) must be <= n (10)"]),
    (tiny_suite(methods="  - name: one-shot\n    params: {temperature: -1}"),
     ["methods[0].params.temperature", "greater than or equal to 0"]),
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


def test_unknown_launcher_option_on_the_command_line(write_suite, tmp_path):
    result = kdbench("run", write_suite(tiny_suite()), "--output", tmp_path / "out", "-L", "jobz=2", expect=2)
    assert "--launcher local option.jobz: unknown field (did you mean 'jobs'?); allowed: jobs" in result.output
