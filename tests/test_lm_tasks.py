"""The causal LM tasks (pcfg-lm, lm): rows and batches, perplexity by hand, the grammar acceptor,
incremental decoding and sampling."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from kdbench import Batch, CausalLMInstance, Encoder
from kdbench.models.generation import sample
from kdbench.tasks.acceptor import Acceptor, symbol_length_bounds
from kdbench.tasks.causal_lm import perplexity_and_accuracy
from kdbench.tasks.grammar import load_grammar, parse_grammar
from kdbench.tasks.lm import LM
from kdbench.tasks.pcfg_lm import PCFGLM

ROOT = Path(__file__).resolve().parents[1]
EXCERPT = str(ROOT / "data" / "wikitext-2-excerpt")
TINY = {"samples": 8, "eval_size": 8, "teacher_width": 16, "teacher_heads": 2, "teacher_layers": 1,
        "student_width": 8, "student_heads": 2, "student_layers": 1}


def pcfg_lm(**params):
    return PCFGLM().build(PCFGLM.Params(**{**TINY, **params}), seed=0, device=torch.device("cpu"))


# --- the acceptor -------------------------------------------------------------------------------------------------

def derived_strings(grammar, max_len: int) -> set[tuple[int, ...]]:
    """Every string of at most ``max_len`` terminals the grammar derives, by breadth-first expansion
    of leftmost derivations (sentential forms longer than max_len are dropped: no empty rules)."""
    ids = {t: i for i, t in enumerate(grammar.terminals, start=1)}
    out, todo, seen = set(), [(grammar.start,)], set()
    while todo:
        form = todo.pop()
        if form in seen or len(form) > max_len:
            continue
        seen.add(form)
        i = next((k for k, s in enumerate(form) if s in grammar.rules), None)
        if i is None:
            out.add(tuple(ids[s] for s in form))
            continue
        for rhs, _ in grammar.rules[form[i]]:
            todo.append(form[:i] + rhs + form[i + 1:])
    return out


@pytest.mark.parametrize("text", [
    "S -> a S b | a b\n",                                   # recursive (a^n b^n)
    "S -> A B | B A A\nA -> a | B b\nB -> b | a a\n",       # ambiguous, shared sub-spans
    "S -> A | x y\nA -> S | z z z\n",                       # a unit cycle S -> A -> S
])
def test_acceptor_agrees_with_exhaustive_derivation(text):
    grammar = parse_grammar(text)
    acceptor = Acceptor(grammar)
    language = derived_strings(grammar, 6)
    alphabet = range(1, len(grammar.terminals) + 1)
    checked = 0
    for n in range(0, 7):
        for string in itertools.product(alphabet, repeat=n):
            assert acceptor.accepts(string) == (string in language), string
            checked += 1
    assert checked > 100 and language


def test_acceptor_on_cfg3b_accepts_samples_and_rejects_edits():
    grammar = load_grammar("cfg3b")
    acceptor = Acceptor(grammar)
    strings, lengths = grammar.sample(torch.Generator().manual_seed(0), 20)
    for row, n in zip(strings.tolist(), lengths.tolist()):
        s = row[:n]
        assert acceptor.accepts(s)
        assert not acceptor.accepts(s[:-1])            # cut short
        assert not acceptor.accepts(s + [1])           # one token too many
        edited = list(s)
        edited[n // 2] = edited[n // 2] % 3 + 1        # one token changed
        assert not acceptor.accepts(edited)
    assert not acceptor.accepts([])


def test_symbol_length_bounds():
    assert symbol_length_bounds(load_grammar("cfg3b"))["22"] == (138, 432)
    assert symbol_length_bounds(load_grammar("cfg3b-short"))["S"] == (30, 72)
    assert symbol_length_bounds(parse_grammar("S -> a S b | a b\n"))["S"] == (2, math.inf)


# --- pcfg-lm rows, batches, metrics -----------------------------------------------------------------------------

def test_pcfg_lm_rows_and_batches():
    task = pcfg_lm()
    assert isinstance(task, CausalLMInstance) and task.seq_len == 73  # the longest cfg3b-short string + 1
    rows = task.rows(torch.Generator().manual_seed(1), 5)
    assert rows.shape == (5, 74) and (rows[:, 0] == task.bos_id).all()
    batch = task.rows_to_batch(rows)
    assert torch.equal(batch.inputs, rows[:, :-1]) and torch.equal(batch.tokens, rows)
    for row, mask in zip(rows, batch.mask):
        end = int((row == task.end_id).nonzero()[0])
        assert task.acceptor.accepts(row[1:end].tolist())
        assert mask[:end].all() and not mask[end:].any()  # learned up to and including [EOS], never padding
    assert torch.equal(batch.labels, rows[:, 1:][batch.mask])
    assert task.accepted(rows).all()


def test_batch_from_tokens_pads_after_the_first_end():
    task = pcfg_lm()
    e, b = task.end_id, task.bos_id
    rows = torch.tensor([[b, 1, 2, e, 3, e] + [0] * 68, [b, 3, 3, 3, 3, 3] + [1] * 68])
    batch = task.batch_from_tokens(rows)
    assert batch.tokens[0, :4].tolist() == [b, 1, 2, e] and (batch.tokens[0, 4:] == 0).all()
    assert batch.mask[0].tolist()[:5] == [True, True, True, False, False]
    assert batch.mask[1].all()  # no end token: every next token after the prompt is learned
    assert task.accepted(rows).tolist() == [False, False]  # "1 2" is not a string; no [EOS] at all


def test_perplexity_matches_a_hand_computation():
    task = pcfg_lm()

    class Fixed(torch.nn.Module):
        """Logits that depend only on the input token: row t of a fixed table."""

        def __init__(self, vocab):
            super().__init__()
            self.table = torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(3))

        def forward(self, x, mask=None):
            return self.table[x][mask]

    model = Fixed(task.vocab_size)
    got = perplexity_and_accuracy(model, task.eval_batch, chunk=3)
    nll, hits, count = 0.0, 0, 0
    for row, mask in zip(task.eval_batch.tokens.tolist(), task.eval_batch.mask.tolist()):
        for t, learned in enumerate(mask):
            if learned:
                logp = torch.log_softmax(model.table[row[t]].double(), -1)
                nll -= float(logp[row[t + 1]])
                hits += int(int(model.table[row[t]].argmax()) == row[t + 1])
                count += 1
    assert got["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-9)
    assert got["next_token_accuracy"] == hits / count


def test_acceptance_of_an_untrained_model_and_of_a_grammar_sampler():
    task = pcfg_lm(samples=16)
    torch.manual_seed(0)
    metrics = task.evaluate(task.student_model().eval())
    assert metrics["acceptance"] == 0.0 and task.metric == "acceptance" and task.higher_is_better
    assert metrics["perplexity"] == pytest.approx(task.vocab_size, rel=0.2)  # near-uniform logits

    class GrammarSampler(torch.nn.Module):
        """A 'model' that emits a fixed grammar string (one per row): every sample is accepted."""

        def __init__(self, rows):
            super().__init__()
            self.rows = rows

        def forward(self, x, mask=None):
            t = x.shape[1]
            logits = torch.full((x.shape[0], t, task.vocab_size), -1e4)
            logits[torch.arange(x.shape[0])[:, None], torch.arange(t)[None], self.rows[: x.shape[0], 1:t + 1]] = 0.0
            return logits[mask] if mask is not None else logits

    rows = task.rows(torch.Generator().manual_seed(5), 1).repeat(task.p.samples, 1)
    assert task.evaluate(GrammarSampler(rows))["acceptance"] == 1.0
    assert pcfg_lm(metric="perplexity").metric == "perplexity"


# --- decoding and sampling ----------------------------------------------------------------------------------------

def test_extend_equals_the_full_forward_and_sampling_with_and_without_cache():
    torch.manual_seed(0)
    model = Encoder(vocab_size=9, outputs=9, max_len=12, width=16, heads=2, layers=2, causal=True)
    x = torch.randint(0, 9, (3, 12))
    logits, past = model.extend(x[:, :5])
    steps = [logits]
    for t in range(5, 12):
        logits, past = model.extend(x[:, t:t + 1], past)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="causal"):
        Encoder(vocab_size=9, outputs=9, max_len=12, width=16, heads=2, layers=2).extend(x)

    class NoCache(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, mask=None):
            return self.inner(x, mask=mask)

    counts = []
    outs = []
    for m in (model, NoCache(model)):
        with FlopCounterMode(display=False) as counter:
            outs.append(sample(m, x[:, :1], 11, torch.Generator().manual_seed(7)))
        counts.append(counter.get_total_flops())
    assert torch.equal(outs[0], outs[1]) and outs[0].shape == (3, 12)
    assert counts[0] < counts[1] / 3  # the cache computes each position once
    greedy = sample(model, x[:, :1], 11, torch.Generator(), temperature=0)
    assert torch.equal(greedy, sample(model, x[:, :1], 11, torch.Generator().manual_seed(99), temperature=0))


# --- lm on a text corpus ------------------------------------------------------------------------------------------

def test_lm_rows_from_a_corpus(tmp_path):
    params = LM.Params(corpus=EXCERPT, vocab_size=300, seq_len=16, eval_size=4, prompt_len=4,
                       **{k: v for k, v in TINY.items() if k not in ("samples", "eval_size")})
    task = LM().build(params, seed=0, device=torch.device("cpu"), cache_dir=tmp_path)
    assert task.metric == "perplexity" and not task.higher_is_better
    batch = task.train_batch(torch.Generator().manual_seed(0), 3)
    assert batch.tokens.shape == (3, 17) and batch.mask.all() and len(batch.labels) == 3 * 16
    gen = task.batch_from_tokens(batch.tokens)
    assert not gen.mask[:, :3].any() and gen.mask[:, 3:].all()  # after the prompt only
    assert task.prompts(batch).shape == (3, 4)
    torch.manual_seed(0)
    model = task.student_model()
    assert model(batch.inputs, mask=batch.mask).shape == (48, task.vocab_size)
    assert task.evaluate(model.eval())["perplexity"] == pytest.approx(task.vocab_size, rel=0.3)


def test_lm_refuses_a_prompt_longer_than_a_row(tmp_path):
    from kdbench import UserError

    params = LM.Params(corpus=EXCERPT, vocab_size=300, seq_len=8, prompt_len=9)
    with pytest.raises(UserError, match="prompt_len"):
        LM().build(params, seed=0, device=torch.device("cpu"), cache_dir=tmp_path)


def test_batch_field_default_keeps_old_positional_batches():
    b = Batch(torch.zeros(2, 3), torch.zeros(2))
    assert b.tokens is None and b.mask is None
    assert F.cross_entropy(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)) > 0
