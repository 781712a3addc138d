"""Stage 3, tuning: the sweep that chooses each method's settings on dev seeds, its trial
records, and the tables and sensitivity that report it."""

from kdbench._moved import package_attribute as _package_attribute


def __getattr__(name: str):
    """Names the kdbench 0.1 module ``kdbench.tuning`` defined, with a DeprecationWarning naming where they are now."""
    return _package_attribute(__name__, name)
