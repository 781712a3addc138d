"""Loggers (experiment trackers): each built-in's files read back with its library's own reader
and compared with the run's own curve and summary; a failing logger never fails a run; loggers
log from worker processes; how loggers are chosen and validated. No network: W&B is offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, kdbench, tiny_suite

RECORDING = ROOT / "tests" / "data" / "plugins" / "recording_loggers.py"
TWO_METHODS = "  - name: one-shot\n  - name: labels"
# progressive reads the teacher's checkpoints: a curve with several phases, beside one with one
PHASED = tiny_suite("  - name: progressive\n  - name: labels").replace("steps: 50}", "steps: 50, checkpoint_every: 10}")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Trackers stay off the network and keep their files under tmp_path."""
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_ERROR_REPORTING": "false",
                        "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}.items():
        monkeypatch.setenv(name, value)
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        folder = tmp_path / "wandb-home" / name.lower()
        folder.mkdir(parents=True)
        monkeypatch.setenv(name, str(folder))
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the mlflow logger sets it for its file store


def run_tiny(write_suite, tmp_path, *args, suite=tiny_suite(TWO_METHODS), extra="", expect=0):
    """Run a tiny parity suite (one run per method) into tmp_path/out; return (out, CLI result)."""
    out = tmp_path / "out"
    result = kdbench("run", write_suite(suite + extra), "-o", out, "-q", "-L", "threads=1", *args, expect=expect)
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


def phase_starts(curve) -> list[tuple[int, str]]:
    """(step, phase) of the first curve point of every phase, in order."""
    return [(p["step"], p["phase"]) for i, p in enumerate(curve) if i == 0 or p["phase"] != curve[i - 1]["phase"]]


def series(curve, metric, x="step") -> list[tuple]:
    """(x, metric) of the curve points that have the metric (train_loss is None at step 0)."""
    return [(p[x], p[metric]) for p in curve if p.get(metric) is not None]


def without_version(config: dict) -> dict:
    """A run's config.json as the loggers get it (kdbench adds its version and the code fingerprints, provenance
    rather than the run's identity, when it stores it)."""
    return {k: v for k, v in config.items() if k not in ("kdbench_version", "code")}


def test_tensorboard_event_files_hold_params_curve_phases_and_summary(write_suite, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    out, _ = run_tiny(write_suite, tmp_path, "--log", "tensorboard", suite=PHASED)
    found = runs(out)
    assert len(found) == 2
    for run_id, (config, curve, summary) in found.items():
        events = EventAccumulator(str(out / "tensorboard" / "parity-mlp" / config["method_label"] / f"seed0-{run_id}"))
        events.Reload()
        scalars = lambda tag: [(e.step, e.value) for e in events.Scalars(tag)]  # noqa: E731
        texts = lambda tag: [(e.step, e.tensor_proto.string_val[0].decode())  # noqa: E731
                             for e in events.Tensors(f"{tag}/text_summary")]
        for metric in ("accuracy", "loss", "train_loss"):
            assert same_series(scalars(metric), series(curve, metric))
            assert same_series(scalars(f"by_flops/{metric}"), series(curve, metric, x="flops"))
        assert same_series(scalars("cost/flops"), series(curve, "flops"))
        assert texts("phase") == phase_starts(curve)
        (config_text,) = texts("config")
        assert json.loads(config_text[1]) == without_version(config)
        (final,) = events.Scalars("final/accuracy")
        assert (final.step, final.value) == (summary["steps"], pytest.approx(summary["metrics"]["accuracy"]))
        (summary_text,) = texts("summary")
        assert json.loads(summary_text[1]) == summary
        hparams = HParamsPluginData.FromString(events.PluginTagToContent("hparams")["_hparams_/session_start_info"])
        logged = hparams.session_start_info.hparams
        assert (logged["method"].string_value, logged["task_params.n"].number_value, logged["seed"].number_value,
                logged["budget.flops"].number_value) == (config["method"], 10, 0, config["budget"]["flops"])
    phases = {p for _, curve, _ in found.values() for p in phase_starts(curve)}
    assert len(phases) > 2  # progressive's checkpoints: phase changes were logged


def test_mlflow_file_store_from_the_suite_holds_params_metric_history_phases_and_summary(write_suite, tmp_path,
                                                                                          monkeypatch):
    pytest.importorskip("mlflow")
    store = tmp_path / "tracking"  # the suite names its own store
    out, _ = run_tiny(write_suite, tmp_path, suite=PHASED, extra=f"loggers: [{{name: mlflow, options: {{tracking_uri: "
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
        assert (params["task"], params["method"], params["seed"], params["teacher_seed"]) == (
            config["task"], config["method"], "0", "0")
        assert (params["task_params.n"], params["budget.flops"], params["student_recipe.lr"]) == (
            "10", str(config["budget"]["flops"]), str(config["student_recipe"]["lr"]))
        assert json.loads(params["checkpoints"]) == config["checkpoints"]
        for metric in ("accuracy", "train_loss"):
            history = client.get_metric_history(mlrun.info.run_id, metric)
            assert same_series(sorted((m.step, m.value) for m in history), series(curve, metric))
        flops = client.get_metric_history(mlrun.info.run_id, "flops")
        assert sorted((m.step, m.value) for m in flops) == series(curve, "flops")
        phases = json.loads(mlrun.data.tags["kdbench.phases"])
        assert [(p["step"], p["phase"]) for p in phases] == phase_starts(curve)
        assert mlrun.data.tags["kdbench.phase"] == curve[-1]["phase"]
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


def test_wandb_offline_run_holds_config_history_phases_and_summary(write_suite, tmp_path):
    pytest.importorskip("wandb")
    out, _ = run_tiny(write_suite, tmp_path, "--log", "wandb:tags=[kd, test]", suite=PHASED)
    found = runs(out)
    files = {f.name.removeprefix("run-").rsplit("-", 1)[0]: f for f in out.glob("wandb/offline-run-*/run-*.wandb")}
    assert sorted(files) == sorted(found)  # one offline W&B run per kdbench run, under the results folder
    for run_id, (config, curve, summary) in found.items():
        records = wandb_records(files[run_id])
        (start,) = [r["run"] for r in records if r["type"] == "run"]
        assert start["display_name"] == f"parity-mlp/{config['method_label']}/seed0"
        assert {k: v for k, v in start["config"]["update"].items() if k != "_wandb"} == without_version(config)
        assert {"kd", "test", config["method_label"]} <= set(start.get("tags", []))
        history = [r["history"]["item"] for r in records if r["type"] == "history"]
        for metric in ("accuracy", "train_loss"):
            assert same_series([(h["_step"], h[metric]) for h in history if metric in h], series(curve, metric))
        assert [(h["_step"], h["flops"], h["phase"]) for h in history] == [
            (p["step"], p["flops"], p["phase"]) for p in curve]
        final = {}
        for r in records:
            if r["type"] == "summary":
                final.update(r["summary"].get("update", {}))
        assert final["status"] == "finished"
        assert final["final/accuracy"] == pytest.approx(summary["metrics"]["accuracy"])
        assert (final["summary/steps"], final["summary/flops"]) == (summary["steps"], summary["flops"])
        assert [r["exit"].get("exit_code", 0) for r in records if r["type"] == "exit"] == [0]
    assert len({p for _, curve, _ in found.values() for p in phase_starts(curve)}) > 2


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
    # logged from the workers, not this process (which worker took which run is the pool's choice:
    # one fast worker may take both before the other has started)
    assert recorded and os.getpid() not in {c["pid"] for c in recorded}


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
    suite = write_suite(tiny_suite() + f"loggers: [{{name: {name}}}]\n", "with-logger.yaml")
    checked = kdbench("validate", suite, expect=2)  # the suite's loggers: too, before anything trains
    assert f"loggers[0].name: the {name} logger needs {name}" in checked.output and install in checked.output


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
