"""Hugging Face encoders through the layered interface: outputs equal the model's own,
partial depth runs only the layers asked for, and measured FLOPs match the analytic count.

Models are built from tiny configs, saved with ``save_pretrained`` and loaded back with
``HFEncoder.from_pretrained`` as a user would; nothing is downloaded.
"""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from kdbench import LayerOutputs, UserError
from kdbench.api import Batch, MethodContext, Phase, Recipe, Task, TaskInstance, logits
from kdbench.run.budget import measure_step_flops
from kdbench.models import HFEncoder

from conftest import without_time

B, T, V = 3, 10, 50
D, FFN, HEADS, LAYERS = 32, 64, 4, 3
KINDS = ["bert", "roberta", "distilbert"]


def config(kind, width=D, ffn=FFN, heads=HEADS, layers=LAYERS):
    """A tiny config of ``kind`` without dropout (outputs must be deterministic)."""
    if kind == "distilbert":
        return dict(vocab_size=V, dim=width, hidden_dim=ffn, n_heads=heads, n_layers=layers,
                    max_position_embeddings=32, dropout=0.0, attention_dropout=0.0)
    return dict(vocab_size=V, hidden_size=width, intermediate_size=ffn, num_attention_heads=heads,
                num_hidden_layers=layers, max_position_embeddings=32, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def saved_model(transformers, folder, kind, **sizes):
    """A randomly initialised masked-LM model built with transformers alone, saved in ``folder``."""
    torch.manual_seed(0)
    hf_config = transformers.AutoConfig.for_model(kind, **config(kind, **sizes))
    model = transformers.AutoModelForMaskedLM.from_config(hf_config, attn_implementation="sdpa")
    model.save_pretrained(folder)
    return model.eval()


@pytest.fixture(params=KINDS)
def pair(request, transformers, tmp_path):
    """(the transformers model, the HFEncoder loaded from its save_pretrained folder)."""
    reference = saved_model(transformers, tmp_path / request.param, request.param)
    return reference, HFEncoder.from_pretrained(tmp_path / request.param)


def tokens(seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def token_mask(seed=1):
    return torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) < 0.3


def layer_modules(reference):
    """The transformer layers of a transformers masked-LM model, found by hand."""
    base = reference.base_model
    return (base.encoder if hasattr(base, "encoder") else base.transformer).layer


def test_upto_equals_the_models_own_hidden_states_and_runs_only_those_layers(pair):
    reference, model = pair
    assert model.num_layers == LAYERS and not model.training
    x = tokens()
    expected = reference(x, output_hidden_states=True).hidden_states  # [embeddings, layer 1, ...]
    calls = []
    for i, layer in enumerate(layer_modules(model.model), start=1):
        layer.register_forward_hook(lambda mod, inp, out, i=i: calls.append(i))
    for i in range(1, LAYERS + 1):
        calls.clear()
        h = model(x, upto=i)
        assert h.shape == (B, T, model.hidden_size(i)) == (B, T, D)
        assert torch.allclose(h, expected[i], atol=1e-6)
        assert calls == list(range(1, i + 1))
    with pytest.raises(ValueError, match=r"1\.\.3"):
        model(x, upto=LAYERS + 1)


def test_attention_is_bidirectional_without_an_attention_mask(pair):
    _, model = pair
    x = tokens()
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % V
    assert not torch.allclose(model(x, upto=1)[:, 0], model(y, upto=1)[:, 0])


def test_masked_logits_are_the_models_own_logits_at_masked_positions(pair):
    reference, model = pair
    x, mask = tokens(), token_mask()
    expected = reference(x).logits
    out = model(x, mask=mask)
    assert out.shape == (int(mask.sum()), V)
    assert torch.allclose(out, expected[mask], atol=1e-5)
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_layers_equal_upto_outputs_and_logits(pair):
    _, model = pair
    x, mask = tokens(), token_mask()
    out = model(x, layers=[2, 1, 2], mask=mask)
    assert isinstance(out, LayerOutputs)
    for layer, h in zip([2, 1, 2], out.hidden):
        assert torch.equal(h, model(x, upto=layer))
    assert torch.equal(out.logits, model(x, mask=mask))
    assert model(x, layers=[1], with_logits=False).logits is None


def test_layer_parameters_partition_the_model_embeddings_in_layer_one(pair):
    _, model = pair
    layers = [{id(p) for p in model.layer_parameters(i)} for i in range(1, LAYERS + 1)]
    embeddings = {id(p) for p in model.model.base_model.embeddings.parameters()}
    assert embeddings <= layers[0]
    assert sum(map(len, layers)) == len(set().union(*layers))
    head = {id(p) for p in model.parameters()} - set().union(*layers)
    assert head and all(not layer & head for layer in layers)


def block_flops(tokens_, width, ffn, seq_len):
    """Forward matmul FLOPs of one transformer layer: Q, K, V and output projections,
    the two FFN matmuls, attention scores and weighted sum (``2*T*d`` each per token)."""
    d = width
    return tokens_ * (3 * 2 * d * d + 2 * d * d + 2 * 2 * d * ffn + 2 * 2 * seq_len * d)


def head_flops(positions, width, vocab):
    """Forward matmul FLOPs of the MLM head (dense transform, vocabulary decoder) at ``positions``."""
    return positions * (2 * width * width + 2 * width * vocab)


def step_flops(loss, model, batch):
    return measure_step_flops(Phase("probe", loss=loss), batch, model.parameters())


@pytest.mark.parametrize("depth", ["full", "upto=1"])
def test_step_flops_match_analytic(pair, depth):
    _, model = pair
    model.train()
    x, mask = tokens(), token_mask()
    batch = Batch(x, x[mask], mask)
    if depth == "full":
        measured = step_flops(lambda b: F.cross_entropy(model(b.inputs, mask=b.mask), b.labels), model, batch)
        forward = LAYERS * block_flops(B * T, D, FFN, T) + head_flops(int(mask.sum()), D, V)
    else:
        measured = step_flops(lambda b: model(b.inputs, upto=1).square().mean(), model, batch)
        forward = block_flops(B * T, D, FFN, T)
    # the embeddings train, so every matmul (block 1's included) needs the gradients of both
    # operands in backward: 2x its forward
    analytic = 3 * forward
    print(f"{model.model_type} {depth}: measured {measured}, analytic {analytic}")
    assert measured == pytest.approx(analytic, rel=0.01)


class FrozenTeacher:
    """The teacher access a method reads: a final teacher and no checkpoints."""

    def __init__(self, model):
        self.model = model.requires_grad_(False).eval()
        self.checkpoint_steps, self.curve = [], []

    def final(self):
        return self.model

    def at(self, step):
        return self.model


def test_curriculum_extraction_with_hf_student_and_teacher(transformers, tmp_path):
    """A 2-layer BERT student of width 16 learns from a 4-layer RoBERTa teacher of width 32 with
    the built-in curriculum-extraction method: each phase is charged what it runs."""
    from kdbench.methods.curriculum_extraction import CurriculumExtraction

    saved_model(transformers, tmp_path / "teacher", "roberta", layers=4)
    teacher = HFEncoder.from_pretrained(tmp_path / "teacher")
    torch.manual_seed(1)
    student = HFEncoder.from_config("bert", config("bert", width=16, ffn=32, heads=2, layers=2))
    ctx = MethodContext(task=None, student=student, teacher=FrozenTeacher(teacher), teacher_recipe=Recipe(), seed=0,
                        device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    method = CurriculumExtraction()
    extract, final = method.phases(ctx, method.Params(layers=[1], layer_map=[2]))
    x, mask = tokens(), token_mask()
    batch = Batch(x, x[mask], mask)

    projection = torch.randn(32, 16, generator=torch.Generator().manual_seed(0)) / 32 ** 0.5  # the method's draw
    with torch.no_grad():
        target = teacher.model(x, output_hidden_states=True).hidden_states[2] @ projection
        torch.testing.assert_close(extract.loss(batch), F.mse_loss(student(x, upto=1), target))

    masked = int(mask.sum())
    student_block, teacher_block = block_flops(B * T, 16, 32, T), block_flops(B * T, 32, FFN, T)
    # student layer 1 forward+backward; teacher layers 1..2 forward; projection forward
    extraction = 3 * student_block + 2 * teacher_block + 2 * B * T * 32 * 16
    # student fwd+bwd through both layers and its head; teacher forward through all four and its head
    logits = 3 * (2 * student_block + head_flops(masked, 16, V)) + 4 * teacher_block + head_flops(masked, 32, V)
    for phase, analytic in [(extract, extraction), (final, logits)]:
        measured = measure_step_flops(phase, batch, student.parameters())
        print(f"{phase.name}: measured {measured}, analytic {analytic}")
        assert measured == pytest.approx(analytic, rel=0.01)


def test_config_errors_name_the_field_and_the_allowed_values(transformers, tmp_path):
    with pytest.raises(UserError, match=r"config\.hiden_size is not a BertConfig field; allowed: .*hidden_size"):
        HFEncoder.from_config("bert", {"hiden_size": 32})
    with pytest.raises(UserError, match="model_type 'gpt2' is not supported; allowed: bert, roberta, distilbert"):
        HFEncoder.from_config("gpt2", {})
    with pytest.raises(UserError, match="not a folder.*never downloaded"):
        HFEncoder.from_pretrained("bert-base-uncased")
    with pytest.raises(UserError, match="no Hugging Face config"):
        HFEncoder.from_pretrained(tmp_path)
    base = transformers.AutoModel.from_config(transformers.AutoConfig.for_model("bert", **config("bert")))
    with pytest.raises(UserError, match="masked-LM model .*got BertModel"):
        HFEncoder(base)


def test_without_transformers_building_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(UserError, match=r'pip install "kdbench\[hf\]"'):
        HFEncoder.from_config("bert", {})


def test_importing_kdbench_does_not_import_transformers():
    code = "import sys, kdbench, kdbench.models, kdbench.models.hf; print('transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


class MaskedTokens(Task):
    """Uniform random tokens, 30% masked (replaced by token 1): an MLM task with HF models."""

    name = "test-hf-masked-tokens"

    def build(self, params, seed, device, cache_dir=None):
        return MaskedTokensInstance()

    def teacher_recipe(self, params):
        return Recipe(batch_size=8, steps=10)

    def student_recipe(self, params):
        return Recipe(batch_size=8)


class MaskedTokensInstance(TaskInstance):
    def train_batch(self, generator, batch_size):
        x = torch.randint(2, V, (batch_size, T), generator=generator)
        mask = torch.rand(batch_size, T, generator=generator) < 0.3
        mask[:, 0] = True
        return Batch(x.masked_fill(mask, 1), x[mask], mask)

    def evaluate(self, model):
        batch = self.train_batch(torch.Generator().manual_seed(123), 16)
        with torch.no_grad():
            predicted = logits(model, batch).argmax(-1)
        return {"accuracy": (predicted == batch.labels).float().mean().item()}

    def teacher_model(self):
        return HFEncoder.from_config("roberta", config("roberta", layers=4))

    def student_model(self):
        return HFEncoder.from_config("bert", config("bert", width=16, ffn=32, heads=2, layers=2))


def test_hf_models_as_teacher_and_student_through_the_engine(transformers):
    """A task whose models are HFEncoders: the teacher trains and is cached, the student
    trains with curriculum extraction under the budget, the same curve twice."""
    from kdbench.testing import TinyTask, run_method

    task = TinyTask(name=MaskedTokens, params={}, teacher={}, student={})
    result, again = (run_method("curriculum-extraction", {"layers": [1, 2]}, task=task, budget_flops=5e7)
                     for _ in range(2))
    assert without_time(result.curve) == without_time(again.curve)
    assert result.status == "finished" and 0 < result.flops <= result.budget_flops
    assert isinstance(result.student, HFEncoder)
    assert [p.name for p in result.phases] == ["extract-layer-1", "extract-layer-2", "final-teacher"]
    assert all(steps > 0 for steps in result.phase_steps)
    assert result.phase_step_flops[0] < result.phase_step_flops[1]
