"""Loggers (experiment trackers): each built-in's files read back with its library's own reader
and compared with the run's own curve and summary; a failing logger never fails a run; loggers
log from worker processes; how loggers are chosen and validated. No network: W&B is offline."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, kdbench, tiny_suite

RECORDING = ROOT / "tests" / "data" / "plugins" / "recording_loggers.py"
TWO_METHODS = "  - name: one-shot\n  - name: labels"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Trackers stay off the network and keep their files under tmp_path."""
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_DISABLE_TELEMETRY": "true",
                        "DO_NOT_TRACK": "true"}.items():
        monkeypatch.setenv(name, value)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / name.lower()))
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the mlflow logger sets it for its file store


def run_tiny(write_suite, tmp_path, *args, methods=TWO_METHODS, extra="", expect=0):
    """Run a tiny parity suite (one run per method) into tmp_path/out; return (out, CLI result)."""
    out = tmp_path / "out"
    result = kdbench("run", write_suite(tiny_suite(methods) + extra), "-o", out, "-q", "-L", "threads=1", *args,
                     expect=expect)
    return out, result


def runs(out):
    """{run id: (config, curve, summary)} of every run folder under ``out``."""
    read = lambda d, name: json.loads((d / name).read_text())  # noqa: E731
    return {d.name: (read(d, "config.json"), read(d, "curve.json"), read(d, "summary.json"))
            for d in sorted((out / "runs").iterdir())}


def same_series(got, expected) -> bool:
    """(x, value) pairs: the same xs, values equal to float32 precision (TensorBoard stores float32)."""
    got, expected = list(got), list(expected)
    return [x for x, _ in got] == [x for x, _ in expected] and \
        [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)


def calls(path) -> list[dict]:
    """What the recording loggers wrote."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()] if Path(path).exists() else []


def test_tensorboard_event_files_hold_the_curve_against_steps_and_flops(write_suite, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = run_tiny(write_suite, tmp_path, "--log", "tensorboard")
    found = runs(out)
    assert len(found) == 2
    for run_id, (config, curve, summary) in found.items():
        events = EventAccumulator(str(out / "tensorboard" / "parity-mlp" / config["method_label"] / f"seed0-{run_id}"))
        events.Reload()
        scalars = lambda tag: [(e.step, e.value) for e in events.Scalars(tag)]  # noqa: E731
        assert same_series(scalars("accuracy"), [(p["step"], p["accuracy"]) for p in curve])
        assert same_series(scalars("by_flops/accuracy"), [(p["flops"], p["accuracy"]) for p in curve])
        assert same_series(scalars("cost/flops"), [(p["step"], p["flops"]) for p in curve])
        (final,) = events.Scalars("final/accuracy")
        assert (final.step, final.value) == (summary["steps"], pytest.approx(summary["metrics"]["accuracy"]))
        phases = [e.tensor_proto.string_val[0].decode() for e in events.Tensors("phase/text_summary")]
        assert phases == [curve[0]["phase"]]  # one phase: written once
        assert run_id.encode() in events.Tensors("config/text_summary")[0].tensor_proto.string_val[0]


def test_mlflow_file_store_holds_params_metric_history_and_summary(write_suite, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    store = tmp_path / "tracking"  # the suite names its own store
    out, _ = run_tiny(write_suite, tmp_path, extra=f"loggers: [{{name: mlflow, options: {{tracking_uri: "
                                                   f"'{store.as_uri()}', experiment: kd}}}}]\n")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store.as_uri())
    mlruns = client.search_runs([client.get_experiment_by_name("kd").experiment_id])
    by_id = {r.data.tags["kdbench.run_id"]: r for r in mlruns}
    found = runs(out)
    assert sorted(by_id) == sorted(found)  # one MLflow run per kdbench run
    for run_id, (config, curve, summary) in found.items():
        mlrun = by_id[run_id]
        assert mlrun.info.status == "FINISHED" and mlrun.data.tags["kdbench.status"] == "finished"
        params = mlrun.data.params
        assert (params["method"], params["task_params.n"], params["seed"]) == (config["method"], "10", "0")
        assert params["student_recipe.lr"] == str(config["student_recipe"]["lr"])
        history = client.get_metric_history(mlrun.info.run_id, "accuracy")
        assert same_series(sorted((m.step, m.value) for m in history), [(p["step"], p["accuracy"]) for p in curve])
        flops = client.get_metric_history(mlrun.info.run_id, "flops")
        assert sorted((m.step, m.value) for m in flops) == [(p["step"], p["flops"]) for p in curve]
        assert mlrun.data.metrics["final/accuracy"] == pytest.approx(summary["metrics"]["accuracy"])
        assert mlrun.data.metrics["summary/flops"] == summary["flops"]
    assert not (out / "mlruns").exists()  # the default store is not used when the suite names one


def test_an_interrupted_run_resumes_its_mlflow_run(write_suite, tmp_path, monkeypatch):
    """Ctrl-C (raised at the third curve point) closes the loggers; the next `kdbench run` resumes
    the run and continues the same MLflow run, in the default store OUT/mlruns."""
    pytest.importorskip("mlflow")
    suite = write_suite(tiny_suite("  - name: labels") + "save_every_s: 0.001\n")
    args = ("-o", tmp_path / "out", "-q", "-L", "threads=1", "--plugin", RECORDING, "--log", "mlflow")
    kdbench("run", suite, *args, "--log", "recorder:interrupt_at=3", expect=130)
    out = tmp_path / "out"
    assert [c["summary"]["status"] for c in calls(out / "calls.jsonl") if c["call"] == "finish"] == ["interrupted"]
    kdbench("run", suite, *args, "--log", "recorder:interrupt_at=3")
    (run_id, (_, curve, summary)), = runs(out).items()
    assert summary["resumed_from"] is not None
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    (mlrun,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert mlrun.data.tags["kdbench.run_id"] == run_id and mlrun.info.status == "FINISHED"
    history = {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, "accuracy")}
    assert history == pytest.approx({p["step"]: p["accuracy"] for p in curve})


def wandb_records(run_file: Path) -> list[dict]:
    """The records of an offline W&B run, read by W&B's own reader (`wandb leet inspect --json`)."""
    done = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_file)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_wandb_offline_run_holds_config_history_and_summary(write_suite, tmp_path):
    pytest.importorskip("wandb")
    out, _ = run_tiny(write_suite, tmp_path, "--log", "wandb:tags=[kd, test]")
    found = runs(out)
    files = {f.name.removeprefix("run-").rsplit("-", 1)[0]: f for f in out.glob("wandb/offline-run-*/run-*.wandb")}
    assert sorted(files) == sorted(found)  # one offline W&B run per kdbench run, under the results folder
    for run_id, (config, curve, summary) in found.items():
        records = wandb_records(files[run_id])
        (start,) = [r["run"] for r in records if r["type"] == "run"]
        assert start["display_name"] == f"parity-mlp/{config['method_label']}/seed0"
        assert start["config"]["update"]["task_params"]["n"] == 10
        assert {"kd", "test", config["method_label"]} <= set(start.get("tags", []))
        history = [r["history"]["item"] for r in records if r["type"] == "history"]
        assert same_series([(h["_step"], h["accuracy"]) for h in history], [(p["step"], p["accuracy"]) for p in curve])
        assert [h["flops"] for h in history] == [p["flops"] for p in curve]
        assert all(h["phase"] == p["phase"] for h, p in zip(history, curve))
        final = {}
        for r in records:
            if r["type"] == "summary":
                final.update(r["summary"].get("update", {}))
        assert final["status"] == "finished"
        assert final["final/accuracy"] == pytest.approx(summary["metrics"]["accuracy"])
        assert [r["exit"].get("exit_code", 0) for r in records if r["type"] == "exit"] == [0]


def test_wandb_is_offline_unless_an_api_key_is_configured(monkeypatch, tmp_path):
    from kdbench.loggers.wandb import wandb_mode

    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # no netrc file: no key
    assert wandb_mode(None) == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password k3y\n")
    assert wandb_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode("online") == "offline"  # the environment's offline mode always wins
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode("disabled") == "disabled"


def test_a_failing_logger_never_fails_the_run(write_suite, tmp_path):
    """`flaky` raises at its second curve point: one warning per run naming it, no call after it;
    the run, and `recorder` beside it, go on to the end."""
    out, result = run_tiny(write_suite, tmp_path, "--plugin", RECORDING, "--log", "flaky", "--log", "recorder")
    found = runs(out)
    assert all(summary["status"] == "finished" for _, _, summary in found.values())
    warnings = [line for line in result.output.splitlines() if "logger flaky failed" in line]
    assert len(warnings) == 2 and all("RuntimeError: tracker unreachable" in w for w in warnings)
    assert sorted(w.split(" of run ")[1].split()[0] for w in warnings) == sorted(found)
    recorded = calls(out / "calls.jsonl")
    for run_id, (_, curve, summary) in found.items():
        flaky = [c["call"] for c in recorded if c["logger"] == "flaky" and c["run_id"] == run_id]
        assert flaky == ["start", "point", "point"]
        steady = [c for c in recorded if c["logger"] == "recorder" and c["run_id"] == run_id]
        assert [c["call"] for c in steady] == ["start"] + ["point"] * len(curve) + ["finish"]
        assert [c["step"] for c in steady[1:-1]] == [p["step"] for p in curve]
        assert steady[-1]["summary"] == summary
    kdbench("run", out / "suite.yaml", "-o", out, "-q", "--plugin", RECORDING, "--log", "recorder")
    assert len(calls(out / "calls.jsonl")) == len(recorded)  # finished runs are skipped: no logger starts


def test_runs_in_worker_processes_log_too(write_suite, tmp_path):
    out, _ = run_tiny(write_suite, tmp_path, "--jobs", "2", "--plugin", RECORDING, "--log", "recorder")
    recorded = calls(out / "calls.jsonl")
    for run_id, (_, curve, _) in runs(out).items():
        points = [c["step"] for c in recorded if c["run_id"] == run_id and c["call"] == "point"]
        assert points == [p["step"] for p in curve]
    assert len({c["pid"] for c in recorded}) == 2  # each run in its own worker


def test_the_python_api_takes_loggers(write_suite, tmp_path):
    import kdbench

    path = write_suite(tiny_suite("  - name: labels"))
    done = kdbench.run_suite(path, tmp_path / "out", plugins=[RECORDING], launcher_options=["threads=1"],
                             loggers=[{"name": "recorder", "options": {"file": "api.jsonl"}}])
    assert len(done.executed) == 1
    recorded = calls(tmp_path / "out" / "api.jsonl")
    assert (recorded[0]["call"], recorded[-1]["call"]) == ("start", "finish")
    assert recorded[0]["config"]["run_id"] == done.executed[0]["run_id"]


@pytest.mark.parametrize("name, install", [("tensorboard", 'pip install "kdbench[tensorboard]"'),
                                           ("mlflow", 'pip install "kdbench[mlflow]"'),
                                           ("wandb", 'pip install "kdbench[wandb]"')])
def test_a_missing_library_is_exit_2_with_the_install_command(write_suite, tmp_path, monkeypatch, name, install):
    monkeypatch.setitem(sys.modules, name, None)  # import fails as if it were not installed
    out, result = run_tiny(write_suite, tmp_path, "--log", name, expect=2)
    assert f"the {name} logger needs {name}, which is not installed" in result.output
    assert install in result.output
    assert not out.exists()


@pytest.mark.parametrize("option, message", [
    ("tensorbord", "--log: unknown logger 'tensorbord' (did you mean 'tensorboard'?)"),
    ("wandb:mode=sometimes", "--log wandb option.mode"),
    ("wandb:mdoe=offline", "--log wandb option.mdoe: unknown field"),
    ("mlflow:tracking_uri", "--log mlflow: 'tracking_uri' is not KEY=VALUE"),
    (":mode=offline", "names no logger"),
])
def test_bad_log_options_are_exit_2(write_suite, tmp_path, option, message):
    out, result = run_tiny(write_suite, tmp_path, "--log", option, expect=2)
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_command_line_loggers_go_on_top_of_the_suites(write_suite):
    from kdbench.commands import load
    from kdbench.loggers.selection import LoggerSpec, choose_loggers

    path = write_suite(tiny_suite() + "loggers: [{name: tensorboard}, {name: mlflow, options: {experiment: a}}]\n")
    loaded, registry = load(path)
    specs = choose_loggers(loaded, registry, ["mlflow:tracking_uri=sqlite:///x.db", "wandb:tags=[a, b],mode=offline"])
    assert [(s.name, {k: v for k, v in s.options.items() if v}) for s in specs] == [
        ("tensorboard", {}), ("mlflow", {"experiment": "a", "tracking_uri": "sqlite:///x.db"}),
        ("wandb", {"tags": ["a", "b"], "mode": "offline"})]
    assert choose_loggers(loaded, registry, ["none", {"name": "tensorboard", "options": {"logdir": "tb"}}]) == (
        LoggerSpec("tensorboard", {"logdir": "tb"}),)


def test_list_and_describe_show_loggers():
    listing = json.loads(kdbench("list", "--format", "json").output)
    loggers = {row["name"]: row["source"] for row in listing["plugins"] if row["kind"] == "logger"}
    assert loggers == {"tensorboard": "built-in", "mlflow": "built-in", "wandb": "built-in"}
    described = kdbench("describe", "mlflow").output
    assert "tracking_uri" in described and 'pip install "kdbench[mlflow]"' in described
