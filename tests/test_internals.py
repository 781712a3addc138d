"""The attention extension of the layered interface: ``model(x, layers=[...], internals=(...))`` returns each
requested layer's self-attention internals (kdbench.LayerInternals), equal to a recomputation by hand, at no
extra cost on the built-in encoder, the same layers run; the Hugging Face adapters give the same shapes and the
model's own attention probabilities; the MLP has none and says so."""

import pytest
import torch
import torch.nn.functional as F

from kdbench import MLP, Batch, Encoder, InternalOutputs, LayerInternals, LayerOutputs, UserError, require_internals
from kdbench.api import Phase
from kdbench.models import HFEncoder
from kdbench.run.budget import measure_step_flops

B, T, V, D, HEADS = 3, 7, 11, 16, 4
ALL = ("attention", "scores", "queries", "keys", "values", "embeddings")


def tokens(seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def encoder(causal=False, layers=3):
    torch.manual_seed(0)
    return Encoder(V, V, max_len=T, width=D, heads=HEADS, layers=layers, causal=causal)


def by_hand(model, x, layer):
    """Block ``layer``'s queries, keys, values, scores and attention written out from its weights."""
    h = model(x, upto=layer - 1) if layer > 1 else model.tok(x) + model.pos.weight[:T]
    block = model.blocks[layer - 1]
    qkv = F.linear(F.layer_norm(h, (D,), block.ln1.weight, block.ln1.bias), block.qkv.weight, block.qkv.bias)
    q, k, v = (part.reshape(B, T, HEADS, D // HEADS).transpose(1, 2) for part in qkv.split(D, dim=-1))
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / (D // HEADS) ** 0.5
    if block.causal:
        scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
    return q, k, v, scores, torch.exp(scores - scores.logsumexp(-1, keepdim=True))


@pytest.mark.parametrize("causal", [False, True])
def test_encoder_internals_match_a_recomputation_by_hand(causal):
    model, x = encoder(causal), tokens()
    out = model(x, layers=[3, 1], internals=ALL, with_logits=False)
    assert isinstance(out, InternalOutputs) and len(out.internals) == 2
    for layer, inside in zip([3, 1], out.internals):
        q, k, v, scores, attention = by_hand(model, x, layer)
        assert inside.attention.shape == (B, HEADS, T, T) and inside.values.shape == (B, HEADS, T, D // HEADS)
        assert torch.allclose(inside.attention.sum(-1), torch.ones(B, HEADS, T), atol=1e-6)  # over the keys
        for got, want in [(inside.queries, q), (inside.keys, k), (inside.values, v), (inside.attention, attention)]:
            assert torch.allclose(got, want, atol=1e-5)
        assert torch.equal(inside.scores.isinf(), scores.isinf())
        assert torch.allclose(inside.scores[~scores.isinf()], scores[~scores.isinf()], atol=1e-5)
        if causal:
            assert (inside.attention.triu(1) == 0).all()
    assert torch.allclose(out.embeddings, model.tok(x) + model.pos.weight[:T])


@pytest.mark.parametrize("causal", [False, True])
def test_asking_for_internals_changes_no_output(causal):
    model, x = encoder(causal), tokens()
    mask = torch.rand(B, T, generator=torch.Generator().manual_seed(1)) < 0.4
    plain = model(x, layers=[2, 3], mask=mask)
    looked = model(x, layers=[2, 3], mask=mask, internals=("attention", "values"))
    assert isinstance(plain, LayerOutputs)
    for a, b in zip(plain.hidden, looked.hidden):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(plain.logits, looked.logits, atol=1e-5)
    assert looked.embeddings is None and looked.internals[0].scores is None and looked.internals[0].keys is None


def test_only_the_layers_asked_for_run_and_only_those_are_looked_into():
    model, x = encoder(layers=3), tokens()
    calls = []
    for i, block in enumerate(model.blocks, start=1):
        block.register_forward_hook(lambda mod, inp, out, i=i: calls.append((i, isinstance(out, tuple))))
    out = model(x, layers=[2], internals=("values",), with_logits=False)
    assert calls == [(1, False), (2, True)]
    assert out.logits is None and out.internals[0].values is not None
    calls.clear()
    out = model(x, layers=[1], internals=("embeddings",), with_logits=False)
    assert calls == [(1, False)] and out.internals == [LayerInternals()]


def step_flops(model, internals):
    def loss(batch):
        out = model(batch.inputs, layers=[1, 2], internals=internals, with_logits=False)
        return out.hidden[-1].square().mean()
    return measure_step_flops(Phase("p", loss=loss), Batch(tokens(), tokens(1)), model.parameters())


@pytest.mark.parametrize("causal", [False, True])
def test_internals_cost_nothing_more_on_the_encoder(causal):
    """Explicit attention runs the matmuls the fused kernel is counted for: forward and backward FLOPs are equal."""
    model = encoder(causal)
    assert step_flops(model, ("attention", "values")) == step_flops(model, ())


def test_the_mlp_has_no_internals_and_methods_say_so():
    mlp = MLP(5, [8, 8], 2)
    assert mlp.available_internals == ()
    with pytest.raises(ValueError, match="MLP: internals attention are not available.*no self-attention"):
        mlp(torch.zeros(2, 5), layers=[1], internals=("attention",))
    with pytest.raises(UserError, match=r"minilm: cannot apply to this task: its student model \(MLP\) has no "
                                        r"attention, values.*transfers"):
        require_internals(mlp, ("attention", "values"), "minilm", "transfers self-attention")
    require_internals(encoder(), ALL, "minilm", "transfers self-attention")  # nothing missing: no error


def test_bad_requests_are_value_errors():
    model, x = encoder(), tokens()
    with pytest.raises(ValueError, match="needs layers="):
        model(x, internals=("attention",))
    with pytest.raises(ValueError, match="internals gates are not available"):
        model(x, layers=[1], internals=("gates",))
    assert model.attention_heads(2) == HEADS


# Hugging Face adapters: the same request, the same shapes, the model's own attention probabilities

HF_KINDS = ["bert", "roberta", "distilbert"]


def hf_config(kind):
    if kind == "distilbert":
        return dict(vocab_size=V, dim=D, hidden_dim=32, n_heads=HEADS, n_layers=3, max_position_embeddings=16,
                    dropout=0.0, attention_dropout=0.0)
    return dict(vocab_size=V, hidden_size=D, intermediate_size=32, num_attention_heads=HEADS, num_hidden_layers=3,
                max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(params=HF_KINDS)
def hf_pair(request, tmp_path):
    """(the model with eager attention, which returns its attention probabilities; the HFEncoder of the same weights)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(request.param, **hf_config(request.param))
    transformers.AutoModelForMaskedLM.from_config(config, attn_implementation="sdpa").save_pretrained(tmp_path)
    eager = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    return eager, HFEncoder.from_pretrained(tmp_path)


def test_hf_internals_have_the_encoders_shapes_and_the_models_own_attention(hf_pair):
    eager, model = hf_pair
    x = tokens()
    out = model(x, layers=[1, 3], internals=ALL, with_logits=False)
    reference = eager(x, output_attentions=True, output_hidden_states=True)
    for layer, inside in zip([1, 3], out.internals):
        assert inside.attention.shape == inside.scores.shape == (B, HEADS, T, T)
        assert inside.queries.shape == inside.keys.shape == inside.values.shape == (B, HEADS, T, D // HEADS)
        assert torch.allclose(inside.attention.sum(-1), torch.ones(B, HEADS, T), atol=1e-6)
        assert torch.allclose(inside.attention, reference.attentions[layer - 1], atol=1e-5)
        assert torch.allclose(inside.attention, inside.scores.softmax(-1))
    assert torch.allclose(out.embeddings, reference.hidden_states[0], atol=1e-6)
    assert torch.allclose(out.hidden[1], reference.hidden_states[3], atol=1e-5)
    assert model.attention_heads(1) == HEADS


def test_hf_values_are_the_value_projection_of_the_layer_input(hf_pair):
    _, model = hf_pair
    x = tokens()
    h = model(x, upto=1)
    layer = model._layers[1]
    project = layer.attention.v_lin if model.model_type == "distilbert" else layer.attention.self.value
    expected = project(h).view(B, T, HEADS, -1).transpose(1, 2)
    got = model(x, layers=[2], internals=("values",), with_logits=False).internals[0].values
    assert torch.allclose(got, expected, atol=1e-6)
    assert model(x, layers=[2], with_logits=False).hidden[0].shape == (B, T, D)  # hooks are gone afterwards
