"""The check every encoder task's params share: a model's width splits evenly over its heads."""

from __future__ import annotations

from pydantic import model_validator

from kdbench.api import Params


class EncoderSizes(Params):
    """Mixed into an encoder task's params (first among its bases, so that the bases' own checks
    run before it), which declare ``teacher_width``, ``teacher_heads``, ``student_width`` and
    ``student_heads``: each width must be a multiple of its heads (head dimension = width / heads)."""

    @model_validator(mode="after")
    def _encoder_sizes(self):
        for who in ("teacher", "student"):
            width, heads = getattr(self, f"{who}_width"), getattr(self, f"{who}_heads")
            if width % heads:
                raise ValueError(f"{who}_width ({width}) must be a multiple of {who}_heads ({heads})")
        return self
