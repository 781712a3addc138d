"""The command line: a Typer app (:mod:`kdbench.cli.app`), a thin layer over the Python API
(:mod:`kdbench.commands`), with the plugin catalog and the method scaffold it prints and writes."""

from kdbench.cli.app import app, main

__all__ = ["app", "main"]

from kdbench._moved import package_attribute as _package_attribute


def __getattr__(name: str):
    """Names the kdbench 0.1 module ``kdbench.cli`` defined, with a DeprecationWarning naming where they are now."""
    return _package_attribute(__name__, name)
