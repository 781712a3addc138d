"""The opt-in teacher-logit cache (``tasks[i].teacher_logits: {top_k: K}``; kdbench.run.logit_cache): a hit
returns what a miss returned, bit for bit; the loss moves by no more than the tail mass allows; the option
enters the run id only when set; and through the CLI the cache saves teacher forwards without changing steps."""

import json
import logging
import math
import shutil

import pytest
import torch
from torch import nn

from kdbench.losses import reverse_kl, soft_cross_entropy
from kdbench.plugins import load_plugins
from kdbench.run.logit_cache import LogitStore, TopKTeacher, reconstruct, top_k_entry
from kdbench.run.pricing import load_suite
from kdbench.suite.identity import config_identity, run_identity, short_hash

from conftest import kdbench, tiny_suite

V, K = 50, 10


class Toy(nn.Module):
    """A peaked token model: logits [mask.sum(), V] at the masked positions (as the token tasks' models)."""

    def __init__(self, scale: float = 8.0):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(V, V)
        self.scale, self.calls = scale, 0

    def forward(self, x, mask=None, upto=None):
        self.calls += 1
        out = self.emb(x) * self.scale
        return out[mask] if mask is not None else out.reshape(-1, V)


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (4, 12), generator=g)
    return x, torch.rand(4, 12, generator=g) > 0.3


def test_a_hit_returns_the_miss_bit_for_bit_and_other_calls_reach_the_teacher(tmp_path):
    toy = Toy()
    teacher = TopKTeacher(toy, LogitStore(tmp_path / "logits-top10", K))
    x, m = batch()
    missed = teacher(x, mask=m)
    hit = teacher(x, mask=m)
    again = TopKTeacher(toy, LogitStore(tmp_path / "logits-top10", K))(x, mask=m)  # another process: from disk
    assert torch.equal(missed, hit) and torch.equal(missed, again)
    assert (teacher.misses, teacher.hits, toy.calls) == (1, 1, 1)
    # a proper distribution: log-probabilities whose exponentials sum to 1, equal to the teacher's on its top k
    assert torch.allclose(missed.exp().sum(-1), torch.ones(missed.shape[0]), atol=1e-5)
    true = torch.log_softmax(toy(x, mask=m), -1)
    top = true.topk(K, -1)
    assert torch.equal(missed.gather(-1, top.indices), top.values)
    # other batches miss; calls with other arguments, and calls while FLOPs are measured, go to the teacher
    teacher(*batch(1)[:1], mask=batch(1)[1])
    assert teacher.misses == 2
    assert torch.equal(teacher(x, mask=m, upto=1), toy(x, mask=m))
    teacher.measuring = True
    assert torch.equal(teacher(x, mask=m), toy(x, mask=m)) and (teacher.hits, teacher.misses) == (1, 2)


def kl_bound(entry: dict, student: torch.Tensor) -> float:
    """How far the forward-KL loss (batchmean) may move when the teacher's ``p`` is replaced by its
    reconstruction ``p~``: per row, the top k agree, so ``|p~ - p|_1 <= 2 tail`` and the entropy of the
    tail part moves by at most ``tail * log(V - k)`` (an even spread maximises it); with
    ``KL(p||q) = -H(p) - sum p log q`` that is ``tail * (log(V - k) + 2 max |log q|)``."""
    tail = (1 - entry["values"].exp().sum(-1)).clamp_min(0)
    log_q = torch.log_softmax(student, -1)
    return float((tail * (math.log(V - K) + 2 * log_q.abs().max(-1).values)).mean())


def test_the_cached_loss_is_within_the_tail_bound_and_a_wrong_reconstruction_is_not():
    x, m = batch()
    true = Toy()(x, mask=m).detach()
    student = torch.randn(true.shape, generator=torch.Generator().manual_seed(1))
    entry = top_k_entry(true, K)
    cached = reconstruct(entry["values"], entry["indices"], entry["vocab"])
    bound = kl_bound(entry, student)
    exact, approx = soft_cross_entropy(student, true), soft_cross_entropy(student, cached)
    assert abs(float(approx - exact)) <= bound
    assert bound < 0.1 * float(exact)  # a peaked teacher: the bound is tight
    # the bound catches a reconstruction that puts the right values at the wrong tokens
    wrong = reconstruct(entry["values"], entry["indices"].roll(1, dims=-1), entry["vocab"])
    assert abs(float(soft_cross_entropy(student, wrong) - exact)) > bound
    # every divergence stays finite, however small the tail
    sharp = top_k_entry(true * 100, K)
    peaked = reconstruct(sharp["values"], sharp["indices"], sharp["vocab"])
    assert torch.isfinite(peaked).all() and torch.isfinite(reverse_kl(student, peaked))


def test_k_at_least_the_vocabulary_is_exact():
    x, m = batch()
    true = Toy()(x, mask=m).detach()
    entry = top_k_entry(true, V + 5)
    assert torch.allclose(reconstruct(entry["values"], entry["indices"], entry["vocab"]),
                          torch.log_softmax(true, -1))


CACHE = "\n    teacher_logits: {top_k: TOPK}"


def run_ids(write_suite, text: str, name: str):
    loaded, _ = load_suite(write_suite(text, name), load_plugins)
    return {r.method: r for r in loaded.runs}


def test_the_option_enters_the_run_id_only_when_set(write_suite):
    methods = "  - name: labels\n  - name: one-shot"
    base = tiny_suite(methods=methods)
    plain = run_ids(write_suite, base, "a.yaml")
    # today's ids (computed before the option existed) are kept without it
    assert {m: r.run_id for m, r in plain.items()} == {"labels": "4ad68896d91e", "one-shot": "28d7ea8ef476"}
    with_task = base.replace("steps: 50}", "steps: 50}" + CACHE)
    k4 = run_ids(write_suite, with_task.replace("TOPK", "4"), "b.yaml")
    k8 = run_ids(write_suite, with_task.replace("TOPK", "8"), "c.yaml")
    assert k4["one-shot"].run_id not in (plain["one-shot"].run_id, k8["one-shot"].run_id)
    assert k4["one-shot"].teacher_logits == {"top_k": 4} and k4["one-shot"].config()["teacher_logits"] == {"top_k": 4}
    # a method without a teacher reads no cache: its id is unchanged
    assert k4["labels"].run_id == k8["labels"].run_id == plain["labels"].run_id
    assert k4["labels"].teacher_logits is None
    # a config.json without the key (written before the option) has the identity of a run without it
    config = plain["one-shot"].config()
    assert "teacher_logits" not in config
    assert short_hash(config_identity(config), 12) == run_identity(plain["one-shot"]) == plain["one-shot"].run_id


def test_a_method_that_generates_reads_no_cache(write_suite):
    """seq-kd's teacher samples and gkd's scores generated rows at every step: no cached batch could
    serve them, so the option leaves their runs (and ids) alone."""
    from kdbench.methods.gkd import GKD
    from kdbench.methods.minillm import MiniLLM
    from kdbench.methods.one_shot import OneShot
    from kdbench.methods.seq_kd import SeqKD
    from kdbench.suite.expand import logit_option
    from kdbench.suite.model import TeacherLogits

    class Entry:
        teacher_logits = TeacherLogits(top_k=4)

    assert [logit_option(Entry(), m) for m in (GKD, SeqKD, MiniLLM)] == [None, None, None]
    assert logit_option(Entry(), OneShot) == {"top_k": 4}


@pytest.mark.parametrize("value,needles", [
    ("{top_k: 0}", ["tasks[0].teacher_logits.top_k", "greater than or equal to 1"]),
    ("{top_k: 2.5}", ["tasks[0].teacher_logits.top_k", "integer"]),
    ("{topk: 4}", ["tasks[0].teacher_logits.topk: unknown field (did you mean 'top_k'?); allowed: top_k"]),
    ("4", ["tasks[0].teacher_logits: Value error, give {top_k: K} with an integer K >= 1", "(got 4)"]),
])
def test_a_bad_option_is_one_clear_error(write_suite, value, needles):
    path = write_suite(tiny_suite().replace("steps: 50}", "steps: 50}\n    teacher_logits: " + value))
    result = kdbench("validate", path, expect=2)
    assert str(path) in result.output
    for needle in needles:
        assert needle in result.output, result.output


LM_SUITE = """
name: lm-cache
seeds: [0]
budget: {flops: 2.4e8}
eval: {points: 2}
tasks:
  - name: pcfg-lm
    params: {samples: 16, eval_size: 16, teacher_width: 16, teacher_heads: 2, student_width: 8, student_heads: 2}
    teacher: {steps: 5, batch_size: 8}
    student: {batch_size: 8}OPTION
methods:
  - name: one-shot
  - name: one-shot
    label: reverse
    params: {divergence: reverse}
"""


def summaries(out) -> dict:
    found = {}
    for folder in (out / "runs").iterdir():
        config = json.loads((folder / "config.json").read_text())
        found[config["method_label"]] = json.loads((folder / "summary.json").read_text())
    return found


def test_through_the_cli_the_cache_saves_forwards_not_steps(write_suite, tmp_path, caplog):
    cached_suite = write_suite(LM_SUITE.replace("OPTION", CACHE.replace("TOPK", "4")), "cached.yaml")
    plain_suite = write_suite(LM_SUITE.replace("OPTION", ""), "plain.yaml")
    kdbench("run", cached_suite, "--output", tmp_path / "cached", "--quiet")
    kdbench("run", plain_suite, "--output", tmp_path / "plain", "--quiet")
    cached, plain = summaries(tmp_path / "cached"), summaries(tmp_path / "plain")
    first, second = cached["one-shot"]["teacher_logits"], cached["reverse"]["teacher_logits"]
    # the second method of the seed reads the batches the first one stored
    assert first["top_k"] == second["top_k"] == 4 and first["misses"] > 0
    assert second["hits"] > 0 and second["saved_flops"] > 0 and second["misses"] == 0
    assert second["saved_flops"] % second["hits"] == 0
    for label in ("one-shot", "reverse"):  # budgets are unchanged: the same steps and FLOPs as without the cache
        assert cached[label]["steps"] == plain[label]["steps"] > 0
        assert cached[label]["flops"] == plain[label]["flops"]
        assert "teacher_logits" not in plain[label]
    board = (tmp_path / "cached" / "leaderboard.md").read_text()
    assert "teacher logits from a top-4 cache (tail mass spread evenly over the other tokens)".lower() in board.lower()
    assert "Teacher FLOPs saved" in board and "(still charged to the budget)" in board
    assert "Teacher FLOPs saved" not in (tmp_path / "plain" / "leaderboard.md").read_text()

    # a damaged entry is named in a warning, discarded and recomputed
    store = next((tmp_path / "cached" / "teachers").glob("*/logits-top4"))
    victim = sorted(store.glob("*.pt"))[0]
    victim.write_bytes(victim.read_bytes()[:-8] + b"damaged!")
    redo = next(f for f in (tmp_path / "cached" / "runs").iterdir()
                if json.loads((f / "config.json").read_text())["method_label"] == "one-shot")
    shutil.rmtree(redo)  # the one-shot run trains again, reading the cache
    with caplog.at_level(logging.WARNING, logger="kdbench"):
        result = kdbench("run", cached_suite, "--output", tmp_path / "cached")
    output = result.output + caplog.text
    assert f"{victim}: cached teacher logits that cannot be trusted" in output
    assert "does not match the sha256" in output and "recomputed" in output
    assert LogitStore(store, 4).read(victim.stem)[0] is not None  # stored again, and it verifies
    again = summaries(tmp_path / "cached")
    assert again["one-shot"]["teacher_logits"]["misses"] == 1  # only the damaged entry was recomputed
    assert again["one-shot"]["steps"] == cached["one-shot"]["steps"]
