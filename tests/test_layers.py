"""``model(x, layers=[...])``: several layers' representations from one pass, charged as one pass."""

import copy

import pytest
import torch
import torch.nn.functional as F

from kdbench import LayerOutputs
from kdbench.api import Batch, Phase
from kdbench.run.budget import measure_step_flops
from kdbench.models import MLP, Encoder

B, T, V = 4, 12, 11


def encoder(layers=4, width=32, heads=4, readout="tokens", outputs=V):
    torch.manual_seed(0)
    return Encoder(vocab_size=V, outputs=outputs, max_len=T, width=width, heads=heads, layers=layers,
                   readout=readout)


def mlp():
    torch.manual_seed(0)
    return MLP(10, [8, 6, 5], 3)


def tokens(seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def token_mask(seed=1):
    return torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) < 0.3


def step_flops(loss, model, batch):
    return measure_step_flops(Phase("probe", loss=loss), batch, model.parameters())


def called_blocks(blocks):
    """A list that records the 1-based index of every block of ``blocks`` that runs."""
    calls = []
    for i, block in enumerate(blocks, start=1):
        block.register_forward_hook(lambda mod, inp, out, i=i: calls.append(i))
    return calls


@pytest.mark.parametrize("pre_activation", [False, True])
def test_mlp_layers_equal_upto_outputs_and_logits(pre_activation):
    model = mlp()
    x = torch.randn(7, 10, generator=torch.Generator().manual_seed(0))
    asked = [3, 1, 1, 2]
    out = model(x, layers=asked, pre_activation=pre_activation)
    assert isinstance(out, LayerOutputs)
    assert len(out.hidden) == len(asked)
    for layer, h in zip(asked, out.hidden):
        assert torch.equal(h, model(x, upto=layer, pre_activation=pre_activation))
    assert torch.equal(out.logits, model(x))
    if pre_activation:  # the pre-activation of a ReLU layer has negative entries, the post-activation none
        assert (out.hidden[0] < 0).any()


@pytest.mark.parametrize("readout", ["tokens", "last"])
def test_encoder_layers_equal_upto_outputs_and_logits(readout):
    model, x = encoder(readout=readout), tokens()
    mask = token_mask() if readout == "tokens" else None
    asked = [2, 4, 1, 2]
    out = model(x, layers=asked, mask=mask)
    for layer, h in zip(asked, out.hidden):
        assert h.shape == (B, T, model.hidden_size(layer))
        assert torch.equal(h, model(x, upto=layer))
    assert torch.equal(out.logits, model(x, mask=mask))


def test_without_logits_no_later_layer_runs_and_the_flops_are_those_of_upto():
    model, x = encoder(), tokens()
    batch = Batch(x, torch.zeros(B, dtype=torch.long))
    calls = called_blocks(model.blocks)
    out = model(x, layers=[1, 2], with_logits=False)
    assert out.logits is None and len(out.hidden) == 2
    assert calls == [1, 2]

    def two_layers(b):
        return sum(h.square().mean() for h in model(b.inputs, layers=[2, 1], with_logits=False).hidden)

    both = step_flops(two_layers, model, batch)
    upto = step_flops(lambda b: model(b.inputs, upto=2).square().mean(), model, batch)
    assert both == upto
    full = step_flops(lambda b: model(b.inputs, upto=4).square().mean(), model, batch)
    assert both < full


def test_mlp_without_logits_runs_no_later_layer():
    model = mlp()
    calls = called_blocks([*model.hidden, model.head])
    out = model(torch.randn(2, 10), layers=[2], with_logits=False)
    assert out.logits is None and calls == [1, 2]


@pytest.mark.parametrize("model", [encoder(layers=3), mlp()], ids=["encoder", "mlp"])
def test_bad_layer_requests_are_value_errors_naming_the_range(model):
    x = tokens() if isinstance(model, Encoder) else torch.randn(2, 10)
    with pytest.raises(ValueError, match="not both"):
        model(x, upto=1, layers=[1])
    for bad in ([0], [1, 4]):
        with pytest.raises(ValueError, match=r"layers must be in 1\.\.3, got"):
            model(x, layers=bad)
    with pytest.raises(ValueError, match=r"1\.\.3"):
        model(x, layers=[])
    with pytest.raises(ValueError, match="needs layers"):
        model(x, with_logits=False)


def layer_forward_flops(tokens_, width, seq_len, mlp_ratio=4):
    """Matmul FLOPs of one pre-LN block's forward over ``tokens_`` tokens: QKV, output
    projection, MLP, and attention's QK^T and AV (each ``2*T*d`` per token)."""
    d = width
    return tokens_ * (2 * d * 3 * d + 2 * d * d + 2 * 2 * d * mlp_ratio * d + 2 * 2 * seq_len * d)


def test_loss_on_every_layer_is_charged_one_forward_and_backward():
    """The issue's acceptance test: MSEs of all four block outputs of a 4-layer encoder to fixed
    random projections of a frozen copy's block outputs cost one forward+backward of four blocks
    (plus the copy's forward and the projections), not 1+2+3+4 blocks as with upto=1..4."""
    width, layers = 32, 4
    student, x = encoder(layers=layers, width=width), tokens()
    teacher = copy.deepcopy(student).requires_grad_(False).eval()
    g = torch.Generator().manual_seed(0)
    projections = [torch.randn(width, width, generator=g) / width ** 0.5 for _ in range(layers)]
    every = list(range(1, layers + 1))
    batch = Batch(x, torch.zeros(B, dtype=torch.long))

    def one_pass(b):
        with torch.no_grad():
            targets = [h @ p for h, p in zip(teacher(b.inputs, layers=every, with_logits=False).hidden, projections)]
        hidden = student(b.inputs, layers=every, with_logits=False).hidden
        return sum(F.mse_loss(h, t) for h, t in zip(hidden, targets))

    def layer_by_layer(b):
        with torch.no_grad():
            targets = [teacher(b.inputs, upto=i) @ p for i, p in zip(every, projections)]
        return sum(F.mse_loss(student(b.inputs, upto=i), t) for i, t in zip(every, targets))

    block = layer_forward_flops(B * T, width, T)
    projection = 2 * B * T * width * width
    # embeddings are trained, so every block's backward computes weight and input gradients: 2x its forward
    expected = 3 * layers * block + layers * block + layers * projection
    measured = step_flops(one_pass, student, batch)
    assert measured == pytest.approx(expected, rel=0.01)
    torch.testing.assert_close(one_pass(batch), layer_by_layer(batch))

    old = step_flops(layer_by_layer, student, batch)
    depths = sum(every)  # 1 + 2 + 3 + 4 blocks, for the student (fwd+bwd) and the copy (fwd)
    assert old == pytest.approx(3 * depths * block + depths * block + layers * projection, rel=0.01)
    assert old > 2 * measured
