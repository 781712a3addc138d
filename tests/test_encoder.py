"""The encoder's layered interface, its read-outs, and its measured FLOPs against the analytic count."""

import pytest
import torch
import torch.nn.functional as F

from kdbench.api import Batch, MethodContext, Phase, Recipe, logits
from kdbench.run.budget import measure_step_flops
from kdbench.models import Encoder
from kdbench.models.encoder import encoder_step_flops
from kdbench.run.teachers import ProbeTeacher

B, T, V = 4, 12, 11


def encoder(layers=3, width=16, heads=4, causal=False, readout="tokens", outputs=V):
    torch.manual_seed(0)
    return Encoder(vocab_size=V, outputs=outputs, max_len=T, width=width, heads=heads, layers=layers,
                   causal=causal, readout=readout)


def tokens(seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def manual_blocks(model, x):
    """Per-token hidden state after every block, computed by hand from the modules."""
    h = model.tok(x) + model.pos.weight[: x.shape[1]]
    out = []
    for block in model.blocks:
        h = block(h)
        out.append(h)
    return out


def test_upto_returns_per_token_block_outputs_and_runs_only_those_blocks():
    model, x = encoder(), tokens()
    expected = manual_blocks(model, x)
    calls = []
    for i, block in enumerate(model.blocks, start=1):
        block.register_forward_hook(lambda mod, inp, out, i=i: calls.append(i))
    for i in range(1, model.num_layers + 1):
        calls.clear()
        h = model(x, upto=i)
        assert h.shape == (B, T, model.hidden_size(i))
        torch.testing.assert_close(h, expected[i - 1])
        assert calls == list(range(1, i + 1))
    with pytest.raises(ValueError, match="1..3"):
        model(x, upto=4)


def test_masked_logits_are_the_full_logits_at_masked_positions_in_row_major_order():
    model, x = encoder(), tokens()
    mask = torch.rand(B, T, generator=torch.Generator().manual_seed(1)) < 0.3
    full = model(x)
    assert full.shape == (B, T, V)
    out = model(x, mask=mask)
    assert out.shape == (int(mask.sum()), V)
    torch.testing.assert_close(out, full[mask])


def test_last_position_readout_for_classification():
    model = encoder(readout="last", outputs=2)
    x = tokens()
    out = model(x)
    assert out.shape == (B, 2)
    torch.testing.assert_close(out, model.head(model.norm(model(x, upto=model.num_layers)[:, -1])))


@pytest.mark.parametrize("causal", [True, False])
def test_causal_attention_hides_later_tokens(causal):
    model = encoder(causal=causal)
    x = tokens()
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % V
    early_x, early_y = model(x, upto=2)[:, :-1], model(y, upto=2)[:, :-1]
    assert torch.allclose(early_x, early_y, atol=1e-6) == causal


def test_layer_parameters_partition_the_model_embeddings_in_layer_one():
    model = encoder()
    layers = [model.layer_parameters(i) for i in range(1, model.num_layers + 1)]
    ids = [id(p) for layer in layers for p in layer]
    assert {id(model.tok.weight), id(model.pos.weight)} <= {id(p) for p in layers[0]}
    assert len(ids) == len(set(ids))
    rest = {id(p) for p in [*model.norm.parameters(), *model.head.parameters()]}
    assert set(ids) | rest == {id(p) for p in model.parameters()}
    assert not set(ids) & rest


def probe(phase_loss, model, batch):
    return measure_step_flops(Phase("probe", loss=phase_loss), batch, model.parameters())


@pytest.mark.parametrize("causal", [False, True])
def test_mlm_step_flops_match_analytic(causal):
    width, layers = 32, 2
    model = encoder(layers=layers, width=width, causal=causal)
    x = tokens()
    mask = torch.rand(B, T, generator=torch.Generator().manual_seed(2)) < 0.3
    batch = Batch(x, x[mask], mask)
    measured = probe(lambda b: F.cross_entropy(logits(model, b), b.labels), model, batch)
    analytic = encoder_step_flops(B, T, width, layers, V, read=int(mask.sum()))
    assert measured == pytest.approx(analytic, rel=0.01)


def test_classification_and_partial_depth_flops_match_analytic():
    width, layers = 32, 3
    model = encoder(layers=layers, width=width, readout="last", outputs=2)
    x = tokens()
    batch = Batch(x, torch.zeros(B, dtype=torch.long))
    full = probe(lambda b: F.cross_entropy(logits(model, b), b.labels), model, batch)
    assert full == pytest.approx(encoder_step_flops(B, T, width, layers, 2, read=B), rel=0.01)
    # a stage that runs blocks 1..2 only is charged for those blocks and no head
    partial = probe(lambda b: model(b.inputs, upto=2).square().mean(), model, batch)
    assert partial == pytest.approx(encoder_step_flops(B, T, width, 2, 2, read=0), rel=0.01)


def test_curriculum_extraction_on_encoders_matches_projected_block_outputs():
    """Extraction stages regress student block outputs on projected teacher block outputs,
    per token, with a layer map from the deeper teacher, and are charged only for the blocks that ran."""
    from kdbench.methods.curriculum_extraction import CurriculumExtraction
    from kdbench.tasks.pcfg import PCFGBert, PCFGParams

    params = PCFGParams(seq_len=24, teacher_layers=4, teacher_heads=4, teacher_width=32, student_layers=2,
                        student_heads=2, student_width=16, eval_size=8)
    task = PCFGBert().build(params, 0, torch.device("cpu"))
    torch.manual_seed(0)
    student, teacher = task.student_model(), ProbeTeacher(task, 0)
    ctx = MethodContext(task=task, student=student, teacher=teacher, teacher_recipe=Recipe(), seed=0,
                        device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    method = CurriculumExtraction()
    phases = method.phases(ctx, method.Params(layer_map=[2, 4], layers=[1, 2]))
    assert [ph.info.get("teacher_layer") for ph in phases[:2]] == [2, 4]
    batch = task.train_batch(torch.Generator().manual_seed(0), 4)
    # redraw the stage-2 projection from the same stream to check the loss by hand
    g = torch.Generator().manual_seed(0)
    torch.randn(32, 16, generator=g)
    projection = torch.randn(32, 16, generator=g) / 32 ** 0.5
    with torch.no_grad():
        expected = F.mse_loss(student(batch.inputs, upto=2), teacher.final()(batch.inputs, upto=4) @ projection)
        torch.testing.assert_close(phases[1].loss(batch), expected)
    # stage 1 is charged for student block 1 (forward + backward), teacher blocks 1..2 and the projection
    tokens_ = batch.inputs.numel()
    analytic = (encoder_step_flops(4, 24, 16, 1, task.vocab_size, read=0)
                + encoder_step_flops(4, 24, 32, 2, task.vocab_size, read=0, backward=False) + 2 * tokens_ * 32 * 16)
    costs = [measure_step_flops(ph, batch, student.parameters()) for ph in phases]
    assert costs[0] == pytest.approx(analytic, rel=0.01)
    assert costs[0] < costs[1]
