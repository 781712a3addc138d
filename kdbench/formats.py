"""Numbers and text as every table kdbench writes shows them: FLOPs, bytes, LaTeX escapes."""

from __future__ import annotations

import math
from typing import Optional

import pandas as pd


def is_missing(x) -> bool:
    """True for None, pandas NA and NaN: a cell with no number."""
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def fmt_flops(x: Optional[float]) -> str:
    """FLOPs with three significant digits; ``-`` for none."""
    return "-" if is_missing(x) else f"{x:.3g}"


def fmt_bytes(b: float) -> str:
    """Bytes in B, kB, MB or GB."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= size:
            return f"{b / size:.2f} {unit}"
    return f"{b:.0f} B"


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in prose (captions, notes)."""
    repl = {"\\": r"\textbackslash{}", "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
            "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(repl.get(ch, ch) for ch in str(text))
