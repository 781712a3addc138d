"""One-shot distillation (Hinton et al. 2015): match the final teacher's outputs."""

from pydantic import Field

from ..api import Method, Params
from ..hookspecs import hookimpl
from ..losses import final_teacher_phase


class OneShotParams(Params):
    temperature: float = Field(1.0, gt=0, description="softmax temperature of teacher and student")
    label_weight: float = Field(0.0, ge=0, le=1, description="weight of the true-label cross-entropy")


class OneShot(Method):
    """Soft cross-entropy (KL) to the final teacher at a temperature, optionally mixed with labels."""

    name = "one-shot"
    version = "1"
    Params = OneShotParams
    description = "distil from the final teacher only (Hinton et al. 2015)"

    def phases(self, ctx, params):
        return [final_teacher_phase(ctx, params.temperature, params.label_weight)]


@hookimpl
def kdbench_register_methods():
    return [OneShot]
