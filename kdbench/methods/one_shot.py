"""One-shot distillation (Hinton et al. 2015): match the final teacher's outputs.

Params (all of :class:`kdbench.losses.DistillOptions`):
  ``temperature``            softmax temperature of teacher and student (default 1); 0 trains the
                             student with cross-entropy on the teacher's argmax (hard labels)
  ``label_weight``           weight of the true-label cross-entropy mixed in (default 0)
  ``divergence``             ``forward`` KL(teacher || student) (default) or ``reverse`` KL(student || teacher)
  ``temperature_schedule``   ``constant`` (default), ``linear`` or ``cosine`` from ``temperature`` to
  ``temperature_end``        the temperature at the end of the run, over the run's steps
  ``label_weight_schedule``  ``constant`` (default), ``linear`` or ``cosine`` from ``label_weight`` to
  ``label_weight_end``       the label weight at the end of the run
"""

from kdbench.api import Method
from kdbench.distill_options import DistillOptions
from kdbench.hookspecs import hookimpl
from kdbench.losses import final_teacher_phase


class OneShotParams(DistillOptions):
    """One-shot's params: the distillation loss's, nothing more."""


class OneShot(Method):
    """Soft cross-entropy (KL) to the final teacher at a temperature, optionally mixed with labels."""

    name = "one-shot"
    version = "1"
    Params = OneShotParams
    description = "distil from the final teacher only (Hinton et al. 2015)"

    def phases(self, ctx, params):
        return [final_teacher_phase(ctx, options=params)]


@hookimpl
def kdbench_register_methods():
    return [OneShot]
