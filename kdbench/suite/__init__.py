"""Stage 1, the suite: the file's schema and reading, its expansion into runs, and run identity.

Nothing here trains: a suite is read, validated against the loaded plugins and
expanded into :class:`kdbench.suite.identity.Run` objects whose ids are hashes
of everything that determines their results.
"""

from kdbench._moved import package_attribute as _package_attribute


def __getattr__(name: str):
    """Names the kdbench 0.1 module ``kdbench.suite`` defined, with a DeprecationWarning naming where they are now."""
    return _package_attribute(__name__, name)
