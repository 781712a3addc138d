"""Probabilistic context-free grammars: a small text format and a vectorized sampler.

Grammar file format (one rule per line)::

    # comments start with '#'; blank lines are ignored
    22 -> 21 20 | 20 19          # alternatives separated by '|'
    19 -> 16 17 18 [0.7] | 17 18 16 [0.3]

- Symbols are whitespace-separated names without ``|``, ``[``, ``]`` or ``#``
  (numbers or words). A symbol that appears on a left-hand side is a
  nonterminal; every other symbol is a terminal.
- The start symbol is the left-hand side of the first rule.
- An alternative may end with a weight in brackets; an alternative without one
  weighs 1. Weights are relative: they are normalised over all alternatives of
  the same left-hand side (a nonterminal may span several lines).
- No empty alternatives; every nonterminal must derive some terminal string.

Terminals become token ids ``1..n`` in sorted order (numerically when all are
integers, so cfg3b's terminals 1, 2, 3 keep their ids).

Sampling expands every nonterminal of a whole batch of sentential forms at
once, one tensor operation per derivation level, with random numbers drawn
only from the generator given, so it is reproducible and runs on any device.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from kdbench.errors import UserError

_WEIGHT = re.compile(r"^(.*?)\[\s*([^\]]+?)\s*\]\s*$")


@dataclass(frozen=True)
class Grammar:
    """A PCFG: start symbol, rules ``lhs -> [(rhs, probability), ...]`` and its terminals in id order."""

    start: str
    rules: dict[str, tuple[tuple[tuple[str, ...], float], ...]]
    terminals: tuple[str, ...]

    def length_bounds(self) -> tuple[float, float]:
        """Shortest and longest derivable string (the longest is ``inf`` for recursive grammars)."""
        return self._extreme(min, math.inf), self._extreme(max, 0.0)

    def expected_length(self) -> float:
        """Expected length of a sampled string (``inf`` where it does not converge)."""
        e = {t: 1.0 for t in self.terminals}
        e.update({n: 0.0 for n in self.rules})
        for _ in range(10_000):  # monotone fixed-point iteration from below
            new = {n: sum(p * sum(e[s] for s in rhs) for rhs, p in alts) for n, alts in self.rules.items()}
            done = all(abs(new[n] - e[n]) <= 1e-12 * max(1.0, new[n]) for n in self.rules)
            e.update(new)
            if done:
                return e[self.start]
            if e[self.start] > 1e12:
                break
        return math.inf

    def _extreme(self, pick, init: float) -> float:
        # Bellman-Ford style: converges within |nonterminals| + 1 rounds unless the grammar is recursive
        value = {t: 1.0 for t in self.terminals}
        value.update({n: init for n in self.rules})
        for _ in range(len(self.rules) + 2):
            new = {n: pick(sum(value[s] for s in rhs) for rhs, _ in alts) for n, alts in self.rules.items()}
            if all(new[n] == value[n] for n in self.rules):
                return value[self.start]
            value.update(new)
        return math.inf

    @cached_property
    def _tables(self):
        """Symbol ids (0 empty, 1..T terminals, then nonterminals), rhs table and cumulative probabilities."""
        ids = {t: i + 1 for i, t in enumerate(self.terminals)}
        ids.update({n: len(ids) + 1 + i for i, n in enumerate(self.rules)})
        n_symbols = len(ids) + 1
        width = max(len(rhs) for alts in self.rules.values() for rhs, _ in alts)
        n_alts = max(len(alts) for alts in self.rules.values())
        rhs = torch.zeros(n_symbols, n_alts, width, dtype=torch.long)
        cum = torch.full((n_symbols, n_alts), 2.0, dtype=torch.float64)
        count = torch.ones(n_symbols, dtype=torch.long)
        rhs[:, 0, 0] = torch.arange(n_symbols)  # empty and terminals rewrite to themselves
        cum[:, 0] = 1.0
        for name, alts in self.rules.items():
            s = ids[name]
            rhs[s, 0, 0] = 0
            count[s] = len(alts)
            total = 0.0
            for a, (symbols, p) in enumerate(alts):
                rhs[s, a, : len(symbols)] = torch.tensor([ids[x] for x in symbols])
                total += p
                cum[s, a] = total
        return rhs, cum.float(), count

    def sample(self, generator: torch.Generator, n: int, max_length: int = 4096, max_depth: int = 1000,
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` strings as token ids ``[n, L]`` (0-padded on the right) and their lengths.

        Strings that grow past ``max_length`` or are not finished after
        ``max_depth`` levels are rejected and redrawn (never for cfg3b, whose
        strings are bounded).
        """
        device = torch.device(device)
        rhs, cum, count = (t.to(device) for t in self._tables)
        n_terminals = len(self.terminals)
        start = len(self.terminals) + 1 + list(self.rules).index(self.start)
        kept: list[torch.Tensor] = []
        have = 0
        for _ in range(100):
            forms = torch.full((n - have, 1), start, dtype=torch.long, device=device)
            alive = torch.ones(n - have, dtype=torch.bool, device=device)
            for _ in range(max_depth):
                if not bool((forms > n_terminals).any()):
                    break
                u = torch.rand(forms.shape, generator=generator, device=device)
                choice = (u.unsqueeze(-1) >= cum[forms]).sum(-1).clamp(max=count[forms] - 1)
                out = rhs[forms, choice].flatten(1)
                keep = out != 0
                lengths = keep.sum(1)
                alive &= lengths <= max_length
                keep &= alive.unsqueeze(1)
                width = int(torch.where(alive, lengths, 1).max())
                # compact each row: kept symbols to their rank, the rest to a spare last column
                where = torch.where(keep, keep.cumsum(1) - 1, width)
                forms = torch.zeros(out.shape[0], width + 1, dtype=torch.long, device=device)
                forms = forms.scatter_(1, where, torch.where(keep, out, 0))[:, :width]
            alive &= ~(forms > n_terminals).any(1)
            kept.append(forms[alive])
            have += int(alive.sum())
            if have == n:
                break
        else:
            raise UserError(f"grammar with start symbol {self.start!r}: could not sample {n} strings of at most "
                            f"{max_length} terminals within {max_depth} derivation levels")
        width = max(k.shape[1] for k in kept)
        tokens = torch.cat([torch.nn.functional.pad(k, (0, width - k.shape[1])) for k in kept])
        return tokens, (tokens != 0).sum(1)


def parse_grammar(text: str, source: str = "<grammar>") -> Grammar:
    """Parse the format described in the module docstring; errors name ``source`` and the line."""
    rules: dict[str, list[tuple[tuple[str, ...], float]]] = {}
    used: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        if line.count("->") != 1:
            raise UserError(f"{where}: a rule is 'LHS -> a b c | d e [weight]', got {raw.strip()!r}")
        lhs, rhs_text = (part.strip() for part in line.split("->"))
        if not lhs or len(lhs.split()) != 1 or any(c in lhs for c in "|[]"):
            raise UserError(f"{where}: the left-hand side must be one symbol, got {lhs!r}")
        for alt in rhs_text.split("|"):
            weight = 1.0
            m = _WEIGHT.match(alt)
            if m:
                alt = m.group(1)
                try:
                    weight = float(m.group(2))
                except ValueError:
                    raise UserError(f"{where}: weight {m.group(2)!r} is not a number") from None
                if not (weight > 0 and math.isfinite(weight)):
                    raise UserError(f"{where}: weights must be positive, got {weight}")
            symbols = tuple(alt.split())
            if not symbols:
                raise UserError(f"{where}: empty alternative in {raw.strip()!r} (empty strings are not supported)")
            if any(c in s for s in symbols for c in "[]"):
                raise UserError(f"{where}: a weight goes at the end of an alternative, in brackets: {alt.strip()!r}")
            rules.setdefault(lhs, []).append((symbols, weight))
            used.update(symbols)
    if not rules:
        raise UserError(f"{source}: no rules (one per line: 'LHS -> a b c | d e')")
    terminals = sorted(used - set(rules), key=lambda s: (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s))
    if not terminals:
        raise UserError(f"{source}: no terminals (every symbol is a left-hand side)")
    normalised = {lhs: tuple((rhs, w / sum(x for _, x in alts)) for rhs, w in alts) for lhs, alts in rules.items()}
    grammar = Grammar(next(iter(rules)), normalised, tuple(terminals))
    _check_productive(grammar, source)
    return grammar


def _check_productive(grammar: Grammar, source: str) -> None:
    productive = set(grammar.terminals)
    changed = True
    while changed:
        changed = False
        for lhs, alts in grammar.rules.items():
            if lhs not in productive and any(all(s in productive for s in rhs) for rhs, _ in alts):
                productive.add(lhs)
                changed = True
    stuck = [n for n in grammar.rules if n not in productive]
    if stuck:
        raise UserError(f"{source}: nonterminals {stuck} never derive a string of terminals")


CFG3B = """\
# cfg3b (Allen-Zhu & Li, "Physics of Language Models, Part 1"): terminals 1 2 3,
# start symbol 22, every alternative with probability 1/2.
22 -> 21 20 | 20 19
19 -> 16 17 18 | 17 18 16
20 -> 17 16 18 | 16 17
21 -> 18 16 | 16 18 17
16 -> 15 13 | 13 15 14
17 -> 14 13 15 | 15 13 14
18 -> 15 14 13 | 14 13
13 -> 11 12 | 12 11
14 -> 11 10 12 | 10 11 12
15 -> 12 11 10 | 11 12 10
10 -> 7 9 8 | 9 8 7
11 -> 8 7 9 | 7 8 9
12 -> 8 9 7 | 9 7 8
7 -> 3 1 | 1 2 3
8 -> 3 2 | 3 1 2
9 -> 3 2 1 | 2 1
"""

#: Named grammars a task may ask for by name. "cfg3b-pd" is the copy in the public
#: progressive-distillation code, where 9 has the single rule 9 -> 3 2 1. "cfg3b-short" is
#: cfg3b below its top two levels: a new start symbol S -> 16 | 17 | 18 over cfg3b's own rules
#: for 16..7, so strings are 30-72 terminals (~53 on average) instead of 138-432: the CPU size
#: of pcfg-lm, where a model samples whole strings.
NAMED_GRAMMARS = {
    "cfg3b": CFG3B,
    "cfg3b-pd": CFG3B.replace("9 -> 3 2 1 | 2 1", "9 -> 3 2 1"),
    "cfg3b-short": "# cfg3b-short: cfg3b from its level-2 symbols down\nS -> 16 | 17 | 18\n"
                   + "\n".join(line for line in CFG3B.splitlines()
                                if line.split(" ->")[0] not in ("22", "19", "20", "21") and not line.startswith("#")),
}


def load_grammar(spec: str) -> Grammar:
    """A named grammar (``cfg3b``, ``cfg3b-pd``, ``cfg3b-short``) or a grammar file (relative paths: current directory)."""
    if spec in NAMED_GRAMMARS:
        return parse_grammar(NAMED_GRAMMARS[spec], spec)
    path = Path(spec)
    if not path.is_file():
        raise UserError(f"grammar {spec!r}: not a named grammar ({', '.join(NAMED_GRAMMARS)}) "
                        f"and no such file {path.resolve()}")
    return parse_grammar(path.read_text(), str(path))
