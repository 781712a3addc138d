"""Does a grammar derive a string? An exact recognizer for the grammars of :mod:`kdbench.tasks.grammar`.

pcfg-lm scores a language model by the fraction of its sampled strings that the grammar
accepts; this module answers that question exactly, for any grammar file the format allows
(alternatives of any length, unit rules, recursion).

Method: top-down recognition with memoisation over (symbol, span), i.e. CYK without the
conversion to Chomsky normal form. Every symbol's shortest and longest derivable string
bound the split points tried, which keeps the work near-linear on cfg3b's layered rules
(a 276-terminal cfg3b string takes a few milliseconds). Unit rules (``A -> B``) are folded
into a closure first, so a unit cycle cannot recurse forever; every other alternative has
at least two symbols or is one terminal, so each recursive call works on a shorter span.
"""

from __future__ import annotations

import math
import sys
from functools import cached_property
from typing import Sequence

from kdbench.tasks.grammar import Grammar


def symbol_length_bounds(grammar: Grammar) -> dict[str, tuple[float, float]]:
    """Every symbol's shortest and longest derivable string (``inf`` where unbounded)."""
    lo = {t: 1.0 for t in grammar.terminals} | {n: math.inf for n in grammar.rules}
    hi = {t: 1.0 for t in grammar.terminals} | {n: 0.0 for n in grammar.rules}
    for _ in range(len(grammar.rules) + 2):
        new_lo = {n: min(sum(lo[s] for s in rhs) for rhs, _ in alts) for n, alts in grammar.rules.items()}
        if new_lo == {n: lo[n] for n in grammar.rules}:
            break
        lo.update(new_lo)
    for _ in range(len(grammar.rules) + 2):  # converges within |nonterminals| + 1 rounds unless recursive
        new_hi = {n: max(sum(hi[s] for s in rhs) for rhs, _ in alts) for n, alts in grammar.rules.items()}
        grow = {n for n in grammar.rules if new_hi[n] != hi[n]}
        hi.update(new_hi)
        if not grow:
            break
    else:  # still growing: those symbols, and every symbol that can reach one, are unbounded
        changed = True
        while changed:
            changed = False
            for n, alts in grammar.rules.items():
                if n not in grow and any(s in grow for rhs, _ in alts for s in rhs):
                    grow.add(n)
                    changed = True
        hi.update({n: math.inf for n in grow})
    return {s: (lo[s], hi[s]) for s in lo}


class Acceptor:
    """``Acceptor(grammar).accepts(ids)``: whether ``grammar`` derives the string of terminal ids
    ``ids`` (ids ``1..T`` as the grammar's sampler numbers its terminals)."""

    def __init__(self, grammar: Grammar):
        self.grammar = grammar
        self.bounds = symbol_length_bounds(grammar)
        self.terminal_id = {t: i for i, t in enumerate(grammar.terminals, start=1)}

    @cached_property
    def _alternatives(self) -> dict[str, list[tuple[tuple[str, ...], list[tuple[float, float]]]]]:
        """Per nonterminal: the non-unit alternatives of every symbol its unit rules reach, each with
        the length bounds of its suffixes (``rhs[k+1:]``), for pruning split points."""
        rules = self.grammar.rules
        unit = {n: {rhs[0] for rhs, _ in alts if len(rhs) == 1 and rhs[0] in rules} for n, alts in rules.items()}
        out = {}
        for n in rules:
            closure, todo = {n}, [n]
            while todo:
                for m in unit[todo.pop()] - closure:
                    closure.add(m)
                    todo.append(m)
            alts = []
            for m in sorted(closure):
                for rhs, _ in rules[m]:
                    if len(rhs) == 1 and rhs[0] in rules:
                        continue
                    rest = [(sum(self.bounds[s][0] for s in rhs[k + 1:]), sum(self.bounds[s][1] for s in rhs[k + 1:]))
                            for k in range(len(rhs))]
                    alts.append((rhs, rest))
            out[n] = alts
        return out

    def accepts(self, ids: Sequence[int]) -> bool:
        """Whether the start symbol derives exactly ``ids``."""
        w = [int(i) for i in ids]
        if not w:
            return False
        alternatives, bounds, tid = self._alternatives, self.bounds, self.terminal_id
        memo: dict[tuple[str, int, int], bool] = {}

        def derives(sym: str, i: int, j: int) -> bool:
            if sym in tid:
                return j == i + 1 and w[i] == tid[sym]
            lo, hi = bounds[sym]
            if not lo <= j - i <= hi:
                return False
            key = (sym, i, j)
            if key not in memo:
                memo[key] = any(rest_derives(rhs, rest, 0, i, j) for rhs, rest in alternatives[sym])
            return memo[key]

        def rest_derives(rhs: tuple[str, ...], rest: list, k: int, i: int, j: int) -> bool:
            if k == len(rhs) - 1:
                return derives(rhs[k], i, j)
            first_lo, first_hi = bounds[rhs[k]]
            rest_lo, rest_hi = rest[k]
            start = int(max(i + first_lo, j - rest_hi))
            stop = int(min(i + first_hi, j - rest_lo))
            return any(derives(rhs[k], i, m) and rest_derives(rhs, rest, k + 1, m, j) for m in range(start, stop + 1))

        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 4 * len(w) + 1000))
        try:
            return derives(self.grammar.start, 0, len(w))
        finally:
            sys.setrecursionlimit(limit)
