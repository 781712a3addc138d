"""Nothing cached is trusted without checking it (issue 30): every file kdbench writes and later
reads for a result or a skip decision has its sha256 in its folder's hashes.json; a file that no
longer matches is named in a warning and recomputed, never used. Finished runs record the code of
their method and task; `kdbench run` says when that code changed, the leaderboard when a row mixes
versions, and `--rerun-changed` redoes them."""

import json
from pathlib import Path

import pytest
import torch
from conftest import ROOT, curves, kdbench

import kdbench as kd
from kdbench.run.integrity import record, sha256_file

SUITE = """
name: integrity
seeds: {seeds}
budget: {{flops: 2e6}}
eval: {{points: 4}}
tasks:
  - name: parity-mlp
    params: {{n: 10, k: 2, teacher_width: 64, student_width: 16, eval_size: 256}}
    teacher: {{optimizer: adam, lr: 0.01, batch_size: 16, steps: 40, checkpoint_every: 20}}
    student: {{optimizer: adam, lr: 0.01, batch_size: 16}}
methods:
{methods}
"""


def suite(tmp_path, seeds="[0]", methods="  - name: one-shot", name="suite.yaml", extra="") -> Path:
    path = tmp_path / name
    path.write_text(extra + SUITE.format(seeds=seeds, methods=methods))
    return path


def teacher_of(out) -> Path:
    (teacher,) = (Path(out) / "teachers").iterdir()
    return teacher


def same_weights(a: Path, b: Path) -> bool:
    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_files_written_have_their_sha256_recorded(tmp_path):
    out = tmp_path / "out"
    kdbench("run", suite(tmp_path, methods="  - name: progressive"), "-o", out, "-q")
    (run,) = (out / "runs").iterdir()
    hashes = json.loads((run / "hashes.json").read_text())
    assert {"config.json", "curve.json", "summary.json", "student.safetensors", "student.json"} <= set(hashes)
    assert hashes["curve.json"] == sha256_file(run / "curve.json")
    teacher = json.loads((teacher_of(out) / "hashes.json").read_text())
    assert {"final.pt", "teacher.json", "curve.json", "summary.json", "checkpoints/step-000000020.pt"} <= set(teacher)


@pytest.mark.parametrize("which", ["final.pt", "checkpoint"])
def test_a_teacher_file_replaced_by_other_values_of_the_same_shapes_is_retrained(tmp_path, which):
    """Issue 30's first silent wrong number: weights of the right shapes and other values were used."""
    methods = "  - name: progressive\n  - name: one-shot"
    reference = tmp_path / "reference"
    kdbench("run", suite(tmp_path, "[0, 1]", methods, "both.yaml"), "-o", reference, "-q")
    out = tmp_path / "out"
    kdbench("run", suite(tmp_path, "[0]", methods), "-o", out, "-q")
    teacher = teacher_of(out)
    victim = teacher / "final.pt" if which == "final.pt" else next((teacher / "checkpoints").glob("step-*.pt"))
    state = torch.load(victim, weights_only=True)
    torch.save({k: torch.randn_like(v) for k, v in state.items()}, victim)  # loads, right keys and shapes
    result = kdbench("run", suite(tmp_path, "[0, 1]", methods, "both.yaml"), "-o", out, "-q")  # a new seed
    assert curves(out) == curves(reference)  # the new seed distilled from the real teacher
    assert same_weights(victim, teacher_of(reference) / victim.relative_to(teacher))
    assert f"{victim}: teacher weights that cannot be trusted" in result.output
    assert "does not match the sha256" in result.output and "discarded" in result.output


@pytest.mark.parametrize("name", ["curve.json", "summary.json"])
def test_a_run_file_changed_after_it_was_written_is_unreadable_and_redone(tmp_path, name):
    out = tmp_path / "out"
    path = suite(tmp_path, methods="  - name: labels")
    kdbench("run", path, "-o", out, "-q")
    before = curves(out)
    (run,) = (out / "runs").iterdir()
    data = json.loads((run / name).read_text())
    if name == "curve.json":
        data = data[:-1]  # cut short, still a valid curve
    else:
        data["metrics"][data["metric"]] = 1.0  # a better number, still a valid summary
    (run / name).write_text(json.dumps(data))
    res = kd.load_results(out)
    assert res.runs().empty
    (row,) = res.unreadable().to_dict("records")
    assert row["run_id"] == run.name and f"{name} does not match the sha256" in row["reason"]
    result = kdbench("run", path, "-o", out, "-q")
    assert f"{run}: {name} does not match the sha256" in result.output and "the run is redone" in result.output
    assert "1 runs executed" in result.output
    assert curves(out) == before
    assert kd.load_results(out).unreadable().empty


def test_folders_written_before_hashes_load_as_they_are(tmp_path):
    """No hashes.json (and no content_hashes mark in the summary): trusted, no warning, nothing redone."""
    out = tmp_path / "out"
    path = suite(tmp_path, methods="  - name: one-shot")
    kdbench("run", path, "-o", out, "-q")
    for folder in [*(out / "runs").iterdir(), teacher_of(out)]:
        (folder / "hashes.json").unlink(missing_ok=True)
        summary = json.loads((folder / "summary.json").read_text())
        summary.pop("content_hashes", None)
        (folder / "summary.json").write_text(json.dumps(summary))
    assert len(kd.load_results(out).runs()) == 1
    result = kdbench("run", path, "-o", out, "-q")
    assert "warning" not in result.output and "0 runs executed, 1 skipped" in result.output
    committed = kd.load_results(ROOT / "results" / "cpu-parity-transformer" / "check")
    assert committed.unreadable().empty and len(committed.runs()) > 0


def test_a_run_whose_hashes_json_was_removed_is_redone(tmp_path):
    out = tmp_path / "out"
    path = suite(tmp_path, methods="  - name: labels")
    kdbench("run", path, "-o", out, "-q")
    (run,) = (out / "runs").iterdir()
    (run / "hashes.json").unlink()
    assert "hashes.json missing" in kd.load_results(out).unreadable().reason[0]
    assert "1 runs executed" in kdbench("run", path, "-o", out, "-q").output


# ---- teacher side files ---------------------------------------------------------------------------

def test_a_truncated_teacher_curve_is_reported_and_the_teacher_retrained(tmp_path):
    out = tmp_path / "out"
    path = suite(tmp_path)
    kdbench("run", path, "-o", out, "-q")
    teacher = teacher_of(out)
    curve = json.loads((teacher / "curve.json").read_text())
    (teacher / "curve.json").write_text(json.dumps(curve[:2]))  # cut short, still valid JSON
    problem = kd.load_results(out).teachers().problem[0]
    assert "curve.json does not match the sha256" in problem
    assert kd.load_results(out).teacher_curves().empty  # never drawn from a file that does not verify
    result = kdbench("run", path, "-o", out, "-q")  # every run is finished: the teacher is still repaired
    assert f"{teacher / 'curve.json'}: curve.json does not match" in result.output
    assert "the teacher will be retrained" in result.output
    repaired = json.loads((teacher / "curve.json").read_text())
    assert [p["step"] for p in repaired] == [p["step"] for p in curve]
    assert kd.load_results(out).teachers().problem.isna().all()


@pytest.mark.parametrize("damage", ["truncated", "changed"])
def test_a_corrupt_teacher_json_is_named_by_export_and_rewritten_by_run(tmp_path, damage):
    out = tmp_path / "out"
    path = suite(tmp_path)
    kdbench("run", path, "-o", out, "-q")
    teacher = teacher_of(out)
    record = teacher / "teacher.json"
    text = record.read_text()
    record.write_text(text[: len(text) // 2] if damage == "truncated" else text.replace('"args"', '"arguments"'))
    result = kdbench("export", teacher.name, tmp_path / "exported", "--teacher", "--results", out, expect=2)
    assert f"{record}: corrupt" in result.output
    assert "cached before kdbench recorded teacher models" not in result.output
    result = kdbench("run", path, "-o", out, "-q")
    assert f"{record}:" in result.output and "rewritten" in result.output
    assert record.read_text() == text
    kdbench("export", teacher.name, tmp_path / "exported", "--teacher", "--results", out)
    assert (tmp_path / "exported" / "model.safetensors").is_file()


def test_export_refuses_a_student_file_changed_after_it_was_written(tmp_path):
    out = tmp_path / "out"
    kdbench("run", suite(tmp_path, methods="  - name: labels"), "-o", out, "-q")
    (run,) = (out / "runs").iterdir()
    weights = run / "student.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    result = kdbench("export", run.name, tmp_path / "exported", "--results", out, expect=2)
    assert f"{weights}: corrupt: student.safetensors does not match the sha256" in result.output


# ---- code fingerprints ----------------------------------------------------------------------------

PLUGIN = '''
import torch.nn.functional as F
from kdbench import Method, Phase, hookimpl, logits


class Mine(Method):
    name, version, needs_teacher = "mine", "1", False

    def phases(self, ctx, params):
        s = ctx.student
        return [Phase("main", loss=lambda b: {weight} * F.cross_entropy(logits(s, b), b.labels))]


@hookimpl
def kdbench_register_methods():
    return [Mine]
'''


def test_a_method_whose_code_changed_is_named_and_redone_with_rerun_changed(tmp_path):
    plugin = tmp_path / "mine.py"
    plugin.write_text(PLUGIN.format(weight="1.0"))
    extra = f"plugins: [{plugin}]\n"
    out = tmp_path / "out"
    kdbench("run", suite(tmp_path, "[0]", "  - name: mine", extra=extra), "-o", out, "-q")
    plugin.write_text(PLUGIN.format(weight="0.5"))  # other code, the same version
    both = suite(tmp_path, "[0, 1]", "  - name: mine", "both.yaml", extra=extra)
    result = kdbench("run", both, "-o", out, "-q")
    assert ("code changed: 1 finished run(s) of `mine` on `parity-mlp` were produced by other code than installed "
            "now (the method code, without a version bump); kept as they are; `kdbench run --rerun-changed` "
            "redoes them.") in " ".join(result.output.split())
    assert "1 runs executed, 1 skipped" in result.output
    board = (out / "leaderboard.md").read_text()
    assert "Warning: `mine` mixes runs of 2 versions of its plugin code" in " ".join(board.split())
    assert kd.load_results(out).runs().code.nunique() == 2
    result = kdbench("run", both, "-o", out, "-q", "--rerun-changed")
    assert "redone (--rerun-changed)" in " ".join(result.output.split())
    assert "1 runs executed, 1 skipped" in result.output
    assert kd.load_results(out).runs().code.nunique() == 1
    assert "mixes runs" not in (out / "leaderboard.md").read_text()
    assert "code changed" not in kdbench("run", both, "-o", out, "-q").output


def test_runs_recorded_without_fingerprints_count_as_unchanged(tmp_path):
    out = tmp_path / "out"
    path = suite(tmp_path, methods="  - name: labels")
    kdbench("run", path, "-o", out, "-q")
    (run,) = (out / "runs").iterdir()
    config = json.loads((run / "config.json").read_text())
    config.pop("code")
    (run / "config.json").write_text(json.dumps(config))
    record(run, "config.json")
    result = kdbench("run", path, "-o", out, "-q")
    assert "code changed" not in result.output and "0 runs executed" in result.output
    assert kd.load_results(out).runs().code.isna().all()
