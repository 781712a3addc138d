"""Stage 4, results: loading a results folder, aggregation into leaderboards, rendering
(markdown, LaTeX, CSV, JSON), figures, the report folder and model export.

``load_results(path)`` and :class:`Results` are the entry points (also as
``kdbench.load_results``).
"""

from kdbench.results.folder import Results, load_results

__all__ = ["Results", "load_results"]

from kdbench._moved import package_attribute as _package_attribute


def __getattr__(name: str):
    """Names the kdbench 0.1 module ``kdbench.results`` defined, with a DeprecationWarning naming where they are now."""
    return _package_attribute(__name__, name)
