"""Run ids are stable hashes of what determines a result."""

from kdbench.plugins import load_plugins
from kdbench.run.pricing import load_suite

from conftest import kdbench, tiny_suite


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


STEPS_BUDGET = tiny_suite(methods="  - name: labels\n  - name: one-shot\n    params: {temperature: TEMP}") \
    .replace("budget: {flops: 2000000.0}", "budget: {steps: 20, method: one-shot}")


def test_the_budget_methods_params_move_only_its_own_runs(write_suite, tmp_path):
    """Issue 27: the budget "20 steps of one-shot" is the same FLOPs whatever one-shot's temperature, so
    changing that temperature reruns one-shot's runs and no other; before, every run got a new id."""
    assert "steps: 20, method: one-shot" in STEPS_BUDGET
    out = tmp_path / "out"
    first = kdbench("run", write_suite(STEPS_BUDGET.replace("TEMP", "1.0"), "a.yaml"), "-o", out, "--quiet")
    assert "2 runs executed, 0 skipped" in first.output
    again = kdbench("run", write_suite(STEPS_BUDGET.replace("TEMP", "2.0"), "b.yaml"), "-o", out, "--quiet")
    assert "1 runs executed, 1 skipped" in again.output
    a = {r.method: r for r in load_suite(write_suite(STEPS_BUDGET.replace("TEMP", "1.0"), "a.yaml"),
                                         load_plugins)[0].runs}
    b = {r.method: r for r in load_suite(write_suite(STEPS_BUDGET.replace("TEMP", "2.0"), "b.yaml"),
                                         load_plugins)[0].runs}
    assert a["labels"].run_id == b["labels"].run_id and a["one-shot"].run_id != b["one-shot"].run_id
    assert a["labels"].budget.priced_flops == b["labels"].budget.priced_flops > 0


def test_a_priced_budget_is_the_same_run_as_its_flops_given_raw(write_suite):
    (priced,) = load_suite(write_suite(tiny_suite().replace("budget: {flops: 2000000.0}",
                                                            "budget: {steps: 20, method: one-shot}"), "a.yaml"),
                           load_plugins)[0].runs
    (raw,) = load_suite(write_suite(tiny_suite(flops=priced.budget.priced_flops), "b.yaml"), load_plugins)[0].runs
    assert priced.run_id == raw.run_id


def test_a_run_carries_its_params_typed_and_records_them_as_data():
    """Issue 27: params are validated once, at expansion; the method gets that object. The run id and
    config.json hold their JSON dump, and a config read back with the plugins gives the same run."""
    from kdbench.suite.identity import Run
    from kdbench.testing import resolve_run

    registry, run = resolve_run("one-shot", {"temperature": 2.0})
    assert isinstance(run.method_params, registry.methods["one-shot"].cls.Params)
    assert isinstance(run.task_params, registry.tasks["parity-mlp"].cls.Params)
    assert run.method_params.temperature == 2.0
    config = run.config()
    assert config["method_params"] == run.method_params.model_dump(mode="json") and config["task_params"]["n"] == 10
    assert Run.from_config(config, registry) == run
