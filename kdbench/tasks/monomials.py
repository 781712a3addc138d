"""Probing a parity model: the correlation of its output with each low-degree monomial of the support.

The progressive-distillation papers' evidence for the implicit curriculum: before
a network learns the degree-k parity over the support, its output correlates with
low-degree monomials of the support (products of a few support coordinates), and
the teacher's intermediate checkpoints carry that signal. For the inputs x of an
evaluation set (coordinates in {-1, +1}) and a model's output margin
``m(x) = logit_1(x) - logit_0(x)``, the probe reports, for each monomial
``chi_S(x) = prod_{i in S} x_i`` with S a subset of the support of size at most
``degree`` (and the full support, the parity itself), the Pearson correlation of m
and chi_S over the set: 1 when the margin is an increasing affine function of chi_S,
about 0 (within ~1/sqrt(set size)) when it is unrelated, since distinct monomials
are orthogonal under the uniform distribution.
"""

from __future__ import annotations

from itertools import combinations

import torch

PREFIX = "corr:"  # curve columns: "corr:x0x3" is the correlation with x_0 * x_3 (0-based coordinates)


def support_monomials(support: list[int], degree: int) -> list[tuple[int, ...]]:
    """Every subset of ``support`` of size 1..``degree``, smallest first, then the whole support
    (the parity) if ``degree`` is below its size."""
    k = len(support)
    monomials = [s for d in range(1, min(degree, k) + 1) for s in combinations(sorted(support), d)]
    return monomials if degree >= k else monomials + [tuple(sorted(support))]


def monomial_name(coordinates: tuple[int, ...]) -> str:
    """``corr:x0x3`` for the monomial x_0 * x_3."""
    return PREFIX + "".join(f"x{i}" for i in coordinates)


def monomial_degree(name: str) -> int:
    """The degree of the monomial a ``corr:`` column is named after."""
    return name.count("x")


def correlations(bits: torch.Tensor, margin: torch.Tensor, monomials: list[tuple[int, ...]]) -> dict[str, float]:
    """``{corr:<monomial>: Pearson correlation of margin and the monomial over the rows of bits}``
    (``bits`` in {-1, +1}, ``[rows, n]``; ``margin`` ``[rows]``); 0 where either is constant."""
    m = margin.double() - margin.double().mean()
    out = {}
    for coords in monomials:
        chi = bits[:, list(coords)].double().prod(dim=1)
        chi = chi - chi.mean()
        norm = float((m.square().sum() * chi.square().sum()).sqrt())
        out[monomial_name(coords)] = float((m * chi).sum()) / norm if norm > 0 else 0.0
    return out


def output_margin(logits: torch.Tensor) -> torch.Tensor:
    """A two-class model's output margin: logit of class 1 (parity +1) minus logit of class 0."""
    return logits[:, 1] - logits[:, 0]
