"""kdbench-zoo: the baselines a distillation paper compares against, as kdbench method plugins.

Three families, a module per method, each one short file of phases citing its paper:
``kdbench_zoo.logit`` (losses on the logits), ``kdbench_zoo.relation`` (features and the relations
between samples) and ``kdbench_zoo.transformer`` (attention and hidden states of transformer layers).
kdbench finds this package through its entry point in group ``kdbench`` and calls the hook below.
The zoo uses kdbench's public API only (``from kdbench import ...``), like any third-party plugin.
"""

from kdbench import hookimpl

from kdbench_zoo import logit, relation, transformer

__version__ = "0.1.0"
METHODS = [*logit.METHODS, *relation.METHODS, *transformer.METHODS]
__all__ = ["METHODS", "__version__"]


@hookimpl
def kdbench_register_methods():
    return list(METHODS)
