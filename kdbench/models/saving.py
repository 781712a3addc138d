"""Models as files: what rebuilds a model (its *spec*), and the exported folder a user loads.

A spec is JSON data naming a model's class and what builds it:

- built-in models: ``{"class": "kdbench.models.MLP", "args": {...}}``, the model's
  ``config`` (its constructor arguments), so ``MLP(**spec["args"])`` builds it;
- Hugging Face models: ``{"class": "kdbench.models.HFEncoder", "hf_config": {...}}``
  (masked-LM encoders) or ``"kdbench.models.HFDecoder"`` (GPT-2 causal LMs),
  ``transformers``' own ``config.to_dict()`` (``model_type`` inside), so
  ``AutoConfig.for_model(**hf_config)`` rebuilds the config ``save_pretrained`` writes;
- any other model: its class's dotted name and ``"args"`` from its ``config``
  attribute when it has one (else null). Such a spec is recorded, never imported.

An exported folder (``kdbench export``, :func:`write_exported`) is, for a Hugging Face
model, a ``save_pretrained`` folder (plus the task's tokenizer as a
``PreTrainedTokenizerFast``), and otherwise ``model.safetensors`` with ``config.json``
(the spec, and the tokenizer's file and special tokens when the task has one). Load
either with :func:`load_exported`, or without kdbench's helpers::

    cfg = json.load(open("out/config.json"))
    model = kdbench.models.MLP(**cfg["args"])      # or Encoder: cfg["class"] says which
    model.load_state_dict(safetensors.torch.load_file("out/model.safetensors"))

    model = transformers.AutoModelForMaskedLM.from_pretrained("out")   # a Hugging Face student
    model = transformers.AutoModelForCausalLM.from_pretrained("out")   # (a GPT-2 one)
    tokenizer = transformers.AutoTokenizer.from_pretrained("out")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from kdbench.errors import UserError
from kdbench.models.encoder import Encoder
from kdbench.models.hf import HFEncoder, import_transformers
from kdbench.models.hf_decoder import DECODER_TYPES, HFDecoder
from kdbench.models.mlp import MLP

#: the models :func:`rebuild` builds from a spec, by the class name it records
BUILT_IN = {"kdbench.models.MLP": MLP, "kdbench.models.Encoder": Encoder}
HF_CLASS, HF_DECODER_CLASS = "kdbench.models.HFEncoder", "kdbench.models.HFDecoder"
WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The spec of ``model`` (see the module docstring)."""
    if isinstance(model, (HFEncoder, HFDecoder)):
        return {"class": HF_CLASS if isinstance(model, HFEncoder) else HF_DECODER_CLASS,
                "hf_config": model.model.config.to_dict()}
    for name, cls in BUILT_IN.items():
        if type(model) is cls:
            return {"class": name, "args": dict(model.config)}
    config = getattr(model, "config", None)
    return {"class": f"{type(model).__module__}.{type(model).__qualname__}",
            "args": dict(config) if isinstance(config, dict) else None}


def rebuild(spec: dict[str, Any]) -> nn.Module:
    """A freshly initialised model of ``spec``'s class and shape (load weights into it after)."""
    name = spec.get("class")
    if name == HF_CLASS:
        transformers = import_transformers()
        config = transformers.AutoConfig.for_model(**spec["hf_config"])
        return HFEncoder(transformers.AutoModelForMaskedLM.from_config(config, attn_implementation="sdpa"))
    if name == HF_DECODER_CLASS:
        transformers = import_transformers()
        config = transformers.AutoConfig.for_model(**spec["hf_config"])
        return HFDecoder(transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa"))
    if name in BUILT_IN:
        return BUILT_IN[name](**spec["args"])
    raise UserError(f"model class {name!r} is not one kdbench rebuilds (allowed: "
                    f"{', '.join([*BUILT_IN, HF_CLASS, HF_DECODER_CLASS])}); "
                    f"build it with its constructor arguments {spec.get('args')} and load the weights into it")


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load a ``safetensors`` file written by ``safetensors.torch.save_model`` (tied weights stored once)."""
    load_model(model, str(path), device=str(next(model.parameters()).device))
    return model


def save_tokenizer(tokenizer: Any, special_tokens: dict[str, str], folder: Path) -> None:
    """Write a ``tokenizers.Tokenizer`` as a Hugging Face tokenizer folder (``AutoTokenizer`` loads it)."""
    transformers = import_transformers()
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special_tokens)
    wrapped.save_pretrained(str(folder))


def write_exported(model: nn.Module, folder: Path, tokenizer: Any = None,
                   special_tokens: Optional[dict[str, str]] = None) -> None:
    """Write ``model`` (and the task's ``tokenizer``, a ``tokenizers.Tokenizer``, with its special
    tokens by role) into the existing folder ``folder`` in the exported format."""
    folder = Path(folder)
    spec = model_spec(model)
    if spec["class"] in (HF_CLASS, HF_DECODER_CLASS):
        model.save_pretrained(folder)
        if tokenizer is not None:
            save_tokenizer(tokenizer, special_tokens or {}, folder)
        return
    save_model(model, str(folder / WEIGHTS))
    if tokenizer is not None:
        tokenizer.save(str(folder / TOKENIZER))
        spec["tokenizer"] = {"file": TOKENIZER, "special_tokens": special_tokens or {}}
    (folder / CONFIG).write_text(json.dumps(spec, indent=1) + "\n")


def load_exported(folder: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The model of an exported folder (``kdbench export``), in eval mode: a built-in model from
    ``config.json`` and ``model.safetensors``, or a Hugging Face one as an :class:`HFEncoder` (a GPT-2
    as an :class:`HFDecoder`)."""
    folder = Path(folder)
    config = folder / CONFIG
    try:
        spec = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder}: not an exported model (no readable {CONFIG}: {exc})") from exc
    if "class" not in spec:  # a save_pretrained folder
        wrapper = HFDecoder if spec.get("model_type") in DECODER_TYPES else HFEncoder
        return wrapper.from_pretrained(folder).to(device).eval()
    return load_weights(rebuild(spec).to(device), folder / WEIGHTS).eval()
