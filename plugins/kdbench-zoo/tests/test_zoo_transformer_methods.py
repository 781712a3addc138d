"""The zoo's transformer family (minilm, pkd, tinybert, at): the checks every method passes, each loss equal to a
computation written out here with plain torch ops, measured FLOPs equal to an analytic count, and a task the
method cannot serve refused by ``kdbench validate`` (exit 2) naming the method, the model and the reason."""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from kdbench import UserError
from kdbench.testing import TinyTask, check_method, run_method, tiny_encoder_task

from kdbench_zoo.transformer import PKD, AttentionTransfer, MiniLM, TinyBERT

ENC = tiny_encoder_task()  # 6 tokens, classes 2; teacher 2 layers width 16, student 2 layers width 8, 2 heads each
TWO_LAYER_MLP = TinyTask(params={"n": 10, "k": 2, "depth": 2, "teacher_width": 64, "student_width": 16,
                                 "eval_size": 256})
B, T, C = ENC.student["batch_size"], ENC.params["n"], 2
DS, DT, M, N = ENC.params["student_width"], ENC.params["teacher_width"], 2, 2
HEADS = 2


def probe(method, params=None, task=ENC):
    """A short run against an untrained teacher of the right shape: the phases, their measured FLOPs, a batch."""
    result = run_method(method, params, task=task, teacher="probe", budget_flops=3e6)
    batch = result.task.train_batch(torch.Generator().manual_seed(7), B)
    return result, batch


def sharpen(model, factor=6.0):
    """Scale an untrained model's weights so its attention and logits are far from uniform (losses well above 0)."""
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)


def per_token(d, t=T, ratio=4):
    """Forward matmul FLOPs of one pre-LN block per token: QKV, output projection, MLP, and the two attention matmuls."""
    return 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * ratio * d + 2 * 2 * t * d


def blocks(d, layers, b=B):
    return layers * b * T * per_token(d)


def kl_rows(p_t, p_s):
    """sum_k p_t log(p_t / p_s) per row, with 0 log 0 = 0, written out."""
    terms = torch.where(p_t > 0, p_t * (torch.log(p_t) - torch.log(p_s.clamp_min(1e-30))), torch.zeros_like(p_t))
    return terms.sum(-1)


# --- the checks every method must pass ---------------------------------------------------------------------------

@pytest.mark.parametrize("method, tasks, bad", [
    (MiniLM, [ENC], [{"transfer_share": 1.0}, {"teacher_layer": 3}]),
    (PKD, [ENC, TWO_LAYER_MLP], [{"alpha": 1.5}, {"temperature": 0}]),
    (TinyBERT, [ENC], [{"intermediate_share": 0.0}, {"attention": "values"}]),
    (AttentionTransfer, [ENC], [{"beta": -1}, {"map": "gradient"}]),
], ids=lambda x: getattr(x, "name", ""))
def test_passes_the_checks_every_method_must_pass(method, tasks, bad):
    check_method(method, tasks=tasks, bad_params=bad)


def test_registered_through_the_zoo_entry_point():
    from kdbench.plugins import load_plugins
    methods = load_plugins().methods
    for cls in (MiniLM, PKD, TinyBERT, AttentionTransfer):
        assert methods[cls.name].cls is cls and methods[cls.name].source.startswith("entry point zoo")


# --- losses by hand ----------------------------------------------------------------------------------------------

def internals(model, x, layers, names):
    return model(x, layers=layers, internals=names, with_logits=False)


def test_minilm_loss_is_the_attention_kl_plus_the_value_relation_kl():
    result, batch = probe(MiniLM)
    phase = result.phases[0]
    student, teacher = phase.loss.student, phase.loss.teacher
    sharpen(teacher)
    s = internals(student, batch.inputs, [M], ("attention", "values")).internals[0]
    t = internals(teacher, batch.inputs, [N], ("attention", "values")).internals[0]
    at = kl_rows(t.attention, s.attention).mean()  # Eq. 7: mean over batch, heads, query positions

    def vr(v):  # Eq. 8: softmax(V V^T / sqrt(d_k)), per head
        return torch.softmax(torch.einsum("bhid,bhjd->bhij", v, v) / math.sqrt(v.shape[-1]), dim=-1)

    vr_kl = kl_rows(vr(t.values), vr(s.values)).mean()
    assert (t.attention.triu(1) == 0).all()  # the tiny task is causal: hidden keys take part with probability 0
    assert at > 0.1 and vr_kl > 0.01
    assert phase.loss(batch).item() == pytest.approx((at + vr_kl).item(), rel=1e-5)
    assert phase.info == {"student_layer": 2, "teacher_layer": 2, "heads": 2}
    assert [p.name for p in result.phases] == ["self-attention", "fine-tune"]


def test_minilm_loss_is_zero_when_the_student_is_the_teacher():
    result, batch = probe(MiniLM)
    loss = result.phases[0].loss
    loss.student = loss.teacher
    assert loss(batch).item() == pytest.approx(0.0, abs=1e-6)


def test_pkd_loss_by_hand():
    params = {"temperature": 5.0, "alpha": 0.7, "beta": 500.0}
    result, batch = probe(PKD, params)
    phase = result.phases[0]
    student, teacher = phase.loss.student, phase.loss.teacher
    sharpen(teacher)
    assert phase.info == {"student_layers": [1], "teacher_layers": [1], "projected": True}
    (w,) = phase.loss.maps  # widths 8 -> 16 differ: a learned projection of the student's vector
    s, t = student(batch.inputs, layers=[1]), teacher(batch.inputs, layers=[1])
    hs, ht = s.hidden[0][:, -1] @ w.weight.T + w.bias, t.hidden[0][:, -1]  # the read-out position
    pt = ((hs / hs.norm(dim=1, keepdim=True) - ht / ht.norm(dim=1, keepdim=True)) ** 2).mean()  # Eq. 3, code's mean
    temp = 5.0
    p_t, p_s = torch.softmax(t.logits / temp, 1), torch.softmax(s.logits / temp, 1)
    ds = kl_rows(p_t, p_s).mean() * temp ** 2  # Eq. 1 (as KL, times T^2 like the authors' code)
    ce = -torch.log_softmax(s.logits, 1).gather(1, batch.labels[:, None]).mean()  # Eq. 2
    expected = 0.3 * ce + 0.7 * ds + 500.0 * pt  # Eq. 4
    assert phase.loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("strategy, n, m, layers", [("skip", 12, 6, [2, 4, 6, 8, 10]), ("last", 12, 6, [7, 8, 9, 10, 11]),
                                                    ("skip", 12, 3, [4, 8]), ("last", 4, 2, [3])])
def test_pkd_layer_strategies_are_the_papers(strategy, n, m, layers):
    from kdbench_zoo.transformer.pkd import teacher_layers
    assert teacher_layers(strategy, m, n) == layers


def test_tinybert_intermediate_loss_by_hand():
    result, batch = probe(TinyBERT)
    phase = result.phases[0]
    loss = phase.loss
    w_e, w_h = loss.w_e, loss.w_h
    s = internals(loss.student, batch.inputs, [1, 2], ("scores", "embeddings"))
    t = internals(loss.teacher, batch.inputs, [1, 2], ("scores", "embeddings"))
    assert phase.info == {"teacher_layers": [1, 2]}  # g(m) = m * N / M

    def mse(a, b):
        return ((a - b) ** 2).mean()

    def zero_hidden(scores):  # causal: -inf scores of hidden keys compared as 0 (the authors' code)
        return torch.nan_to_num(scores, neginf=0.0)

    expected = mse(s.embeddings @ w_e.weight.T + w_e.bias, t.embeddings)  # Eq. 9
    for m in range(2):
        expected = expected + mse(zero_hidden(s.internals[m].scores), zero_hidden(t.internals[m].scores))  # Eq. 7
        expected = expected + mse(s.hidden[m] @ w_h.weight.T + w_h.bias, t.hidden[m])  # Eq. 8
    assert loss(batch).item() == pytest.approx(expected.item(), rel=1e-5)
    assert tuple(w_e.weight.shape) == tuple(w_h.weight.shape) == (DT, DS)
    assert w_h.weight.std().item() == pytest.approx(0.02, rel=0.3)  # BERT's initialisation


def test_tinybert_prediction_stage_is_soft_cross_entropy_at_t():
    result, batch = probe(TinyBERT, {"temperature": 2.0})
    inter, pred = result.phases
    student, teacher = inter.loss.student, inter.loss.teacher
    sharpen(teacher, 20.0)
    p_t = torch.softmax(teacher(batch.inputs) / 2.0, 1)
    p_s = torch.softmax(student(batch.inputs) / 2.0, 1)
    kl = kl_rows(p_t, p_s).mean()  # Eq. 10's soft cross-entropy less the teacher's entropy: the same gradients
    assert kl > 0.01
    assert pred.loss(batch).item() == pytest.approx((kl * 4.0).item(), rel=1e-5)  # times t^2
    assert pred.name == "prediction"


@pytest.mark.parametrize("kind", ["attention", "activation"])
def test_at_loss_by_hand(kind):
    result, batch = probe(AttentionTransfer, {"map": kind, "beta": 1000.0})
    loss = result.phases[0].loss
    s = loss.student(batch.inputs, layers=[1, 2], internals=("attention",))
    t = loss.teacher(batch.inputs, layers=[1, 2], internals=("attention",))

    def q(out, j):  # Q^j: the map, vectorised per example, then L2-normalised
        raw = out.internals[j].attention.mean(1) if kind == "attention" else (out.hidden[j] ** 2).sum(-1)
        flat = raw.reshape(B, -1)
        return flat / flat.norm(dim=1, keepdim=True)

    transfer = sum(((q(s, j) - q(t, j)) ** 2).mean() for j in range(2))
    ce = -torch.log_softmax(s.logits, 1).gather(1, batch.labels[:, None]).mean()
    assert loss(batch).item() == pytest.approx((ce + 1000.0 / 2 * transfer).item(), rel=1e-5)  # Eq. 2


# --- FLOPs: measured equals analytic -----------------------------------------------------------------------------

def test_minilm_flops():
    """Forward: both models' blocks up to the mimicked layers, and V V^T in each. Backward: block 1 whole (2x its
    forward), the last block's QKV (weight and input gradients), and the gradients of q k^T and V V^T (two
    matmuls each); the last block's A V, output projection and MLP feed nothing the loss reads."""
    result, _ = probe(MiniLM)
    relation = 2 * B * T * T  # one V V^T per head, times head size: 2 T^2 d per example
    forward = blocks(DS, M) + relation * DS + blocks(DT, N) + relation * DT
    backward = 2 * blocks(DS, 1) + 2 * B * T * 2 * DS * 3 * DS + 2 * relation * DS + 2 * relation * DS
    assert result.phase_step_flops[0] == forward + backward
    one_shot = run_method("one-shot", task=ENC, teacher="probe", budget_flops=3e6).phase_step_flops[0]
    labels_only = 3 * (blocks(DS, M) + 2 * B * DS * C)
    assert result.phase_step_flops[1] == labels_only and one_shot == labels_only + blocks(DT, N) + 2 * B * DT * C


def test_pkd_flops_are_one_shots_on_the_encoder_and_the_mlp():
    """The normalised-state MSE has no matmul: a PKD step costs a one-shot step (student forward and backward with
    the logits, teacher forward with its logits) plus, when the widths differ, the learned projection."""
    result, _ = probe(PKD)
    projection = 3 * 2 * B * DS * DT  # the widths differ: one vector per example projected, 2 gradients
    one_shot = 3 * (blocks(DS, M) + 2 * B * DS * C) + blocks(DT, N) + 2 * B * DT * C
    assert result.phase_step_flops[0] == one_shot + projection
    assert one_shot == run_method("one-shot", task=ENC, teacher="probe", budget_flops=3e6).phase_step_flops[0]
    result, _ = probe(PKD, task=TWO_LAYER_MLP)
    b, n, hs, ht = TWO_LAYER_MLP.student["batch_size"], 10, 16, 64
    student_forward = 2 * b * (n * hs + hs * hs + hs * C)
    student_backward = 2 * b * n * hs + 2 * 2 * b * (hs * hs + hs * C)  # the data needs no gradient
    teacher = 2 * b * (n * ht + ht * ht + ht * C)
    projection = 3 * 2 * b * hs * ht
    assert result.phase_step_flops[0] == student_forward + student_backward + teacher + projection
    assert result.phases[0].info == {"student_layers": [1], "teacher_layers": [1], "projected": True}


def test_tinybert_flops():
    """Intermediate stage: the student's blocks forward and backward (explicit attention costs what the fused kernel
    does), the teacher's blocks forward, and the M + 1 projections (forward, weight and input gradients)."""
    result, _ = probe(TinyBERT)
    projections = (M + 1) * 3 * 2 * B * T * DS * DT
    assert result.phase_step_flops[0] == 3 * blocks(DS, M) + blocks(DT, N) + projections
    assert result.phase_step_flops[1] == 3 * (blocks(DS, M) + 2 * B * DS * C) + blocks(DT, N) + 2 * B * DT * C


def test_at_flops():
    """The student's forward and backward with its logits, the teacher's mapped blocks without logits (no KD)."""
    result, _ = probe(AttentionTransfer)
    assert result.phase_step_flops[0] == 3 * (blocks(DS, M) + 2 * B * DS * C) + blocks(DT, N)
    result, _ = probe(AttentionTransfer, {"kd_weight": 0.9})
    assert result.phase_step_flops[0] == 3 * (blocks(DS, M) + 2 * B * DS * C) + blocks(DT, N) + 2 * B * DT * C


# --- what a method cannot serve is refused -----------------------------------------------------------------------

def test_minilm_refuses_unequal_heads():
    task = TinyTask(name=ENC.name, params={**ENC.params, "student_heads": 1}, teacher=ENC.teacher,
                    student=ENC.student)
    with pytest.raises(UserError, match=r"minilm: cannot apply to this task: the student's layer 2 has 1 attention "
                                        r"heads and the teacher's layer 2 has 2"):
        run_method(MiniLM, task=task, teacher="probe", budget_flops=3e6)
    assert run_method(AttentionTransfer, task=task, teacher="probe", budget_flops=3e6).status == "finished"


SUITE = """
name: zoo-refusals
seeds: [0]
budget: {{flops: 1e7}}
tasks:
  - name: parity-mlp
    params: {{n: 10, k: 2, teacher_width: 32, student_width: 8, eval_size: 64}}
    teacher: {{steps: 10}}
methods:
  - name: {method}
"""


@pytest.mark.parametrize("method, reason", [
    ("minilm", r"its student model \(MLP\) has no scores, values to give \(minilm transfers the last layer's "
               r"self-attention"),
    ("tinybert", r"its student model \(MLP\) has no scores, embeddings to give \(tinybert matches"),
    ("at", r"its student model \(MLP\) has no attention to give \(at transfers attention maps"),
    ("pkd", r"pkd: cannot apply to this task: its student \(MLP\) has 1 layer"),
])
def test_validate_refuses_a_task_the_method_cannot_serve(tmp_path, method, reason):
    """Through the CLI, as a user meets it: exit 2, one line naming the method, the task and the reason."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(method=method))
    zoo = str(Path(__file__).resolve().parents[1])
    root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, zoo, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "kdbench.cli", "validate", str(suite)], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    message = " ".join((done.stdout + done.stderr).split())
    assert f"methods[0] ({method}) on tasks[0] (parity-mlp)" in message
    assert re.search(reason, message), message


# --- MLM tasks: the built-in encoder and the Hugging Face adapters ----------------------------------------------

TINY_PCFG = TinyTask(name="pcfg-bert",
                     params={"seq_len": 24, "teacher_layers": 4, "teacher_heads": 2, "teacher_width": 16,
                             "student_layers": 2, "student_heads": 2, "student_width": 8, "eval_size": 32,
                             "eval_batch_size": 32},
                     teacher={"optimizer": "adam", "lr": 0.003, "batch_size": 8, "steps": 20},
                     student={"optimizer": "adam", "lr": 0.003, "batch_size": 8})
HF_BERT = {"type": "bert", "config": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
                                      "intermediate_size": 32}}
TINY_HF_PCFG = TinyTask(name="pcfg-bert",
                        params={"seq_len": 24, "eval_size": 16, "eval_batch_size": 16, "student_hf": HF_BERT,
                                "teacher_hf": {**HF_BERT, "config": {**HF_BERT["config"], "hidden_size": 32,
                                                                     "num_hidden_layers": 4}}},
                        teacher={"batch_size": 4, "steps": 3}, student={"batch_size": 4})


@pytest.mark.parametrize("method", [MiniLM, PKD, TinyBERT, AttentionTransfer], ids=lambda m: m.name)
def test_mlm_tasks_with_the_built_in_encoder(method):
    """pcfg-bert: bidirectional attention, a masked batch, teacher 4 layers onto student 2 (g(m) = 2m)."""
    check_method(method, tasks=[TINY_PCFG])


@pytest.mark.parametrize("method", [MiniLM, PKD, TinyBERT, AttentionTransfer], ids=lambda m: m.name)
def test_mlm_tasks_with_hugging_face_models(method):
    pytest.importorskip("transformers")
    check_method(method, tasks=[TINY_HF_PCFG])


def test_pkd_on_mlm_compares_the_masked_positions():
    result = run_method(PKD, task=TINY_PCFG, teacher="probe", budget_flops=1e7)
    assert result.phases[0].info["teacher_layers"] == [2]  # skip: j * N / M
    batch = result.task.train_batch(torch.Generator().manual_seed(3), 8)
    loss = result.phases[0].loss
    s = loss.student(batch.inputs, layers=[1], mask=batch.mask)
    t = loss.teacher(batch.inputs, layers=[2], mask=batch.mask)
    (w,) = loss.maps
    hs, ht = s.hidden[0][batch.mask] @ w.weight.T + w.bias, t.hidden[0][batch.mask]
    patient = ((hs / hs.norm(dim=1, keepdim=True) - ht / ht.norm(dim=1, keepdim=True)) ** 2).mean()
    assert t.logits.shape == (int(batch.mask.sum()), t.logits.shape[1])  # the masked positions only
    kd = kl_rows(torch.softmax(t.logits / 10, 1), torch.softmax(s.logits / 10, 1)).mean() * 100
    ce = -torch.log_softmax(s.logits, 1).gather(1, batch.labels[:, None]).mean()
    assert loss(batch).item() == pytest.approx((0.5 * ce + 0.5 * kd + 100 * patient).item(), rel=1e-5)
