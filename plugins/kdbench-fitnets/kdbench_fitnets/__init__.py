"""kdbench-fitnets: FitNets hint distillation as a kdbench method plugin.

kdbench finds this package through its entry point in group ``kdbench``
(see pyproject.toml) and calls the hook below to learn its methods.
"""

from kdbench import hookimpl

from kdbench_fitnets.method import FitNets, FitNetsParams

__version__ = "0.1.0"
__all__ = ["FitNets", "FitNetsParams", "__version__"]


@hookimpl
def kdbench_register_methods():
    return [FitNets]
