"""Measured FLOPs per step of every logit method equal an analytic count, on the MLP and on the encoder.

FlopCounterMode counts matmuls (linear layers, attention products); softmaxes, sums, sorts and other
elementwise work are not counted. So a method whose own terms are elementwise (DKD, DIST, logit-std,
global-temperature CTKD, the divergences) costs exactly one-shot's step: the student's forward and
backward plus the teacher's forward. What a method adds in matmuls is counted on top: CTKD's
instance-wise temperature MLP, TAKD's assistant.
"""

import pytest

from kdbench.testing import TinyTask, run_method, tiny_encoder_task

from kdbench_zoo.logit import METHODS

B, CLASSES = 16, 4  # the tiny tasks' student batch; levels 2: four classes
MLP_N, MLP_STUDENT, MLP_TEACHER = 10, 16, 64
MLP4 = TinyTask(params={"n": MLP_N, "k": 2, "levels": 2, "teacher_width": MLP_TEACHER,
                        "student_width": MLP_STUDENT, "eval_size": 256})
TOKENS, ENC_STUDENT, ENC_TEACHER, ENC_LAYERS = 6, 8, 16, 2


def encoder4() -> TinyTask:
    """kdbench's tiny encoder task with four classes."""
    task = tiny_encoder_task()
    task.params = {**task.params, "levels": 2}
    return task


def mlp_flops(width: int, backward: bool = True) -> int:
    """One-hidden-layer MLP n -> width -> 4 on a batch: forward 2 per multiply-add of each matmul; backward
    the weight gradients of both layers and the input gradient of the head (the data needs none)."""
    forward = 2 * B * (MLP_N * width + width * CLASSES)
    return forward + (2 * B * MLP_N * width + 2 * 2 * B * width * CLASSES if backward else 0)


def encoder_flops(width: int, layers: int = ENC_LAYERS, backward: bool = True) -> int:
    """The parity encoder (readout at the last position, MLP ratio 4): per block and token QKV, output
    projection, MLP, and the two attention products; the head on one position per example. Backward doubles
    every matmul (the embeddings train, so even block 1 needs its input gradient)."""
    d = width
    per_token = 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * 4 * d + 2 * 2 * TOKENS * d
    forward = layers * B * TOKENS * per_token + 2 * B * d * CLASSES
    return 3 * forward if backward else forward


ONE_SHOT = {"parity-mlp": mlp_flops(MLP_STUDENT) + mlp_flops(MLP_TEACHER, backward=False),
            "parity-transformer": encoder_flops(ENC_STUDENT) + encoder_flops(ENC_TEACHER, backward=False)}
TASKS = {"parity-mlp": MLP4, "parity-transformer": encoder4()}
ELEMENTWISE = [m for m in METHODS if m.name != "takd"]


BUDGET = {"parity-mlp": 5e5, "parity-transformer": 1.5e7}  # a few steps of every phase: the cost is per step


def measured(method, params=None, task="parity-mlp") -> list[int]:
    """Measured FLOPs of one step of each of ``method``'s phases (an untrained teacher: only shapes matter)."""
    return run_method(method, params, task=TASKS[task], teacher="probe", budget_flops=BUDGET[task]).phase_step_flops


@pytest.mark.parametrize("task", sorted(TASKS))
def test_one_shot_matches_the_analytic_count(task):
    assert measured("one-shot", task=task) == [ONE_SHOT[task]]


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("method", ELEMENTWISE, ids=lambda m: m.name)
def test_elementwise_logit_losses_cost_one_shot_exactly(method, task):
    assert measured(method, task=task) == [ONE_SHOT[task]]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_ctkd_instance_module_is_charged_its_mlp(task):
    """The MLP 2C -> h -> 1 on B rows: forward both layers; backward the weight gradients of both and the
    input gradient of the second (its input, the detached logits, needs none)."""
    h = 8
    forward = 2 * B * (2 * CLASSES * h + h)
    backward = 2 * B * h + 2 * B * h + 2 * B * 2 * CLASSES * h
    assert measured("ctkd", {"module": "instance", "hidden": h}, task=task) == [ONE_SHOT[task] + forward + backward]


def test_takd_charges_the_assistant_training_and_its_forward_on_the_mlp():
    """Assistant width 16 + (64 - 16) / 2 = 40: its phase trains it (forward + backward) under the teacher's
    forward; the student's phase reads its forward."""
    assistant, student, teacher = 40, MLP_STUDENT, MLP_TEACHER
    assert measured("takd") == [mlp_flops(assistant) + mlp_flops(teacher, backward=False),
                                mlp_flops(student) + mlp_flops(assistant, backward=False)]


def test_takd_charges_the_assistant_training_and_its_forward_on_the_encoder():
    """Assistant width 8 + (16 - 8) / 2 = 12 (a multiple of the student's 2 heads), 2 blocks."""
    assert measured("takd", task="parity-transformer") == [
        encoder_flops(12) + encoder_flops(ENC_TEACHER, backward=False),
        encoder_flops(ENC_STUDENT) + encoder_flops(12, backward=False)]


def test_takd_budget_share_and_info(run_method):
    """The assistant phase gets its share of the budget; its info records the assistant; both phases ran."""
    budget = 2e7
    result = run_method("takd", {"assistant_share": 0.4}, task=MLP4, teacher="probe", budget_flops=budget)
    steps, flops = result.phase_steps, result.phase_step_flops
    assert 0.4 * budget - flops[0] < steps[0] * flops[0] <= 0.4 * budget
    assert steps[1] > 0 and result.flops <= budget
    assert result.phases[0].info == {"assistant": {"n_in": MLP_N, "hidden": [40], "n_out": CLASSES},
                                     "assistant_parameters": 10 * 40 + 40 + 40 * 4 + 4,
                                     "student_parameters": 10 * 16 + 16 + 16 * 4 + 4}


PCFG = TinyTask(name="pcfg-bert", params={"seq_len": 24, "teacher_layers": 2, "teacher_heads": 2, "teacher_width": 16,
                                          "student_layers": 1, "student_heads": 2, "student_width": 8,
                                          "eval_size": 8},
                teacher={"optimizer": "adam", "lr": 0.003, "batch_size": 8, "steps": 10},
                student={"optimizer": "adam", "lr": 0.003, "batch_size": 8})


def test_every_method_runs_on_an_mlm_task_at_one_shots_cost(run_method):
    """On MLM the rows are the masked positions and the classes the vocabulary: every method runs there, and
    the elementwise ones cost one-shot's step (the same masked positions: the same probe batch)."""
    one_shot = run_method("one-shot", task=PCFG, teacher="probe", budget_flops=3e7).phase_step_flops
    for method in METHODS:
        result = run_method(method, task=PCFG, teacher="probe", budget_flops=3e7)
        assert result.status == "finished" and all(result.phase_steps), method.name
        if method.name != "takd":
            assert result.phase_step_flops == one_shot, method.name
