"""The causal-LM distillation methods: seq-kd, gkd and minillm.

Each loss against a hand computation on tiny models; the FLOPs of generation charged by the probe;
resumption exact (check_method); refusal of a task that is not a causal LM; a CLI run of all three."""

from __future__ import annotations

import json
from pathlib import Path
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from conftest import kdbench

from kdbench import DistillOptions, MethodContext, Recipe, final_teacher_phase, generalised_jsd, reverse_kl
from kdbench.methods.gkd import GKD, GKDParams
from kdbench.methods.minillm import MiniLLM, MiniLLMParams
from kdbench.methods.seq_kd import SeqKD, SeqKDParams
from kdbench.models.generation import sample, sample_mixture
from kdbench.run.budget import StepFlopCounter, measure_step_flops, probe_batch
from kdbench.streams import derive_seed, seed_for_step
from kdbench.tasks.pcfg_lm import PCFGLM
from kdbench.testing import TinyTask, check_method

CPU = torch.device("cpu")
GRAMMAR = "S -> A B | B A [2]\nA -> a b | b a c\nB -> c | c a\n"  # strings of 3-5 terminals: seq_len 6
SIZES = {"teacher_layers": 1, "teacher_heads": 2, "teacher_width": 16, "student_layers": 1, "student_heads": 1,
         "student_width": 8, "eval_size": 16, "samples": 16}
SEED, STEP = 3, 7


@pytest.fixture
def grammar(tmp_path):
    path = tmp_path / "tiny.cfg"
    path.write_text(GRAMMAR)
    return str(path)


@pytest.fixture
def setup(grammar):
    """A tiny pcfg-lm instance, a teacher and a student (random weights), a context at step STEP, a batch."""
    task = PCFGLM().build(PCFGLM.Params(grammar=grammar, **SIZES), 0, CPU)
    torch.manual_seed(0)
    teacher, student = task.teacher_model(), task.student_model()
    teacher.eval()
    ctx = MethodContext(task=task, student=student, teacher=SimpleNamespace(final=lambda: teacher),
                        teacher_recipe=Recipe(), seed=SEED, device=CPU, generator=torch.Generator().manual_seed(0))
    ctx.clock.step = STEP
    batch = probe_batch(task, 6, CPU)
    return SimpleNamespace(task=task, teacher=teacher, student=student, ctx=ctx, batch=batch)


def generator():
    """The sampling stream of seed SEED at step STEP, as the methods draw it."""
    return torch.Generator().manual_seed(seed_for_step(derive_seed("sampling", SEED), STEP))


def loss_of(method, params, s):
    (phase,) = method().phases(s.ctx, params)
    return phase.loss(s.batch)


def tiny_task(grammar: str) -> TinyTask:
    return TinyTask(name="pcfg-lm", params={"grammar": grammar, **SIZES},
                    teacher={"steps": 30, "batch_size": 8}, student={"batch_size": 6})


# --- losses against hand computations ---------------------------------------------------------------

@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_seq_kd_is_cross_entropy_on_the_teachers_samples(setup, temperature):
    s = setup
    rows = sample(s.teacher, s.task.prompts(s.batch), s.task.seq_len, generator(), temperature)
    b = s.task.batch_from_tokens(rows)
    hand = F.cross_entropy(s.student(b.inputs, mask=b.mask), b.labels)
    assert not torch.equal(rows, s.task.tokens(s.batch))
    assert torch.allclose(loss_of(SeqKD, SeqKDParams(temperature=temperature), s), hand, rtol=1e-5)


def test_gkd_lam0_forward_is_one_shot_on_the_data(setup):
    s = setup
    one_shot = final_teacher_phase(s.ctx, options=DistillOptions()).loss(s.batch)
    gkd = loss_of(GKD, GKDParams(lam=0.0, divergence="forward"), s)
    assert torch.allclose(gkd, one_shot, rtol=1e-5)


def test_gkd_lam1_scores_the_students_own_rows(setup):
    s = setup
    rows = sample(s.student, s.task.prompts(s.batch), s.task.seq_len, generator(), 0.7)
    b = s.task.batch_from_tokens(rows)
    with torch.no_grad():
        t = s.teacher(b.inputs, mask=b.mask)
    hand = reverse_kl(s.student(b.inputs, mask=b.mask), t)
    gkd = loss_of(GKD, GKDParams(lam=1.0, divergence="reverse", temperature=0.7), s)
    assert torch.allclose(gkd, hand, rtol=1e-5)


def test_gkd_half_replaces_the_first_rows(setup):
    s = setup
    data = s.task.tokens(s.batch)
    own = sample(s.student, s.task.prompts(s.batch)[:3], s.task.seq_len, generator(), 1.0)
    b = s.task.batch_from_tokens(torch.cat([own, data[3:]]))
    with torch.no_grad():
        t = s.teacher(b.inputs, mask=b.mask)
    hand = F.kl_div(F.log_softmax(s.student(b.inputs, mask=b.mask), -1), F.log_softmax(t, -1), log_target=True,
                    reduction="batchmean")
    assert torch.allclose(loss_of(GKD, GKDParams(lam=0.5), s), hand, rtol=1e-5)


def jsd_formula(student_logits, teacher_logits, beta):
    p, q = teacher_logits.softmax(-1).double(), student_logits.softmax(-1).double()
    m = beta * p + (1 - beta) * q
    return (beta * (p * (p / m).log()).sum(-1) + (1 - beta) * (q * (q / m).log()).sum(-1)).mean()


def test_gkd_jsd_matches_the_formula(setup):
    s = setup
    b = s.batch
    with torch.no_grad():
        hand = jsd_formula(s.student(b.inputs, mask=b.mask), s.teacher(b.inputs, mask=b.mask), 0.3)
    gkd = loss_of(GKD, GKDParams(lam=0.0, divergence="jsd", beta=0.3), s)
    assert gkd.item() == pytest.approx(hand.item(), rel=1e-4, abs=1e-7)  # float32 vs float64
    a, c = torch.randn(5, 7), torch.randn(5, 7)
    assert generalised_jsd(a, c, 0.3).item() == pytest.approx(jsd_formula(a, c, 0.3).item(), rel=1e-5)
    assert generalised_jsd(a, c, 0.5).item() <= math.log(2)


def test_the_zoos_js_kd_uses_the_public_generalised_jsd():
    from kdbench_zoo.logit.js_kd import generalised_js

    a, c = torch.randn(9, 4), torch.randn(9, 4)
    assert torch.equal(generalised_js(a, c, 0.4), generalised_jsd(a, c, 0.4))


def test_mixture_sampling_at_alpha0_is_the_students_sampling(setup):
    s = setup
    prompts = s.task.prompts(s.batch)
    assert torch.equal(sample_mixture(s.student, s.teacher, prompts, s.task.seq_len, generator(), 0.0),
                       sample(s.student, prompts, s.task.seq_len, generator(), 1.0))


def test_minillm_loss_by_hand(setup):
    s, alpha = setup, 0.2
    rows = sample_mixture(s.student, s.teacher, s.task.prompts(s.batch), s.task.seq_len, generator(), alpha)
    b = s.task.batch_from_tokens(rows)
    log_q = F.log_softmax(s.student(b.inputs).float(), -1)  # [rows, positions, vocab]
    with torch.no_grad():
        log_p = F.log_softmax(s.teacher(b.inputs).float(), -1)
    single = long = 0.0
    count = int(b.mask.sum())
    for i in range(rows.shape[0]):
        learned = [t for t in range(b.mask.shape[1]) if b.mask[i, t]]
        ys = [int(b.tokens[i, t + 1]) for t in learned]
        lq = [log_q[i, t, y] for t, y in zip(learned, ys)]
        lp = [float(log_p[i, t, y]) for t, y in zip(learned, ys)]
        r = [p - float(q.detach()) for p, q in zip(lp, lq)]
        for k, t in enumerate(learned):
            w = math.exp(float(lq[k].detach())) / (alpha * math.exp(lp[k]) + (1 - alpha) * math.exp(float(lq[k].detach())))
            future = r[k + 1:]
            big_r = sum(future) / len(future) if future else 0.0
            kl = (log_q[i, t].exp() * (log_q[i, t] - log_p[i, t])).sum()
            single = single + w * kl
            long = long - w * big_r * lq[k]
    hand = (single + long) / count
    loss = loss_of(MiniLLM, MiniLLMParams(alpha=alpha), s)
    assert loss.item() == pytest.approx(hand.item(), rel=1e-4, abs=1e-6)
    # the same gradient as the hand loss
    grads = torch.autograd.grad(loss, list(s.student.parameters()))
    hand_grads = torch.autograd.grad(hand, list(s.student.parameters()))
    for g, h in zip(grads, hand_grads):
        assert torch.allclose(g, h, rtol=1e-3, atol=1e-6)


# --- FLOPs: generation is charged -------------------------------------------------------------------

def counted(fn) -> int:
    """FLOPs of ``fn()`` counted as the probe counts them (attention on the math backend)."""
    with StepFlopCounter(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        fn()
    return int(counter.get_total_flops())


def scored_positions(task, rows):
    positions = torch.zeros(rows.shape[0], task.seq_len, dtype=torch.bool)
    positions[:, task.prompt_len - 1:] = True
    return positions


def test_generation_flops_are_charged(setup):
    s = setup
    params = list(s.student.parameters())
    step = {name: measure_step_flops(ph, s.batch, params) for name, ph in [
        ("one-shot", final_teacher_phase(s.ctx, options=DistillOptions())),
        ("gkd", GKD().phases(s.ctx, GKDParams(lam=0.5))[0]),
        ("gkd-lam0", GKD().phases(s.ctx, GKDParams(lam=0.0))[0]),
        ("seq-kd", SeqKD().phases(s.ctx, SeqKDParams())[0]),
        ("minillm", MiniLLM().phases(s.ctx, MiniLLMParams())[0])]}
    b, task = s.batch, s.task
    prompts = task.prompts(b)
    every = scored_positions(task, task.tokens(b))

    def student_step(mask):
        s.student(b.inputs, mask=mask).sum().backward()
        s.student.zero_grad(set_to_none=True)

    teacher_data = counted(lambda: s.teacher(b.inputs, mask=b.mask))
    teacher_every = counted(lambda: s.teacher(b.inputs, mask=every))
    student_data, student_every = counted(lambda: student_step(b.mask)), counted(lambda: student_step(every))
    student_sample = counted(lambda: sample(s.student, prompts[:3], task.seq_len, generator()))
    teacher_sample = counted(lambda: sample(s.teacher, prompts, task.seq_len, generator()))
    both_sample = counted(lambda: sample_mixture(s.student, s.teacher, prompts, task.seq_len, generator(), 0.2))

    # every step prices exactly what its loss runs
    assert step["one-shot"] == teacher_data + student_data
    assert step["gkd-lam0"] == teacher_every + student_every
    assert step["gkd"] == student_sample + teacher_every + student_every
    assert step["seq-kd"] == teacher_sample + student_every
    assert step["minillm"] == both_sample + teacher_every + student_every
    # so against one-shot: gkd pays the student's sampling of its rows and the scoring of every position
    # after the prompt (padding included: fixed cost) by both models. seq-kd pays the teacher's sampling
    # *instead of* the teacher's scoring forward (it never scores rows with the teacher), plus the
    # student's scoring of every position: decoding with a key/value cache skips the masked half of the
    # attention matrix a full forward computes, so seq-kd can cost less than one-shot on tiny rows.
    assert step["gkd"] - step["one-shot"] == student_sample + (teacher_every - teacher_data) + \
        (student_every - student_data)
    assert step["seq-kd"] - step["one-shot"] == teacher_sample - teacher_data + (student_every - student_data)
    assert step["gkd"] > step["gkd-lam0"] >= step["one-shot"] and teacher_sample > 0 and both_sample > teacher_sample
    print(json.dumps({**step, "student_sample_3_rows": student_sample, "teacher_sample": teacher_sample,
                      "mixture_sample": both_sample, "teacher_data": teacher_data, "teacher_every": teacher_every,
                      "student_step_data": student_data, "student_step_every": student_every}))


def test_a_step_costs_the_same_whatever_the_samples(setup):
    """The loss's FLOPs do not depend on what was sampled: two steps (two sampling seeds) count the same."""
    s = setup
    (phase,) = GKD().phases(s.ctx, GKDParams(lam=1.0))
    params = list(s.student.parameters())
    first = measure_step_flops(phase, s.batch, params)
    s.ctx.clock.step = STEP + 1
    assert measure_step_flops(phase, s.batch, params) == first


# --- the engine: resumption, refusal, a suite -------------------------------------------------------

@pytest.mark.parametrize("method, params", [("seq-kd", {}), ("seq-kd", {"temperature": 0}),
                                            ("gkd", {"lam": 0.5, "divergence": "jsd", "beta": 0.3}),
                                            ("gkd", {"lam": 1.0, "divergence": "reverse"}),
                                            ("minillm", {})])
def test_check_method(grammar, method, params):
    check_method(method, params, tasks=[tiny_task(grammar)],
                 bad_params={"seq-kd": {"temperature": -1}, "gkd": {"lam": 1.5},
                             "minillm": {"alpha": 1.0}}[method])


PARITY_SUITE = """
name: refuse
seeds: [0]
budget: {steps: 5, method: one-shot}
tasks:
  - name: parity-mlp
    params: {n: 10, k: 2, teacher_width: 16, student_width: 8, eval_size: 32}
    teacher: {steps: 10}
methods:
  - name: METHOD
"""


@pytest.mark.parametrize("method", ["seq-kd", "gkd", "minillm"])
def test_a_task_that_is_not_a_causal_lm_is_refused(tmp_path, method):
    path = tmp_path / "suite.yaml"
    path.write_text(PARITY_SUITE.replace("METHOD", method))
    result = kdbench("validate", path, expect=2)
    assert f"{method}: needs a causal language-model task (lm, pcfg-lm)" in " ".join(result.output.split())


LM_SUITE = """
name: lm-methods
seeds: [0]
budget: {steps: 6, method: one-shot}
eval: {points: 2}
tasks:
  - name: pcfg-lm
    params: {grammar: tiny.cfg, teacher_layers: 1, teacher_heads: 2, teacher_width: 16, student_layers: 1,
             student_heads: 1, student_width: 8, eval_size: 16, samples: 16}
    teacher: {steps: 30, batch_size: 8}
    student: {batch_size: 6}
methods:
  - name: one-shot
  - name: seq-kd
  - name: gkd
    params: {lam: 0.5, divergence: jsd}
  - name: minillm
"""


def test_a_suite_of_the_lm_methods_runs_end_to_end(tmp_path):
    (tmp_path / "tiny.cfg").write_text(GRAMMAR)
    (tmp_path / "suite.yaml").write_text(LM_SUITE)
    out = tmp_path / "out"
    kdbench("run", tmp_path / "suite.yaml", "--output", out, "--quiet")
    summaries = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/summary.json"))]
    assert len(summaries) == 4 and all(x["status"] == "finished" for x in summaries)
    board = (out / "leaderboard.md").read_text()
    for method in ("one-shot", "seq-kd", "gkd", "minillm"):
        assert method in board
    note = next(line for line in board.splitlines() if line.startswith("Generation is charged"))
    assert "seq-kd: the teacher samples every row" in note and "gkd: the student samples 50%" in note
    assert "minillm:" in note and "one-shot:" not in note
    for d in (out / "runs").iterdir():
        curve = json.loads((d / "curve.json").read_text())
        assert "acceptance" in curve[-1] and math.isfinite(curve[-1]["perplexity"])


def test_the_generating_methods_on_a_text_corpus_with_a_longer_prompt():
    """lm prompts with its rows' first prompt_len tokens: the methods continue them and learn the rest."""
    corpus = str(Path(__file__).resolve().parents[1] / "data" / "wikitext-2-excerpt")
    task = TinyTask(name="lm", params={"corpus": corpus, "vocab_size": 300, "seq_len": 12, "prompt_len": 4,
                                       **{k: v for k, v in SIZES.items() if k != "samples"}},
                    teacher={"steps": 20, "batch_size": 8}, student={"batch_size": 4})
    for method, params in (("gkd", {"lam": 0.5}), ("seq-kd", {})):
        check_method(method, params, tasks=[task])
