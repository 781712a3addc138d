"""Hugging Face models named by an MLM task's params: ``teacher_hf`` and ``student_hf``.

Each takes either

- a local folder written by ``save_pretrained`` (pretrained weights, loaded with
  :meth:`kdbench.models.HFEncoder.from_pretrained`; in a suite relative to the
  suite's folder, ``${ENV}`` allowed, and every file in it hashed into the run and
  teacher ids), or
- ``{type: bert|roberta|distilbert, config: {...}}``: a randomly initialised model
  of that type (:meth:`~kdbench.models.HFEncoder.from_config`), ``config`` holding
  fields of its config class (``BertConfig``: ``hidden_size``, ``num_hidden_layers``,
  ...); ``vocab_size`` defaults to the task's.

A pretrained teacher is given, not trained (see
:meth:`kdbench.api.TaskInstance.teacher_source`). Every model must share the
task's vocabulary. Naming one needs ``transformers`` (``pip install "kdbench[hf]"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from kdbench.api import Params
from kdbench.errors import UserError
from kdbench.inputs import PathParam
from kdbench.models.hf import HFEncoder, import_transformers


class HFModelConfig(Params):
    """A Hugging Face masked-LM model built from a config (random initialisation)."""

    type: Literal["bert", "roberta", "distilbert"] = Field(description="the model type")
    config: dict[str, Any] = Field({}, description="fields of the type's config class (BertConfig: hidden_size, "
                                                   "num_hidden_layers, ...); vocab_size defaults to the task's")


HFModel = Annotated[Optional[Union[str, HFModelConfig]], PathParam(when=lambda value: isinstance(value, str))]
HF_FIELDS = ("teacher_hf", "student_hf")


class HFModelParams(Params):
    """The params that name Hugging Face models (mixed into the MLM tasks' params).

    Left unset they are not written into a run's params, so run ids of suites that do
    not name one stay what they were before these params existed."""

    teacher_hf: HFModel = Field(
        None, description="the teacher as a Hugging Face model: a local save_pretrained folder (pretrained: used "
                          "as given, never trained) or {type: bert|roberta|distilbert, config: {...}} (trained from "
                          "a random init); default: the built-in encoder")
    student_hf: HFModel = Field(
        None, description="the student as a Hugging Face model: {type: ..., config: {...}} or a local "
                          "save_pretrained folder (its weights are the student's start); default: the built-in encoder")

    @model_serializer(mode="wrap")
    def _omit_unset_models(self, handler: SerializerFunctionWrapHandler) -> dict:
        data = handler(self)
        return {k: v for k, v in data.items() if not (k in HF_FIELDS and v is None)}

    def pretrained_teacher(self) -> Optional[str]:
        """The teacher's folder when ``teacher_hf`` names one (a pretrained teacher), else None."""
        return self.teacher_hf if isinstance(self.teacher_hf, str) else None

    def check_hf_installed(self) -> None:
        """Raise the install instruction (a UserError) if a model is named and transformers is missing."""
        if any(getattr(self, name) is not None for name in HF_FIELDS):
            import_transformers()


def build_hf_model(spec: Union[str, HFModelConfig], vocab_size: int, field: str) -> HFEncoder:
    """The model ``spec`` names (``field`` is the param, for errors), checked to fit ``vocab_size`` token ids."""
    if isinstance(spec, str):
        model = HFEncoder.from_pretrained(spec)
        if model.vocab_size != vocab_size:
            raise UserError(f"{field}: {spec} has a vocabulary of {model.vocab_size} tokens and this task's token "
                            f"ids number {vocab_size}: a pretrained model must share the task's vocabulary")
        return model
    config = dict(spec.config)
    if config.setdefault("vocab_size", vocab_size) != vocab_size:
        raise UserError(f"{field}.config.vocab_size: {config['vocab_size']}, but this task's token ids number "
                        f"{vocab_size}; leave it out to take the task's")
    return HFEncoder.from_config(spec.type, config)


@dataclass(frozen=True)
class PretrainedTokenizer:
    """A pretrained model folder's tokenizer: the ``tokenizers`` JSON of its fast tokenizer, its
    special tokens by role, and the vocabulary size of the model in the folder."""

    json: str
    special_tokens: dict[str, str]
    model_vocab_size: int


def load_pretrained_tokenizer(folder: str, field: str = "teacher_hf") -> PretrainedTokenizer:
    """The tokenizer saved in ``folder`` (``tokenizer.save_pretrained``), read with ``AutoTokenizer``
    from local files only."""
    transformers = import_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{field}: {folder} has no tokenizer and model config this task can use (save them there "
                        f"with save_pretrained): {' '.join(str(exc).split())[:300]}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"{field}: {folder}: the tokenizer must have a fast (tokenizers) version")
    roles = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
    special = {role: getattr(tokenizer, role) for role in roles if isinstance(getattr(tokenizer, role, None), str)}
    missing = [role for role in roles if role not in special]
    if missing:
        raise UserError(f"{field}: {folder}: the tokenizer has no {', '.join(missing)}; masked language modelling "
                        f"needs {', '.join(roles)}")
    return PretrainedTokenizer(tokenizer.backend_tokenizer.to_str(), special, config.vocab_size)
