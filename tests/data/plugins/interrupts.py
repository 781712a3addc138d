"""A method that sends this process Ctrl-C once, at a given run: for the resume tests of tuning sweeps.

``KDBENCH_TEST_INTERRUPT`` names a file holding a count; every run of this method that reaches
student step 3 decrements it, and the run that takes it from 1 to 0 sends SIGINT to its own
process (deterministic: the order runs reach step 3 in one process is the order they run in).
Without the variable it is an ordinary labels method with a ``knob`` that does nothing.
"""

import os
import signal
from pathlib import Path

import torch.nn.functional as F

from kdbench import Method, Params, Phase, hookimpl, logits


class InterruptParams(Params):
    knob: float = 1.0  # searched by the tests; scales the loss


class Interrupts(Method):
    """Cross-entropy on the labels; interrupts its process once (see the module docstring)."""

    name, version, Params, needs_teacher = "interrupts", "1", InterruptParams, False

    def phases(self, ctx, params):
        def loss(batch):
            counter = os.environ.get("KDBENCH_TEST_INTERRUPT")
            if counter and ctx.clock.step == 3:
                left = int(Path(counter).read_text())
                Path(counter).write_text(str(left - 1))
                if left == 1:
                    os.kill(os.getpid(), signal.SIGINT)
            return params.knob * F.cross_entropy(logits(ctx.student, batch), batch.labels)

        return [Phase("labels", loss=loss)]


@hookimpl
def kdbench_register_methods():
    return [Interrupts]
