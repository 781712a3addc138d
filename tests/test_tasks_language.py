"""parity-transformer, pcfg-bert and wikipedia-bert: data, grammar, masking, corpus handling, CLI."""

import json
import math

import pytest
from pydantic import ValidationError
import torch

from conftest import DATA, ROOT, SUITES, kdbench
from kdbench.errors import UserError
from kdbench.tasks.grammar import NAMED_GRAMMARS, load_grammar, parse_grammar
from kdbench.tasks.mlm import Masker, MLMParams
from kdbench.tasks.parity_transformer import ParityTransformer, ParityTransformerParams
from kdbench.tasks.pcfg import PCFGBert, PCFGParams
from kdbench.tasks.wikipedia import WikipediaBert, WikipediaParams, read_corpus

CPU = torch.device("cpu")
WIKITEXT = DATA / "wikitext-2-excerpt"
TINY = dict(teacher_layers=2, teacher_heads=2, teacher_width=16, student_layers=1, student_heads=2, student_width=8)


def earley_accepts(grammar, words) -> bool:
    """Earley recognizer (no empty rules): does ``grammar`` derive ``words`` from its start symbol?"""
    n = len(words)
    chart = [set() for _ in range(n + 1)]
    chart[0].add(("<top>", (grammar.start,), 0, 0))
    for i in range(n + 1):
        agenda = list(chart[i])
        while agenda:
            lhs, rhs, dot, origin = agenda.pop()
            if dot < len(rhs):
                symbol = rhs[dot]
                if symbol in grammar.rules:  # predict
                    for alt, _ in grammar.rules[symbol]:
                        item = (symbol, alt, 0, i)
                        if item not in chart[i]:
                            chart[i].add(item)
                            agenda.append(item)
                elif i < n and words[i] == symbol:  # scan
                    chart[i + 1].add((lhs, rhs, dot + 1, origin))
            else:  # complete
                for l2, r2, d2, o2 in list(chart[origin]):
                    if d2 < len(r2) and r2[d2] == lhs:
                        item = (l2, r2, d2 + 1, o2)
                        if item not in chart[i]:
                            chart[i].add(item)
                            agenda.append(item)
    return ("<top>", (grammar.start,), 1, 0) in chart[n]


def words(grammar, row, length):
    return [grammar.terminals[i - 1] for i in row[:length].tolist()]


# ---------------------------------------------------------------- grammar

@pytest.mark.parametrize("name, bounds, mean", [("cfg3b", (138, 432), 275.625), ("cfg3b-pd", (161, 432), 294.0)])
def test_named_grammars_sample_strings_that_parse_with_the_expected_lengths(name, bounds, mean):
    g = load_grammar(name)
    assert g.start == "22" and g.terminals == ("1", "2", "3") and len(g.rules) == 16
    assert g.length_bounds() == bounds
    assert g.expected_length() == pytest.approx(mean)
    tokens, lengths = g.sample(torch.Generator().manual_seed(0), 2000)
    assert bounds[0] <= int(lengths.min()) and int(lengths.max()) <= bounds[1]
    assert torch.all(tokens[torch.arange(tokens.shape[1]) >= lengths[:, None]] == 0)  # right-padded
    # the sample mean within 4 standard errors of the exact expectation: the rule probabilities are right
    assert abs(lengths.float().mean().item() - mean) < 4 * lengths.float().std().item() / math.sqrt(2000)
    for row, n in zip(tokens[:25], lengths[:25]):
        assert earley_accepts(g, words(g, row, n))


def test_the_two_cfg3b_variants_differ_and_the_recognizer_rejects_corrupted_strings():
    full, pd = load_grammar("cfg3b"), load_grammar("cfg3b-pd")
    assert len(full.rules["9"]) == 2 and len(pd.rules["9"]) == 1
    tokens, lengths = full.sample(torch.Generator().manual_seed(1), 10)
    w = words(full, tokens[0], lengths[0])
    assert earley_accepts(full, w)
    assert not earley_accepts(full, w[:-1])
    w[3] = "1" if w[3] != "1" else "2"
    assert not earley_accepts(full, w)
    # cfg3b strings nearly always use 9 -> 2 1, which the -pd variant lacks
    assert sum(earley_accepts(pd, words(full, r, n)) for r, n in zip(tokens, lengths)) == 0


def test_sampling_is_reproducible_from_the_generator():
    g = load_grammar("cfg3b")
    a = g.sample(torch.Generator().manual_seed(5), 16)[0]
    b = g.sample(torch.Generator().manual_seed(5), 16)[0]
    c = g.sample(torch.Generator().manual_seed(6), 16)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_grammar_file_format_weights_comments_and_recursion(tmp_path):
    path = tmp_path / "g.cfg"
    path.write_text("# a recursive grammar\nS -> a S [3] | b   # weights are relative\nS -> c\n\n")
    g = load_grammar(str(path))
    assert g.start == "S" and g.terminals == ("a", "b", "c")
    assert [p for _, p in g.rules["S"]] == pytest.approx([0.6, 0.2, 0.2])
    assert g.length_bounds() == (1, math.inf)
    assert g.expected_length() == pytest.approx(2.5)  # geometric: 1 / (1 - 0.6)
    tokens, lengths = g.sample(torch.Generator().manual_seed(0), 300)
    assert lengths.float().mean().item() == pytest.approx(2.5, rel=0.15)
    for row, n in zip(tokens[:50], lengths[:50]):
        assert earley_accepts(g, words(g, row, n))
    # a recursive grammar has no longest string: the task needs seq_len
    with pytest.raises(UserError, match="seq_len"):
        PCFGBert().build(PCFGParams(grammar=str(path), seq_len=None, **TINY), 0, CPU)
    task = PCFGBert().build(PCFGParams(grammar=str(path), seq_len=8, eval_size=4, **TINY), 0, CPU)
    assert task.train_batch(torch.Generator().manual_seed(0), 3).inputs.shape == (3, 8)


@pytest.mark.parametrize("text, message", [
    ("S -> a b\nS a", "g.cfg:2: a rule is"),
    ("S T -> a", "g.cfg:1: the left-hand side must be one symbol"),
    ("S -> a [x]", "g.cfg:1: weight 'x' is not a number"),
    ("S -> a [0]", "g.cfg:1: weights must be positive"),
    ("S -> a | ", "g.cfg:1: empty alternative"),
    ("S -> a | T\nT -> T b", r"nonterminals \['T'\] never derive"),
    ("# nothing", "no rules"),
])
def test_grammar_file_errors_name_the_file_and_line(text, message):
    with pytest.raises(UserError, match=message):
        parse_grammar(text, "g.cfg")


def test_unknown_grammar_names_the_variants_and_the_path():
    with pytest.raises(UserError, match="cfg3b, cfg3b-pd, cfg3b-short.*no such file"):
        load_grammar("no-such-grammar.txt")
    assert set(NAMED_GRAMMARS) == {"cfg3b", "cfg3b-pd", "cfg3b-short"}


# ---------------------------------------------------------------- masking

def test_bert_masking_rates_labels_and_protected_positions():
    p = MLMParams(mask_rate=0.3)
    masker = Masker.from_params(p, mask_id=9, low=1, high=9)
    tokens = torch.randint(1, 9, (400, 50), generator=torch.Generator().manual_seed(0))
    tokens[:, 0] = 0  # e.g. [CLS]/padding: never masked
    maskable = tokens != 0
    batch = masker(tokens, maskable, torch.Generator().manual_seed(1))
    m = batch.mask
    assert not m[:, 0].any()
    assert m.float().mean().item() == pytest.approx(0.3 * 49 / 50, abs=0.01)
    assert torch.equal(batch.labels, tokens[m])
    assert torch.equal(batch.inputs[~m], tokens[~m])  # unchosen positions are untouched
    chosen_in, chosen_orig = batch.inputs[m], tokens[m]
    to_mask = (chosen_in == 9).float().mean().item()
    unchanged = (chosen_in == chosen_orig).float().mean().item()
    assert to_mask == pytest.approx(0.8, abs=0.02)
    # random replacements draw from 1..8 and keep the token 1/8 of the time
    assert unchanged == pytest.approx(0.1 + 0.1 / 8, abs=0.02)
    assert ((chosen_in >= 1) & (chosen_in <= 9)).all()
    again = masker(tokens, maskable, torch.Generator().manual_seed(1))
    assert torch.equal(again.inputs, batch.inputs) and torch.equal(again.mask, batch.mask)


def test_masking_always_chooses_at_least_one_position():
    masker = Masker.from_params(MLMParams(mask_rate=1e-6), mask_id=5, low=1, high=5)
    tokens = torch.randint(1, 5, (2, 6), generator=torch.Generator().manual_seed(0))
    batch = masker(tokens, tokens > 0, torch.Generator().manual_seed(0))
    assert int(batch.mask.sum()) == 1 and batch.labels.shape == (1,)


def test_mlm_params_check_the_shares():
    with pytest.raises(ValueError, match="replace_mask"):
        MLMParams(replace_mask=0.95, replace_random=0.1)


# ---------------------------------------------------------------- tasks

def test_parity_transformer_tokens_labels_and_models():
    params = ParityTransformerParams(n=10, k=3, eval_size=64, **TINY)
    task = ParityTransformer().build(params, 0, CPU)
    batch = task.train_batch(torch.Generator().manual_seed(0), 256)
    assert batch.inputs.shape == (256, 10) and batch.inputs.dtype == torch.long
    assert set(batch.inputs.unique().tolist()) <= {0, 1}
    # label 1 iff an even number of the support bits are 1 (i.e. -1)
    assert torch.equal(batch.labels, (batch.inputs[:, :3].sum(1) % 2 == 0).long())
    assert torch.equal(task.train_batch(torch.Generator().manual_seed(0), 256).inputs, batch.inputs)
    assert torch.equal(ParityTransformer().build(params, 0, CPU).eval_x, task.eval_x)
    teacher, student = task.teacher_model(), task.student_model()
    assert teacher(batch.inputs).shape == (256, 2) and student.num_layers == 1
    assert teacher.blocks[0].causal and not ParityTransformer().build(
        params.model_copy(update={"causal": False}), 0, CPU).teacher_model().blocks[0].causal
    metrics = task.evaluate(student)
    assert set(metrics) == {"accuracy", "loss"} and 0 <= metrics["accuracy"] <= 1
    with pytest.raises(ValueError, match="multiple of teacher_heads"):
        ParityTransformerParams(teacher_width=30, teacher_heads=4)


def test_pcfg_sequences_cls_padding_truncation_and_masking():
    task = PCFGBert().build(PCFGParams(eval_size=16, seq_len=None, **TINY), 0, CPU)  # null: the longest + 1
    assert task.seq_len == 433 and task.vocab_size == 6 and (task.cls_id, task.mask_id) == (4, 5)
    tokens = task.sequences(torch.Generator().manual_seed(0), 8)
    assert (tokens[:, 0] == task.cls_id).all()
    lengths = (tokens[:, 1:] != 0).sum(1)
    assert (lengths >= 138).all() and (lengths <= 432).all()
    for row, n in zip(tokens, lengths):
        assert earley_accepts(task.grammar, words(task.grammar, row[1:], n))
    batch = task.train_batch(torch.Generator().manual_seed(0), 8)
    assert not batch.mask[:, 0].any() and not batch.mask[batch.inputs == 0].any()
    assert batch.mask.float().sum() / (lengths.sum() + 0.0) == pytest.approx(0.3, abs=0.03)
    assert task.teacher_model()(batch.inputs, mask=batch.mask).shape == (int(batch.mask.sum()), 6)
    short = PCFGBert().build(PCFGParams(seq_len=40, eval_size=4, **TINY), 0, CPU)
    assert short.train_batch(torch.Generator().manual_seed(0), 3).inputs.shape == (3, 40)
    metrics = task.evaluate(task.student_model())
    assert set(metrics) == {"masked_accuracy", "masked_loss"} and task.metric == "masked_accuracy"


def wiki_params(**kw):
    return WikipediaParams(**{"corpus": str(WIKITEXT), "vocab_size": 500, "seq_len": 32, "eval_size": 64, **TINY, **kw})


def test_wikipedia_tokenizer_is_trained_cached_next_to_the_teacher_and_reused(tmp_path, monkeypatch):
    task = WikipediaBert().build(wiki_params(), 0, CPU, tmp_path)
    assert task.vocab_size == 500 and task.metric == "masked_accuracy"
    assert len(list(tmp_path.glob("wordpiece-*.json"))) == 1 and len(list(tmp_path.glob("tokens-*.pt"))) == 1
    assert task.train_seqs.shape[1] == 32 and len(task.train_seqs) > 10 * len(task.eval_batch.inputs)
    assert (task.train_seqs[:, 0] == 2).all() and (task.train_seqs[:, -1] == 3).all()  # [CLS] ... [SEP]
    text = task.tokenizer.decode(task.train_seqs[0].tolist())
    assert text and all(c.islower() or not c.isalpha() for c in text)
    batch = task.train_batch(torch.Generator().manual_seed(0), 8)
    assert not batch.mask[:, [0, -1]].any()
    assert batch.mask.float().mean().item() == pytest.approx(0.15 * 30 / 32, abs=0.05)

    import kdbench.tasks.wikipedia as wikipedia

    def no_training(*a, **k):
        raise AssertionError("the cached tokenizer should have been used")

    monkeypatch.setattr(wikipedia, "train_tokenizer", no_training)
    again = WikipediaBert().build(wiki_params(), 0, CPU, tmp_path)
    assert torch.equal(again.train_seqs, task.train_seqs)
    assert torch.equal(again.eval_batch.inputs, task.eval_batch.inputs)
    # a pinned tokenizer (here the cached one) gives the same token ids in a fresh cache
    (pinned,) = tmp_path.glob("wordpiece-*.json")
    fresh = WikipediaBert().build(wiki_params(tokenizer=str(pinned)), 0, CPU, tmp_path / "fresh")
    assert torch.equal(fresh.train_seqs, task.train_seqs)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="bad.json.*not an HF tokenizers JSON"):
        WikipediaBert().build(wiki_params(tokenizer=str(tmp_path / "bad.json")), 0, CPU)


def test_the_trained_tokenizer_is_the_same_every_time():
    """HF tokenizers' WordPiece trainer numbers its ##-pieces in hash-map order and breaks merge
    ties by those numbers: on the shipped excerpt, 10 trainings at 4,000 tokens gave 6 different
    vocabularies, so one run id gave different numbers from run to run. Now they are all equal."""
    from kdbench.tasks.wikipedia import train_tokenizer

    lines = read_corpus(str(DATA / "wikitext-2-excerpt"))
    trained = {train_tokenizer(lines, 4000, lowercase=True).to_str() for _ in range(8)}
    assert len(trained) == 1
    tokenizer = train_tokenizer(lines, 4000, lowercase=True)
    assert [tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    assert tokenizer.encode("[CLS] the [MASK]").tokens == ["[CLS]", "the", "[MASK]"]


def test_wikipedia_holds_out_the_last_lines(tmp_path):
    lines = [f"line number {i} about topic {i % 7}" for i in range(200)]
    (tmp_path / "a.txt").write_text("\n\n".join(lines[:100]))
    (tmp_path / "b.txt").write_text("\n".join(lines[100:]))
    assert read_corpus(str(tmp_path)) == lines
    task = WikipediaBert().build(WikipediaParams(corpus=str(tmp_path), vocab_size=100, seq_len=8, eval_fraction=0.1,
                                                 eval_size=1000, **TINY), 0, CPU, None)
    held_out = task.tokenizer.decode(task.eval_batch.labels.tolist())  # masked tokens of held-out text
    assert held_out
    train_text = " ".join(task.tokenizer.decode(r.tolist()) for r in task.train_seqs)
    assert "number 199" not in train_text and "number 170" in train_text


def test_missing_or_empty_corpus_is_a_clear_error(tmp_path):
    # a missing path or a folder without text files is caught when the params are validated
    with pytest.raises(ValidationError, match="no such file or folder"):
        wiki_params(corpus=str(tmp_path / "nope"))
    with pytest.raises(ValidationError, match="has no .txt"):
        wiki_params(corpus=str(tmp_path))
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(UserError, match="is empty"):
        WikipediaBert().build(wiki_params(corpus=str(tmp_path)), 0, CPU)
    (tmp_path / "empty.txt").write_text("just a few words\nand a second line\n")
    with pytest.raises(UserError, match="shorter than one sequence"):
        WikipediaBert().build(wiki_params(corpus=str(tmp_path), vocab_size=50), 0, CPU)


# ---------------------------------------------------------------- CLI

@pytest.fixture
def one_thread():
    """Tiny models run no faster on two threads, and far slower when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


LANGUAGE_SUITE = f"""
name: language-tiny
seeds: [0]
budget: {{steps: 12, method: one-shot}}
eval: {{points: 2}}
tasks:
  - name: parity-transformer
    params: {{n: 8, k: 2, teacher_layers: 2, teacher_heads: 2, teacher_width: 16, student_layers: 2,
             student_heads: 2, student_width: 8, eval_size: 64}}
    teacher: {{steps: 20, checkpoint_every: 10, batch_size: 16}}
    student: {{batch_size: 16}}
  - name: pcfg-bert
    params: {{seq_len: 24, teacher_layers: 2, teacher_heads: 2, teacher_width: 16, student_layers: 2,
             student_heads: 2, student_width: 8, eval_size: 16}}
    teacher: {{steps: 20, checkpoint_every: 10, batch_size: 8}}
    student: {{batch_size: 8}}
  - name: wikipedia-bert
    params: {{corpus: {WIKITEXT / 'wiki.valid.excerpt.txt'}, vocab_size: 300, seq_len: 16, teacher_layers: 2,
             teacher_heads: 2, teacher_width: 16, student_layers: 2, student_heads: 2, student_width: 8,
             eval_size: 32}}
    teacher: {{steps: 20, checkpoint_every: 10, batch_size: 8}}
    student: {{batch_size: 8}}
methods:
  - name: labels
  - name: one-shot
  - name: progressive
  - name: curriculum-extraction
"""


def test_cli_runs_all_methods_on_the_three_tasks_and_reports_masked_accuracy(write_suite, tmp_path, one_thread):
    out = tmp_path / "out"
    kdbench("run", write_suite(LANGUAGE_SUITE), "--output", out, "--quiet")
    summaries = [json.loads(p.read_text()) for p in out.glob("runs/*/summary.json")]
    assert len(summaries) == 12 and {s["status"] for s in summaries} == {"finished"}
    assert {s["metric"] for s in summaries} == {"accuracy", "masked_accuracy"}
    board = (out / "leaderboard.md").read_text()
    for section in ("### pcfg-bert", "### wikipedia-bert"):
        table = board.split(section)[1].split("###")[0]
        assert "masked_accuracy" in table
        for method in ("labels", "one-shot", "progressive", "curriculum-extraction"):
            assert f"| {method} " in table
    assert list(out.glob("teachers/wikipedia-bert-*/wordpiece-*.json"))


def test_cli_missing_corpus_exits_2_naming_the_path(write_suite, tmp_path):
    suite = LANGUAGE_SUITE.replace(str(WIKITEXT / "wiki.valid.excerpt.txt"), str(tmp_path / "no-corpus"))
    start, end = suite.index("  - name: parity-transformer"), suite.index("  - name: wikipedia-bert")
    suite = suite[:start] + suite[end:]  # the wikipedia task only
    result = kdbench("run", write_suite(suite), "--output", tmp_path / "out", "--quiet", expect=2)
    assert "no-corpus" in result.output and "no such file or folder" in result.output


def test_cpu_wikipedia_suite_in_a_clone_without_shared_says_how_to_give_a_corpus(tmp_path, monkeypatch):
    """A user's clone has no ../shared beside it: the suite's default corpus is missing, and the error says
    how to point it at one (the environment variable, or the excerpt shipped in the repository)."""
    clone = tmp_path / "kdbench"
    (clone / "suites" / "cpu").mkdir(parents=True)
    (clone / "suites" / "cpu" / "wikipedia-bert.yaml").write_text((SUITES / "cpu" / "wikipedia-bert.yaml").read_text())
    monkeypatch.delenv("KDBENCH_WIKI_CORPUS", raising=False)
    result = kdbench("validate", clone / "suites" / "cpu" / "wikipedia-bert.yaml", expect=2)
    message = " ".join(result.output.split())
    assert "tasks[0].params.corpus" in message and "no such file or folder" in message
    assert "KDBENCH_WIKI_CORPUS" in message and "data/wikitext-2-excerpt" in message


@pytest.mark.parametrize("suite", ["language-smoke.yaml", "paper/parity-transformer.yaml",
                                   "paper/pcfg-bert.yaml", "paper/wikipedia-bert.yaml"])
def test_shipped_language_suites_validate(suite, monkeypatch, tmp_path):
    """Valid; the pcfg-bert paper suite is for a GPU: on a machine whose memory cannot hold its teacher's
    step at batch 512 (~86 GB on the CPU), it is refused on that size alone (issue 30, sizes)."""
    monkeypatch.chdir(tmp_path)  # paths in a suite are relative to the suite file, not the working directory
    monkeypatch.setenv("KDBENCH_WIKI_CORPUS", str(WIKITEXT))  # the paper suite's corpus, given by the user
    result = kdbench("validate", SUITES / suite, expect=None)
    if suite == "paper/pcfg-bert.yaml" and result.exit_code == 2:
        assert "tasks[0].teacher.batch_size: 512 examples a step of the teacher of pcfg-bert need" in result.output
    else:
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("value, expected", [(None, "default"), ("", "default"), ("/data/wiki", "/data/wiki")])
def test_a_variable_default_also_replaces_an_empty_variable(value, expected, monkeypatch):
    """As in the shell: `KDBENCH_WIKI_CORPUS= kdbench run ...` takes the suite's default corpus,
    not an empty path (which named the suite's own folder)."""
    from kdbench.inputs import expand_variables

    monkeypatch.delenv("KDBENCH_TEST_VAR", raising=False)
    if value is not None:
        monkeypatch.setenv("KDBENCH_TEST_VAR", value)
    assert expand_variables("${KDBENCH_TEST_VAR:-default}", "corpus") == expected
