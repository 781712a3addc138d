"""The relation methods through kdbench: conformance, measured FLOPs against analytic counts (MLP and
encoder), and validation refusing a representation the task's model cannot give."""

import json
import subprocess
import sys
import textwrap

import pytest

from kdbench.testing import TinyTask, check_method, resolve_run, tiny_encoder_task

from kdbench_zoo.relation import CRD, METHODS, PKT, RKD, SP

SMALL_BANK = {"negatives": 64}  # CRD's 16384 negatives cost ~7000 tiny-MLP steps each; the checks need few
BAD = {"rkd": [{"distance_weight": -1}, {"representation": "mean"}], "pkt": [{"pkt_weight": -1}],
       "sp": [{"layers": "some"}, {"gamma": -1}], "crd": [{"negatives": 0}, {"nce_temperature": 0}]}


def test_the_family_lists_its_methods_and_kdbench_finds_them():
    assert [m.name for m in METHODS] == ["rkd", "pkt", "sp", "crd"]
    for method in METHODS:
        registry, _ = resolve_run(method.name)  # by name: registered through the zoo's entry point
        assert registry.methods[method.name].cls is method and method.version == "1" and method.description


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_passes_the_checks_every_method_must_pass(method):
    check_method(method, SMALL_BANK if method is CRD else None, bad_params=BAD[method.name])


# the tiny MLP task: n -> h -> C, batch B; one-shot-like pieces of a relation step (kd_weight 0)
B, N_IN, HS, HT, C = 16, 10, 16, 64, 2
MLP_BASE = 2 * B * (N_IN * HS + HS * C) + 2 * B * N_IN * HT + 2 * B * (2 * HS * C + N_IN * HS)


def gram_flops(n, ds, dt):  # e @ e.T: student forward and two backward matmuls, teacher forward
    return 6 * n * n * ds + 2 * n * n * dt


def rkd_flops(n, ds, dt):  # distances (grams) and angles (bmm of n [n, d] x [d, n])
    return gram_flops(n, ds, dt) + 6 * n ** 3 * ds + 2 * n ** 3 * dt


def crd_flops(n, ds, dt, e=128, k=64):  # heads (teacher head: no input gradient) and both sides' queue scores
    return 6 * n * ds * e + 4 * n * dt * e + 8 * n * k * e


EXTRA = {"rkd": rkd_flops, "pkt": gram_flops, "sp": gram_flops, "crd": crd_flops}


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_mlp_step_flops_are_the_analytic_count(method, run_method):
    """Student forward (hidden layer and head) and backward (head: weight and input; layer 1: weight),
    the teacher's hidden layer (no head: kd_weight 0), and the relation's own matmuls."""
    result = run_method(method, SMALL_BANK if method is CRD else None, teacher="probe", budget_flops=1e9)
    assert result.phase_step_flops == [MLP_BASE + EXTRA[method.name](B, HS, HT)]


def test_kd_weight_adds_the_teachers_head(run_method):
    plain = run_method(PKT, teacher="probe", budget_flops=1e8).phase_step_flops[0]
    with_kd = run_method(PKT, {"kd_weight": 1.0}, teacher="probe", budget_flops=1e8).phase_step_flops[0]
    assert with_kd - plain == 2 * B * HT * C


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_encoder_step_flops_are_one_shots_without_the_teacher_head_plus_the_relation(method, run_method):
    """The tiny encoder task (6 tokens, widths 8 and 16, 2 classes read at the last position): a relation
    step runs the student as one-shot does and the teacher's blocks without its head; the relation works
    on the last position's vectors (rkd, pkt, crd) or the flattened [6 * width] maps (sp)."""
    task = tiny_encoder_task()
    b, tokens, ds, dt = task.student["batch_size"], task.params["n"], 8, 16
    one_shot = run_method("one-shot", task=task, teacher="probe", budget_flops=1e9).phase_step_flops[0]
    result = run_method(method, SMALL_BANK if method is CRD else None, task=task, teacher="probe", budget_flops=1e9)
    per = tokens if method is SP else 1
    extra = EXTRA[method.name](b, per * ds, per * dt)
    assert result.phase_step_flops == [one_shot - 2 * b * dt * 2 + extra]
    assert result.phases[0].info["representation"] == ("flatten" if method is SP else "last")


def test_sp_all_layers_pairs_every_student_layer(run_method):
    task = tiny_encoder_task()
    result = run_method(SP, {"layers": "all"}, task=task, teacher="probe", budget_flops=1e8)
    assert result.phases[0].info["student_layers"] == [1, 2] and result.phases[0].info["teacher_layers"] == [1, 2]


def test_rkd_learns_the_tiny_task(run_method):
    result = run_method(RKD, budget_flops=2e8)
    assert result.status == "finished" and result.metric() >= 0.9


def test_validate_refuses_a_token_representation_on_an_mlp(tmp_path):
    """Exit 2 before anything trains, naming the method, the model and the reason."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(textwrap.dedent(f"""\
        name: relation-misfit
        seeds: [0]
        budget: {{flops: 1.0e+7}}
        tasks:
          - name: parity-mlp
            params: {json.dumps(TinyTask().params)}
        methods:
          - name: rkd
            params: {{representation: mean}}
        """))
    done = subprocess.run([sys.executable, "-m", "kdbench.cli", "validate", str(suite)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    out = " ".join((done.stdout + done.stderr).split())
    assert "rkd: params.representation: 'mean' needs a token model" in out and "MLP" in out


def validate(tmp_path, method: str, batch_size: int) -> subprocess.CompletedProcess:
    suite = tmp_path / f"{method}.yaml"
    suite.write_text(textwrap.dedent(f"""\
        name: batch-of-{batch_size}
        seeds: [0]
        budget: {{flops: 1.0e+9}}
        tasks:
          - name: parity-mlp
            params: {json.dumps({**TinyTask().params, "levels": 2})}
            student: {{batch_size: {batch_size}}}
        methods:
          - name: {method}
        """))
    return subprocess.run([sys.executable, "-m", "kdbench.cli", "validate", str(suite)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)


@pytest.mark.parametrize("method", ["rkd", "pkt", "sp", "dist"])
def test_validate_refuses_a_batch_of_one_for_batch_relations(tmp_path, method):
    """The relations of one sample are empty (rkd, pkt: NaN) or constant (sp, dist's intra-class): exit 2."""
    done = validate(tmp_path, method, 1)
    assert done.returncode == 2, done.stdout + done.stderr
    out = " ".join((done.stdout + done.stderr).split())
    assert f"{method}: " in out and "student.batch_size must be at least 2" in out
    assert validate(tmp_path, method, 2).returncode == 0


def test_crd_takes_a_batch_of_one(tmp_path):
    """CRD's negatives come from its queues, not from the batch."""
    done = validate(tmp_path, "crd", 1)
    assert done.returncode == 0, done.stdout + done.stderr
