"""Hugging Face GPT-2 decoders through the layered interface (kdbench.models.HFDecoder).

Blocks are run one by one by the wrapper: its logits and hidden states must equal
``GPT2LMHeadModel``'s own forward, stay causal, decode the same with a key/value cache, and
cost what an analytic count says. The causal LM tasks take a gpt2 ``student_hf`` / ``teacher_hf``
and refuse encoders (and the MLM tasks gpt2); a pcfg-lm suite runs, keeps and exports a GPT-2
student. Models are built from tiny configs; nothing is downloaded.
"""

import json

import pytest
import torch
import torch.nn.functional as F

from kdbench import LayerOutputs, UserError
from kdbench.api import Batch, Phase
from kdbench.models import HFDecoder, load_exported
from kdbench.models.generation import sample, uses_cache
from kdbench.run.budget import measure_step_flops

from conftest import kdbench

transformers = pytest.importorskip("transformers")
B, T, V = 3, 10, 50
D, HEADS, LAYERS = 32, 2, 2
TINY = dict(vocab_size=V, n_positions=16, n_layer=LAYERS, n_embd=D, n_head=HEADS,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)


@pytest.fixture
def pair(tmp_path):
    """(a GPT2LMHeadModel built with transformers alone, the HFDecoder loaded from its save_pretrained folder)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(**TINY, bos_token_id=None, eos_token_id=None)
    reference = transformers.GPT2LMHeadModel(config).eval()
    reference.save_pretrained(tmp_path / "gpt2")
    return reference, HFDecoder.from_pretrained(tmp_path / "gpt2")


def tokens(seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def token_mask(seed=1):
    return torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) < 0.4


def test_logits_equal_gpt2s_own_forward(pair):
    reference, model = pair
    assert model.num_layers == LAYERS and model.max_len == 16 and not model.training
    x, mask = tokens(), token_mask()
    expected = reference(x).logits
    assert model(x).shape == (B, T, V)
    torch.testing.assert_close(model(x), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(model(x, mask=mask), expected[mask], rtol=0, atol=1e-5)  # the head only there
    with pytest.raises(ValueError, match="exceeds the model's 16 positions"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_upto_and_layers_equal_the_models_hidden_states_and_run_only_those_blocks(pair):
    reference, model = pair
    x, mask = tokens(), token_mask()
    expected = reference(x, output_hidden_states=True).hidden_states  # [embeddings, block 1, ..., ln_f(last)]
    calls = []
    for i, block in enumerate(model.model.transformer.h, start=1):
        block.mlp.register_forward_hook(lambda mod, inp, out, i=i: calls.append(i))
    torch.testing.assert_close(model(x, upto=1), expected[1], rtol=0, atol=1e-5)
    assert calls == [1]
    # GPT-2 reports its last block after the final LayerNorm; a layer here is the block's own output
    last = model(x, upto=LAYERS)
    torch.testing.assert_close(model.model.transformer.ln_f(last), expected[LAYERS], rtol=0, atol=1e-5)
    calls.clear()
    out = model(x, layers=[1], with_logits=False)
    assert isinstance(out, LayerOutputs) and out.logits is None and calls == [1]
    out = model(x, layers=[2, 1], mask=mask)
    torch.testing.assert_close(out.hidden[1], expected[1], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.hidden[0], last, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.logits, reference(x).logits[mask], rtol=0, atol=1e-5)
    torch.testing.assert_close(model(x, upto=1, pre_activation=True), expected[1], rtol=0, atol=1e-5)


def test_layer_parameters_partition_the_blocks_and_layer_1_owns_the_embeddings(pair):
    _, model = pair
    t = model.model.transformer
    first = {id(p) for p in model.layer_parameters(1)}
    assert {id(t.wte.weight), id(t.wpe.weight)} <= first
    assert model.model.lm_head.weight is t.wte.weight  # tied: the head's matrix is layer 1's
    second = {id(p) for p in model.layer_parameters(2)}
    assert not first & second and {id(p) for p in t.ln_f.parameters()}.isdisjoint(first | second)
    assert model.hidden_size(2) == D and model.attention_heads(1) == HEADS
    with pytest.raises(ValueError, match="1..2"):
        model.layer_parameters(3)


def test_a_later_token_never_changes_earlier_logits(pair):
    _, model = pair
    model.train()  # no dropout in TINY: causality must hold in training too
    x = tokens()
    for t in (0, 4, T - 1):
        changed = x.clone()
        changed[:, t] = (changed[:, t] + 1) % V
        before, after = model(x), model(changed)
        torch.testing.assert_close(after[:, :t], before[:, :t], rtol=0, atol=1e-6)
        assert (after[:, t:] - before[:, t:]).abs().amax() > 1e-4  # it does change its own and later ones
        hidden = model(changed, layers=[1, 2], with_logits=False).hidden
        for h, h0 in zip(hidden, model(x, layers=[1, 2], with_logits=False).hidden):
            torch.testing.assert_close(h[:, :t], h0[:, :t], rtol=0, atol=1e-6)


def test_extend_decodes_with_a_cache_equal_to_the_full_forward(pair):
    _, model = pair
    x = tokens()
    logits, past = model.extend(x[:, :4])
    steps = [logits]
    for t in range(4, T):
        logits, past = model.extend(x[:, t:t + 1], past)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), model(x), rtol=0, atol=1e-5)
    assert uses_cache(model)
    g = torch.Generator().manual_seed(0)
    cached = sample(model, x[:, :2], 6, g)
    model.config = {}  # the same sampling without the cache: recomputing every prefix
    assert not uses_cache(model)
    torch.testing.assert_close(sample(model, x[:, :2], 6, torch.Generator().manual_seed(0)), cached)
    with pytest.raises(ValueError, match="one new token at a time"):
        model.extend(x[:, :2], past)


def test_internals_are_causal_attention_equal_to_the_eager_models(pair):
    reference, model = pair
    eager = transformers.GPT2LMHeadModel._from_config(reference.config, attn_implementation="eager")
    eager.load_state_dict(reference.state_dict())
    eager.eval()
    x = tokens()
    attentions = eager(x, output_attentions=True).attentions
    out = model(x, layers=[1, 2], internals=("attention", "scores", "queries", "keys", "values", "embeddings"))
    plain = model(x, layers=[1, 2])
    torch.testing.assert_close(out.logits, plain.logits, rtol=0, atol=1e-5)  # the same computation
    for inside, expected in zip(out.internals, attentions):
        torch.testing.assert_close(inside.attention, expected, rtol=0, atol=1e-5)
        assert torch.isinf(inside.scores[..., 0, 1:]).all() and inside.queries.shape == (B, HEADS, T, D // HEADS)
    t = model.model.transformer
    torch.testing.assert_close(out.embeddings, t.wte(x) + t.wpe(torch.arange(T)))


def block_flops(tokens_, width, seq_len):
    """Forward matmul FLOPs of one GPT-2 block: the fused q, k, v projection (``2*d*3d`` per token),
    the output projection (``2*d*d``), the MLP (``2 * 2*d*4d``), and attention scores and weighted
    sum (``2*T*d`` each per token: the math backend computes the whole T x T square, masked after)."""
    d = width
    return tokens_ * (2 * d * 3 * d + 2 * d * d + 2 * 2 * d * 4 * d + 2 * 2 * seq_len * d)


def head_flops(positions, width, vocab):
    """Forward matmul FLOPs of the LM head (``ln_f`` has none) at ``positions``."""
    return positions * 2 * width * vocab


@pytest.mark.parametrize("depth", ["full", "upto=1"])
def test_step_flops_match_analytic(pair, depth):
    _, model = pair
    model.train()
    x, mask = tokens(), token_mask()
    batch = Batch(x, x[mask], mask)
    if depth == "full":
        loss = lambda b: F.cross_entropy(model(b.inputs, mask=b.mask), b.labels)  # noqa: E731
        forward = LAYERS * block_flops(B * T, D, T) + head_flops(int(mask.sum()), D, V)
    else:
        loss = lambda b: model(b.inputs, upto=1).square().mean()  # noqa: E731
        forward = block_flops(B * T, D, T)
    measured = measure_step_flops(Phase("probe", loss=loss), batch, model.parameters())
    # every matmul needs the gradients of both operands in backward (the embeddings train): 2x forward
    assert measured == pytest.approx(3 * forward, rel=0.02)


def build(spec, causal, field="student_hf", vocab=7, seq_len=12):
    from kdbench.tasks.hf_models import HFModelConfig, build_hf_model

    return build_hf_model(HFModelConfig(**spec) if isinstance(spec, dict) else spec, vocab, field,
                          causal=causal, seq_len=seq_len)


def test_build_hf_model_takes_gpt2_for_causal_tasks_only(tmp_path):
    model = build({"type": "gpt2", "config": {"n_layer": 1, "n_embd": 16, "n_head": 2}}, causal=True)
    assert isinstance(model, HFDecoder) and model.vocab_size == 7 and model.max_len == 12  # the task's sizes
    with pytest.raises(UserError) as e:
        build({"type": "gpt2", "config": {"n_layer": 1}}, causal=False, field="teacher_hf")
    assert str(e.value) == ("teacher_hf: type gpt2, but this task does masked language modelling (an encoder); "
                            "allowed types: bert, roberta, distilbert")
    with pytest.raises(UserError) as e:
        build({"type": "bert", "config": {"hidden_size": 16}}, causal=True)
    assert str(e.value) == ("student_hf: type bert, but this task does causal language modelling (a decoder); "
                            "allowed types: gpt2")
    with pytest.raises(UserError, match=r"student_hf: the model has 8 positions .* give it at least 12"):
        build({"type": "gpt2", "config": {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 8}}, causal=True)
    with pytest.raises(UserError, match="config.n_layers is not a GPT2Config field; allowed: .*n_layer,"):
        build({"type": "gpt2", "config": {"n_layers": 1}}, causal=True)
    # a pretrained folder: its model_type decides
    model.save_pretrained(tmp_path / "gpt2")
    assert isinstance(build(str(tmp_path / "gpt2"), causal=True), HFDecoder)
    with pytest.raises(UserError, match="holds model_type gpt2, but this task does masked language modelling"):
        build(str(tmp_path / "gpt2"), causal=False)


SUITE = """
name: hf-gpt2
seeds: [0]
budget: {steps: 10, method: one-shot}
eval: {points: 2}
tasks:
  - name: pcfg-lm
    params:
      student_hf: {type: gpt2, config: {n_layer: 2, n_embd: 32, n_head: 2}}
      samples: 16
      eval_size: 16
    teacher: {batch_size: 8, steps: 30}
    student: {batch_size: 8}
methods:
  - name: labels
  - name: one-shot
"""


def test_pcfg_lm_distils_into_a_gpt2_student_that_exports(write_suite, tmp_path):
    out = tmp_path / "out"
    result = kdbench("run", write_suite(SUITE), "-o", out, "-q")
    assert "2 runs executed" in result.output
    from kdbench.plugins import load_plugins
    from kdbench.run.runner import build_task
    from kdbench.suite.identity import Run

    for run in sorted((out / "runs").iterdir()):
        recorded = json.loads((run / "summary.json").read_text())
        assert recorded["status"] == "finished"
        spec = json.loads((run / "student.json").read_text())["model"]
        assert spec["class"] == "kdbench.models.HFDecoder" and spec["hf_config"]["n_positions"] == 73
        kdbench("export", run, tmp_path / run.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / run.name, local_files_only=True)
        assert model.config.n_layer == 2 and model.config.vocab_size == 6  # cfg3b-short: 3 terminals + 3
        loaded = load_exported(tmp_path / run.name)
        assert isinstance(loaded, HFDecoder)
        task = build_task(Run.from_config(json.loads((run / "config.json").read_text())), load_plugins(),
                          torch.device("cpu"), out)
        metrics = task.evaluate(loaded)
        assert metrics["perplexity"] == pytest.approx(recorded["metrics"]["perplexity"], rel=1e-6)
        assert metrics["acceptance"] == recorded["metrics"]["acceptance"]


def test_pcfg_bert_refuses_a_gpt2_through_the_cli(write_suite):
    suite = SUITE.replace("pcfg-lm", "pcfg-bert").replace("      samples: 16\n", "")
    result = kdbench("validate", write_suite(suite), expect=2)
    assert "student_hf: type gpt2, but this task does masked language modelling" in result.output
