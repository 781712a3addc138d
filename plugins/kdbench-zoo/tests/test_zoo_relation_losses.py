"""The relation losses against hand computations on tiny inputs (plain torch, loops over pairs and
triplets), and the properties their papers give them."""

import math

import pytest
import torch

from kdbench_zoo.relation.crd import ContrastBank, nce_loss
from kdbench_zoo.relation.features import samples
from kdbench_zoo.relation.pkt import pkt_loss
from kdbench_zoo.relation.rkd import angle_loss, distance_loss
from kdbench_zoo.relation.sp import sp_loss

S = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # a 3-4-5 triangle
T = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])


def huber(x: float) -> float:
    return 0.5 * x * x if abs(x) <= 1 else abs(x) - 0.5


def norm(v) -> float:
    return math.sqrt(sum(float(a) ** 2 for a in v))


def test_rkd_distance_normalises_by_the_mean_distance_of_distinct_pairs():
    n = 3
    ds = [[norm(S[i] - S[j]) for j in range(n)] for i in range(n)]  # 3, 4, 5
    dt = [[norm(T[i] - T[j]) for j in range(n)] for i in range(n)]
    mu_s = sum(ds[i][j] for i in range(n) for j in range(n) if i != j) / 6  # (3 + 4 + 5) * 2 / 6 = 4
    mu_t = sum(dt[i][j] for i in range(n) for j in range(n) if i != j) / 6
    assert mu_s == pytest.approx(4.0)
    hand = sum(huber(ds[i][j] / mu_s - dt[i][j] / mu_t) for i in range(n) for j in range(n)) / 9
    assert distance_loss(S, T).item() == pytest.approx(hand, rel=1e-5)


def test_rkd_distance_is_scale_free_and_zero_for_a_similar_configuration():
    assert distance_loss(S, 10 * S).item() == pytest.approx(0.0, abs=1e-6)  # psi_D divides the scale out
    assert distance_loss(S, T).item() == pytest.approx(distance_loss(S, 7 * T).item(), rel=1e-5)
    assert distance_loss(S, T).item() > 0


def test_rkd_angle_is_the_cosine_at_the_middle_vertex():
    n = 3

    def cosines(e):
        out = {}
        for j in range(n):
            for i in range(n):
                for k in range(n):
                    if i == j or k == j:
                        out[j, i, k] = 0.0  # degenerate: a zero direction
                    else:
                        a, b = e[i] - e[j], e[k] - e[j]
                        out[j, i, k] = float((a * b).sum()) / (norm(a) * norm(b))
        return out

    cs, ct = cosines(S), cosines(T)
    assert cs[0, 1, 2] == pytest.approx(0.0, abs=1e-7)  # the right angle of the 3-4-5 triangle
    hand = sum(huber(cs[key] - ct[key]) for key in cs) / 27
    assert angle_loss(S, T).item() == pytest.approx(hand, rel=1e-5)
    assert angle_loss(S, 3 * S + 1).item() == pytest.approx(0.0, abs=1e-6)  # angles ignore scale and shift


def test_pkt_is_the_kl_of_cosine_kernel_conditionals_over_the_other_samples():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.5]])
    t = torch.tensor([[1.0, 0.2, 0.0], [0.5, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    n = len(s)

    def conditionals(e):
        k = [[(float((e[a] * e[b]).sum()) / (norm(e[a]) * norm(e[b])) + 1) / 2 for b in range(n)] for a in range(n)]
        return [[k[j][i] / sum(k[j][m] for m in range(n) if m != j) if i != j else 0.0 for i in range(n)]
                for j in range(n)]

    p, q = conditionals(t), conditionals(s)
    assert all(sum(row) == pytest.approx(1.0) for row in p)
    hand = sum(p[j][i] * math.log((p[j][i] + 1e-7) / (q[j][i] + 1e-7))
               for j in range(n) for i in range(n) if i != j) / (n * (n - 1))
    assert pkt_loss(s, t).item() == pytest.approx(hand, rel=1e-4)
    assert pkt_loss(t[:, :2], t[:, :2]).item() == pytest.approx(0.0, abs=1e-7)


def test_sp_is_the_squared_frobenius_distance_of_row_normalised_grams_over_b_squared():
    b = len(S)

    def gram(e):
        g = [[float((e[i] * e[j]).sum()) for j in range(b)] for i in range(b)]
        return [[g[i][j] / math.sqrt(sum(x * x for x in g[i])) for j in range(b)] for i in range(b)]

    gs, gt = gram(S + 1), gram(T)  # S + 1: no zero row
    hand = sum((gt[i][j] - gs[i][j]) ** 2 for i in range(b) for j in range(b)) / b ** 2
    assert sp_loss(S + 1, T).item() == pytest.approx(hand, rel=1e-5)
    assert sp_loss(T, 5 * T).item() == pytest.approx(0.0, abs=1e-7)  # row normalisation divides the scale out


def test_crd_nce_with_z_from_the_first_batch():
    g = torch.Generator().manual_seed(0)
    bank = ContrastBank(size=5, dim=3, generator=g, device=torch.device("cpu"))
    anchor = torch.nn.functional.normalize(torch.randn(2, 3, generator=g), dim=1)
    positive = torch.nn.functional.normalize(torch.randn(2, 3, generator=g), dim=1)
    queue, tau, n = bank.queues[1], 0.07, 5
    e_pos = [math.exp(float((anchor[b] * positive[b]).sum()) / tau) for b in range(2)]
    e_neg = [[math.exp(float((anchor[b] * queue[k]).sum()) / tau) for k in range(n)] for b in range(2)]
    z = (sum(e_pos) + sum(sum(row) for row in e_neg)) / (2 * (n + 1))  # mean over the first batch's scores
    hand = -(sum(math.log(e / (e + n * z)) for e in e_pos)
             + sum(math.log(1 - e / (e + n * z)) for row in e_neg for e in row)) / 2
    assert nce_loss(anchor, positive, queue, tau, bank, 1).item() == pytest.approx(hand, rel=1e-4)
    # Z stays what the first batch gave: a second call with other scores uses it
    again = nce_loss(anchor, -positive, queue, tau, bank, 1).item()
    e_pos2 = [math.exp(float((anchor[b] * -positive[b]).sum()) / tau) for b in range(2)]
    hand2 = -(sum(math.log(e / (e + n * z)) for e in e_pos2)
              + sum(math.log(1 - e / (e + n * z)) for row in e_neg for e in row)) / 2
    assert again == pytest.approx(hand2, rel=1e-4)


def test_crd_bank_is_a_fifo_queue_reset_to_its_first_draw():
    bank = ContrastBank(size=4, dim=2, generator=torch.Generator().manual_seed(1), device=torch.device("cpu"))
    first = bank.initial.clone()
    for step in range(3):  # 3 batches of 3: the queue holds the last 4 embeddings, the oldest overwritten first
        batch = torch.full((3, 2), float(step))
        bank.push(batch, -batch)
    assert bank.queues[0, :, 0].tolist() == [2.0, 1.0, 2.0, 2.0]  # slots 0..3 after writes at 0-2, 3-1(wrap), 2-0
    assert bank.queues[1, :, 0].tolist() == [-2.0, -1.0, -2.0, -2.0]
    bank.reset()
    assert torch.equal(bank.queues, first) and bank.pointer == 0 and bank.log_z == [None, None]


def test_samples_of_token_models():
    h = torch.arange(2 * 3 * 2, dtype=torch.float).view(2, 3, 2)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    assert samples(h, None, "last").tolist() == [[4.0, 5.0], [10.0, 11.0]]
    assert samples(h, None, "mean").tolist() == [[2.0, 3.0], [8.0, 9.0]]
    assert samples(h, None, "flatten").shape == (2, 6)
    assert samples(h, mask, "masked").tolist() == [[0.0, 1.0], [4.0, 5.0], [10.0, 11.0]]
