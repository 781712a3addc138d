"""Hugging Face models named by a task's params: ``teacher_hf`` and ``student_hf``.

The MLM tasks (pcfg-bert, wikipedia-bert) take masked-LM encoders (bert, roberta,
distilbert: :class:`kdbench.models.HFEncoder`); the causal LM tasks (pcfg-lm, lm) take
GPT-2 decoders (gpt2: :class:`kdbench.models.HFDecoder`). A model of the other kind is
refused, naming the field and the types allowed. Each takes either

- a local folder written by ``save_pretrained`` (pretrained weights, loaded with
  :meth:`kdbench.models.HFEncoder.from_pretrained`; in a suite relative to the
  suite's folder, ``${ENV}`` allowed, and every file in it hashed into the run and
  teacher ids), or
- ``{type: bert|roberta|distilbert|gpt2, config: {...}}``: a randomly initialised model
  of that type (:meth:`~kdbench.models.HFEncoder.from_config`,
  :meth:`~kdbench.models.HFDecoder.from_config`), ``config`` holding fields of its
  config class (``BertConfig``: ``hidden_size``, ``num_hidden_layers``, ...;
  ``GPT2Config``: ``n_layer``, ``n_embd``, ``n_head``, ...); ``vocab_size`` defaults to
  the task's, and a gpt2's ``n_positions`` to the task's ``seq_len``.

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
from kdbench.models.hf import ARCHITECTURES, HFEncoder, import_transformers
from kdbench.models.hf_decoder import DECODER_TYPES, HFDecoder


class HFModelConfig(Params):
    """A Hugging Face model built from a config (random initialisation): a masked-LM encoder for the
    MLM tasks, a GPT-2 decoder for the causal LM tasks."""

    type: Literal["bert", "roberta", "distilbert", "gpt2"] = Field(
        description="the model type: bert, roberta, distilbert (MLM tasks) or gpt2 (causal LM tasks)")
    config: dict[str, Any] = Field({}, description="fields of the type's config class (BertConfig: hidden_size, "
                                                   "num_hidden_layers, ...; GPT2Config: n_layer, n_embd, n_head, "
                                                   "...); vocab_size defaults to the task's, a gpt2's n_positions "
                                                   "to the task's seq_len")


HFModel = Annotated[Optional[Union[str, HFModelConfig]], PathParam(when=lambda value: isinstance(value, str))]
HF_FIELDS = ("teacher_hf", "student_hf")


class HFModelParams(Params):
    """The params that name Hugging Face models (mixed into the MLM tasks' params).

    Left unset they are not written into a run's params, so run ids of suites that do
    not name one stay what they were before these params existed."""

    teacher_hf: HFModel = Field(
        None, description="the teacher as a Hugging Face model: a local save_pretrained folder (pretrained: used "
                          "as given, never trained) or {type: bert|roberta|distilbert|gpt2, config: {...}} (trained "
                          "from a random init; gpt2 in the causal LM tasks, the others in the MLM tasks); default: "
                          "the built-in encoder")
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


def build_hf_model(spec: Union[str, HFModelConfig], vocab_size: int, field: str, causal: bool = False,
                   seq_len: Optional[int] = None) -> Union[HFEncoder, HFDecoder]:
    """The model ``spec`` names (``field`` is the param, for errors), checked to fit ``vocab_size`` token
    ids: with ``causal`` a GPT-2 decoder (:class:`HFDecoder`, at least ``seq_len`` positions, its
    ``n_positions`` defaulting to ``seq_len``), else a masked-LM encoder (:class:`HFEncoder`)."""
    if isinstance(spec, str):
        check_model_type(pretrained_model_type(spec, field), causal, field, f"{spec} holds model_type")
        model = (HFDecoder if causal else HFEncoder).from_pretrained(spec)
        if model.vocab_size != vocab_size:
            raise UserError(f"{field}: {spec} has a vocabulary of {model.vocab_size} tokens and this task's token "
                            f"ids number {vocab_size}: a pretrained model must share the task's vocabulary")
    else:
        check_model_type(spec.type, causal, field, "type")
        config = dict(spec.config)
        if config.setdefault("vocab_size", vocab_size) != vocab_size:
            raise UserError(f"{field}.config.vocab_size: {config['vocab_size']}, but this task's token ids number "
                            f"{vocab_size}; leave it out to take the task's")
        if not causal:
            return HFEncoder.from_config(spec.type, config)
        if seq_len is not None and "max_position_embeddings" not in config:
            config.setdefault("n_positions", seq_len)
        model = HFDecoder.from_config(config)
    if causal and seq_len is not None and model.max_len < seq_len:
        raise UserError(f"{field}: the model has {model.max_len} positions (n_positions) and this task's rows "
                        f"{seq_len}; give it at least {seq_len}" + ("" if isinstance(spec, str) else
                                                                    " (or leave n_positions out)"))
    return model


def check_model_type(model_type: str, causal: bool, field: str, what: str) -> None:
    """Refuse a model type of the wrong kind for the task (a decoder in an MLM task, an encoder in a
    causal LM task), naming ``field`` and the allowed types; ``what`` says where the type comes from."""
    allowed = DECODER_TYPES if causal else tuple(ARCHITECTURES)
    if model_type not in allowed:
        task = "causal language modelling (a decoder)" if causal else "masked language modelling (an encoder)"
        raise UserError(f"{field}: {what} {model_type}, but this task does {task}; allowed types: "
                        f"{', '.join(allowed)}")


def pretrained_model_type(folder: str, field: str) -> str:
    """The ``model_type`` of the Hugging Face config in the local folder ``folder``."""
    transformers = import_transformers()
    try:
        return transformers.AutoConfig.from_pretrained(folder, local_files_only=True).model_type
    except (OSError, ValueError) as e:
        raise UserError(f"{field}: {folder}: no Hugging Face config in this folder (save_pretrained writes "
                        f"one): {e}") from e


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
