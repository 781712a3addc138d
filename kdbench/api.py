"""The base classes and plain data a plugin author uses.

A *task* builds data, evaluation and models; a *method* describes how a student
learns as a list of :class:`Phase` objects; the engine runs those phases. Nothing
here trains anything.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import (Annotated, Any, Callable, ClassVar, Iterable, Literal, NamedTuple, Optional, Protocol,
                    Sequence, runtime_checkable)

import torch
from pydantic import BaseModel, ConfigDict, Field, model_serializer
from torch import nn

from kdbench.errors import UserError

OMIT_DEFAULT = "kdbench_omit_default"  # a Field marker: see new_param


def new_param(default: Any, **field_kwargs) -> Any:
    """A ``Field`` for a param added to a plugin after runs were recorded: while it has its
    default it is left out of ``model_dump`` (so of the run's config and id), so adding it
    leaves every existing run id valid. The default must keep the plugin's earlier behaviour."""
    return Field(default, json_schema_extra={OMIT_DEFAULT: True}, **field_kwargs)


def warn_mapping_access(obj: Any, access: str, name: str) -> None:
    """The DeprecationWarning of reading ``obj`` (a recipe or params) as the dict it was in kdbench 0.1:
    ``access`` is how it was read (``["lr"]``), ``name`` the field to read instead."""
    who = "recipe" if type(obj).__name__ == "Recipe" else "params"
    warnings.warn(f"{who}{access}: recipes and params are typed objects now; use {who}.{name} "
                  "(mapping access works until kdbench 0.3)", DeprecationWarning, stacklevel=3)


class Params(BaseModel):
    """Base for a plugin's parameters: unknown keys are errors, values are validated, and a
    float must be finite (``.inf`` and ``.nan`` are refused).

    Fields made with :func:`new_param` are left out of a dump while they hold their default."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def __getitem__(self, name: str) -> Any:
        """``params["lr"]``, as when recipes and params were dicts (kdbench 0.1): deprecated, use ``params.lr``."""
        warn_mapping_access(self, f"[{name!r}]", name)
        if name not in type(self).model_fields:
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        """``params.get("lr")``, as when recipes and params were dicts (kdbench 0.1): deprecated, use ``params.lr``."""
        warn_mapping_access(self, f".get({name!r})", name)
        return getattr(self, name, default) if name in type(self).model_fields else default

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler):
        data = handler(self)
        for name, field in type(self).model_fields.items():
            if (field.json_schema_extra or {}).get(OMIT_DEFAULT) and getattr(self, name) == field.default:
                data.pop(name, None)
        return data


@dataclass
class Batch:
    """One batch of a task's data.

    ``inputs`` go to the model; ``labels`` are the true classes of the outputs the
    loss applies to. ``mask`` (token tasks) selects the positions that carry a
    label: models then return logits only at those positions, flattened to
    ``[mask.sum(), classes]``, aligned with ``labels``.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    mask: Optional[torch.Tensor] = None
    #: causal LM tasks: the full token rows ``[batch, seq_len + 1]`` (see :class:`CausalLMInstance`)
    tokens: Optional[torch.Tensor] = None


class LayerOutputs(NamedTuple):
    """What ``model(x, layers=[...])`` returns: several layers' representations from one pass.

    ``hidden`` holds one tensor per requested layer, in the order requested
    (duplicates allowed); ``logits`` are the logits as ``model(x, mask=mask)``
    gives them, or None when ``with_logits=False`` (then only layers up to the
    deepest requested one ran).
    """

    hidden: list[torch.Tensor]
    logits: Optional[torch.Tensor]


#: what ``model(x, layers=[...], internals=(...))`` can return: per requested layer, the self-attention's
#: ``attention`` probabilities, pre-softmax ``scores``, ``queries``, ``keys`` and ``values``; and the ``embeddings``
#: (the input of layer 1)
INTERNALS = ("attention", "scores", "queries", "keys", "values", "embeddings")


@dataclass
class LayerInternals:
    """Inside one transformer layer's self-attention, as ``model(x, layers=[...], internals=(...))`` returns it.

    Each field is None unless its name was asked for. Shapes: ``attention`` and ``scores``
    ``[batch, heads, tokens, tokens]`` (query rows, key columns); ``queries``, ``keys`` and
    ``values`` ``[batch, heads, tokens, head_dim]``, after the layer's projections (bias included).
    ``scores`` are ``q k^T / sqrt(head_dim)`` before the softmax, ``-inf`` where causal attention
    hides a key; ``attention`` is their softmax: each row sums to 1 over the keys.
    """

    attention: Optional[torch.Tensor] = None
    scores: Optional[torch.Tensor] = None
    queries: Optional[torch.Tensor] = None
    keys: Optional[torch.Tensor] = None
    values: Optional[torch.Tensor] = None


class InternalOutputs(NamedTuple):
    """What ``model(x, layers=[...], internals=(...))`` returns: :class:`LayerOutputs`'s ``hidden`` and
    ``logits``, one :class:`LayerInternals` per requested layer (in the order asked), and the
    ``embeddings`` (the representation entering layer 1, ``[batch, tokens, width]``) when asked for."""

    hidden: list[torch.Tensor]
    logits: Optional[torch.Tensor]
    internals: list[LayerInternals]
    embeddings: Optional[torch.Tensor]


def require_internals(model: nn.Module, names: Sequence[str], who: str, why: str, role: str = "student") -> None:
    """Raise :class:`kdbench.UserError` unless ``model`` can return the internals ``names``
    (see :class:`LayerInternals`): a method calls it in ``phases()``, so a task whose models
    cannot serve it (an MLP has no attention) is refused when the suite is validated.

    ``who`` is the method's name, ``why`` what it does with them, ``role`` "student" or "teacher";
    the message names all three, the model's class and the internals it lacks."""
    missing = [n for n in names if n not in getattr(model, "available_internals", ())]
    if missing:
        raise UserError(f"{who}: cannot apply to this task: its {role} model ({type(model).__name__}) has no "
                        f"{', '.join(missing)} to give ({who} {why}); it needs a transformer {role} "
                        f"(kdbench.Encoder, kdbench.models.HFEncoder, kdbench.models.HFDecoder)")


@runtime_checkable
class LayeredModel(Protocol):
    """What every model a task builds exposes, so methods reach inside without hooks.

    ``forward(x, upto=None, mask=None)`` returns logits; with ``upto=i`` it runs
    only layers ``1..i`` and returns the representation after layer ``i``
    (``[batch, hidden]`` for an MLP, ``[batch, tokens, hidden]`` for an encoder).
    ``pre_activation=True`` asks for the representation before the layer's
    nonlinearity where the model has one.

    ``forward(x, layers=[i, j, ...], mask=None, with_logits=True)`` runs the
    model once and returns :class:`LayerOutputs`: the representations after
    layers ``i, j, ...`` (as ``upto`` would give each, in the order asked,
    duplicates allowed) and the logits as ``forward(x, mask=mask)`` gives them.
    With ``with_logits=False`` the logits are None and only layers up to
    ``max(layers)`` run, so a loss on several layers pays for one forward, not
    one per layer. ``upto`` and ``layers`` together, or a layer outside
    ``1..num_layers``, raise ``ValueError``.

    An extension for transformers (:class:`kdbench.Encoder`, :class:`kdbench.models.HFEncoder`,
    :class:`kdbench.models.HFDecoder`):
    ``forward(x, layers=[...], internals=("attention", "values", ...))`` returns
    :class:`InternalOutputs`, adding the self-attention internals of each requested layer
    (:class:`LayerInternals`) and, with ``"embeddings"``, the input of layer 1; the same layers run
    as without ``internals``. Such a model lists what it can give in ``available_internals`` (a
    subset of :data:`INTERNALS`) and its heads per layer in ``attention_heads(layer)``; a model
    without attention (the MLP) has ``available_internals == ()`` and raises ``ValueError`` when
    asked. :func:`require_internals` turns that into a method's :class:`kdbench.UserError`.
    """

    num_layers: int

    def hidden_size(self, layer: int) -> int: ...

    def layer_parameters(self, layer: int) -> list[nn.Parameter]: ...

    def __call__(self, x: torch.Tensor, upto: Optional[int] = None, mask: Optional[torch.Tensor] = None,
                 pre_activation: bool = False, layers: Optional[Sequence[int]] = None,
                 with_logits: bool = True) -> torch.Tensor | LayerOutputs: ...

    # the attention extension (optional): __call__(..., internals=("attention", ...)) -> InternalOutputs
    # available_internals: tuple[str, ...];  attention_heads(layer) -> int


def logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The model's logits for the labelled outputs of ``batch`` (aligned with ``batch.labels``)."""
    return model(batch.inputs, mask=batch.mask)


class Recipe(Params):
    """How a model is trained: optimizer, learning-rate schedule, batch size, length.

    A task gives defaults for its teacher and its students; a suite may override
    any field (``tasks[i].teacher`` / ``tasks[i].student``).
    """

    optimizer: Literal["sgd", "adam", "adamw"] = Field("adam", description="torch.optim SGD, Adam or AdamW")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum")
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.999), description="Adam/AdamW betas, each in [0, 1)")
    weight_decay: float = Field(0.0, ge=0, description="weight decay (AdamW: decoupled; SGD and Adam: L2)")
    schedule: Literal["constant", "cosine", "linear"] = Field(
        "constant", description="learning rate after warm-up: constant, or cosine / linear decay to 0")
    warmup: float = Field(0.0, ge=0, lt=1, description="fraction of steps of linear warm-up")
    batch_size: int = Field(32, ge=1, description="examples per step")
    steps: int = Field(1000, ge=1, description="training steps (teachers; students are bounded by the budget)")
    checkpoint_every: int = Field(0, ge=0, description="teacher steps between stored checkpoints (0: none)")
    grad_clip: float = Field(0.0, ge=0, description="max gradient norm (0: off)")


@dataclass
class CoTrain:
    """A model trained in lockstep with the student (online distillation's teacher).

    The engine steps it every ``every`` student steps, on the student's batch,
    with ``loss`` and its own optimizer from ``recipe``, for at most ``steps`` of
    its steps (default ``recipe.steps``). ``target``, if given, is a frozen copy
    the student reads; the engine refreshes it from ``model`` every ``refresh``
    co-training steps. Its FLOPs are measured like a phase's and reported as
    teacher-training FLOPs of the run.
    """

    model: nn.Module
    loss: Callable[["Batch"], torch.Tensor]
    recipe: "Recipe"
    every: int = 1
    steps: Optional[int] = None
    target: Optional[nn.Module] = None
    refresh: int = 1

    @property
    def total_steps(self) -> int:
        return self.steps if self.steps is not None else self.recipe.steps


@dataclass
class Clock:
    """Where the engine is, kept current by it: a loss reads it to follow a schedule (e.g. a
    temperature) that stays exact across resumption; the engine's per-step callback gets it too.

    During a loss call, ``step`` counts the steps done before this one; after a step (in the
    callback) it counts that step too.
    """

    step: int = 0  # steps done
    phase_step: int = 0  # steps done in the current phase
    phase_steps: int = 1  # steps allotted to the current phase
    total_steps: int = 0  # steps allotted to the whole job

    @property
    def phase_fraction(self) -> float:
        return self.phase_step / max(1, self.phase_steps)


@dataclass
class Phase:
    """One stage of a method: plain data the engine runs.

    Exactly one of ``share`` (fraction of the run's FLOP budget) and ``steps``
    (a fixed number of student steps) is set; the last phase of a method may set
    neither and then takes whatever budget is left. A phase ends when its steps
    or its FLOPs are used up, and never past the run's budget.

    ``loss(batch)`` returns a scalar; anything it runs (teacher forwards,
    projections, partial student forwards) is measured once and charged on every
    step. ``params`` restricts which student parameters the phase trains (None:
    all). ``teacher`` and ``depth`` describe what the loss uses (for curves and
    reports only: costs are measured, not declared). Phases with the same
    ``cost_key`` share one FLOP measurement (default: the name). ``cotrain``
    trains another model alongside (see :class:`CoTrain`). ``info`` (a dict of
    JSON values) is recorded with the phase in the run's ``summary.json``.

    ``until(clock, loss)``, if set, lets the phase end before its allotted steps: the
    engine asks it after every step of the phase (``clock`` counting that step, ``loss``
    the step's loss) and ends the phase when it answers True. The unused steps go to the
    phases after it as the budget would have allotted them had the phase asked for fewer
    (each phase that sets ``steps`` up to what it asked for, the last phase the rest), so
    they must cost what this phase costs per step; the run's steps and FLOPs are
    unchanged. The last phase never ends early. If ``until`` has ``state_dict()`` and
    ``load_state_dict()``, the engine saves and restores its state with the run's, so a
    resumed run ends the phase where an uninterrupted one would.

    ``state``, if set, is what the loss keeps from one step to the next besides
    parameters (a memory bank, a queue of negatives, a running statistic): an object
    with ``state_dict()`` (tensors, numbers, lists and dicts of them) and
    ``load_state_dict()``. The engine saves it with the run's state and restores it
    on resume, so a resumed run continues exactly as an uninterrupted one.
    (Trainable tensors belong in ``params``, which the engine saves already.)
    """

    name: str
    loss: Callable[[Batch], torch.Tensor]
    share: Optional[float] = None
    steps: Optional[int] = None
    params: Optional[list[nn.Parameter]] = None
    teacher: Optional[str] = None
    depth: Optional[int] = None
    cost_key: Optional[str] = None
    info: dict[str, Any] = field(default_factory=dict)
    cotrain: Optional[CoTrain] = None
    until: Optional[Callable[[Clock, float], bool]] = None
    state: Optional[Any] = None

    def __post_init__(self) -> None:
        if self.share is not None and self.steps is not None:
            raise ValueError(f"phase {self.name!r}: set share or steps, not both")
        if self.share is not None and not 0 <= self.share <= 1:
            raise ValueError(f"phase {self.name!r}: share must be in [0, 1], got {self.share}")
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"phase {self.name!r}: steps must be >= 0, got {self.steps}")
        if self.cost_key is None:
            self.cost_key = self.name


class TaskInstance:
    """A task built for one (params, data seed, device): data, evaluation, models, recipes.

    Subclasses implement every method below. Sampling must use only the
    generator passed in, so the stream is reproducible step by step.
    """

    #: name of the metric the leaderboard ranks by; higher is better unless
    #: ``higher_is_better`` is False.
    metric: str = "accuracy"
    higher_is_better: bool = True
    #: the task's text tokenizer (a ``tokenizers.Tokenizer``) if it has one: kept with every
    #: student and exported with it, with ``special_tokens`` (role -> token, e.g.
    #: ``{"cls_token": "[CLS]", "mask_token": "[MASK]"}``, the names Hugging Face tokenizers use)
    tokenizer: Any = None
    special_tokens: dict[str, str] = {}

    def train_batch(self, generator: torch.Generator, batch_size: int) -> Batch:
        """Sample one training batch using only ``generator``.

        The generator lives on the task's device (the ``device`` given to
        :meth:`Task.build`: a CUDA generator on a GPU), so sample on that device
        (``torch.randint(..., generator=generator, device=generator.device)``);
        the engine reseeds it before every step, so batch ``t`` never depends on
        the batches before it.
        """
        raise NotImplementedError

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Metrics of ``model`` on the fixed evaluation set (must include ``metric``).

        The engine calls it with the model in eval mode and under
        ``torch.no_grad()``, and puts the model back in train mode afterwards.
        """
        raise NotImplementedError

    def eval_logits(self, model: nn.Module) -> Optional[Iterable[torch.Tensor]]:
        """``model``'s logits on the evaluation set at the positions the metric scores, as
        ``[n, classes]`` chunks in a fixed order (MLM tasks: the masked positions), or None
        (the default) when the task does not expose them.

        The engine compares a student's chunks with the final teacher's at every evaluation:
        top-1 agreement and KL(teacher || student) (see :mod:`kdbench.run.fidelity`). It calls
        this in eval mode under ``torch.no_grad()``, like :meth:`evaluate`.
        """
        return None

    def teacher_model(self) -> nn.Module:
        """A freshly initialised teacher (a :class:`LayeredModel`), on the task's device."""
        raise NotImplementedError

    def student_model(self) -> nn.Module:
        """A freshly initialised student (a :class:`LayeredModel`), on the task's device."""
        raise NotImplementedError

    def teacher_source(self) -> Optional[str]:
        """Where a given teacher comes from, or None (the default) when the teacher is trained.

        A task whose :meth:`teacher_model` returns pretrained weights (a Hugging Face
        folder) returns their source: the teacher cache then records that teacher as
        given, with that source in its summary, instead of training it, and a method
        that reads intermediate teacher checkpoints is refused before anything trains.
        """
        return None


class CausalLMInstance(TaskInstance):
    """A causal language-model task (``lm``, ``pcfg-lm``): what sequence-level and on-policy methods use.

    Its data are token rows ``[batch, seq_len + 1]``: a batch's ``inputs`` are ``rows[:, :-1]``,
    ``mask`` marks the input positions whose next token is learned (``[batch, seq_len]``) and
    ``labels`` are ``rows[:, 1:][mask]``, so ``model(batch.inputs, mask=batch.mask)`` gives the
    next-token logits aligned with ``labels`` as for every other task. The first ``prompt_len``
    tokens of a row are its prompt (pcfg-lm: the start token); a method that generates continues
    prompts to full rows (:func:`kdbench.models.generation.sample`) and turns them into a batch
    with :meth:`batch_from_tokens`, which stops each row at the task's end token if it has one.
    Models are causal: position ``t`` sees positions ``<= t`` only.
    """

    metric = "perplexity"
    higher_is_better = False
    seq_len: int  # input positions of a row (a row has seq_len + 1 tokens)
    prompt_len: int = 1  # tokens of a row that are its prompt
    pad_id: int = 0  # the token after a row's end; never a label
    end_id: Optional[int] = None  # the end-of-string token (None: rows are cut from a running text)

    def tokens(self, batch: Batch) -> torch.Tensor:
        """The full token rows ``[batch, seq_len + 1]`` of a batch this task made."""
        return batch.tokens

    def prompts(self, batch: Batch) -> torch.Tensor:
        """The prompts ``[batch, prompt_len]`` of a batch's rows."""
        return self.tokens(batch)[:, :self.prompt_len]

    def batch_from_tokens(self, tokens: torch.Tensor) -> Batch:
        """A training batch of rows ``[batch, seq_len + 1]`` (e.g. prompts continued by a model):
        past a row's first end token every position becomes ``pad_id``; labels are the tokens after
        the prompt up to and including the end token (every token after the prompt without one)."""
        raise NotImplementedError


class Task:
    """A task plugin: a name, a version, a params model and a factory.

    ``build(params, seed, device)`` returns a :class:`TaskInstance`. ``seed`` fixes
    the data that must be shared by teacher and students (the evaluation set, a
    tokenizer); model initialisation is seeded by the engine.

    ``presets`` are named sizes beside the defaults: ``{name: {"params": {...}, "teacher": {...},
    "student": {...}}}`` (each part optional). A suite's ``preset: NAME`` in a task's params
    applies one; the entry's own params and ``teacher:``/``student:`` overrides win over it.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type[Params]] = Params
    description: ClassVar[str] = ""
    presets: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {}

    def build(self, params: Params, seed: int, device: torch.device, cache_dir: Any = None) -> TaskInstance:
        raise NotImplementedError

    def teacher_recipe(self, params: Params) -> Recipe:
        """Default teacher training recipe (a suite may override any field)."""
        return Recipe()

    def student_recipe(self, params: Params) -> Recipe:
        """Default student optimizer and batch size (its length comes from the budget)."""
        return Recipe()


class TeacherAccess(Protocol):
    """How a method reaches the teacher: the final one or a stored checkpoint."""

    def final(self) -> nn.Module: ...

    def at(self, step: int) -> nn.Module: ...

    checkpoint_steps: list[int]
    curve: list[dict[str, Any]]


@dataclass
class MethodContext:
    """Everything a method needs to describe its phases for one run."""

    task: TaskInstance
    student: nn.Module
    teacher: TeacherAccess
    teacher_recipe: Recipe
    seed: int
    device: torch.device
    generator: torch.Generator  # seeded from the run seed: draw projections etc. from it
    clock: Clock = field(default_factory=Clock)  # kept current by the engine
    make_teacher: Optional[Callable[[], nn.Module]] = None  # a fresh teacher, initialised as the cached one


class Method:
    """A method plugin: a name, a version, a params model, and ``phases(ctx, params)``.

    Methods never loop: they return :class:`Phase` objects and the engine trains.
    ``checkpoints(params, recipe)`` lists the teacher steps whose checkpoints the
    method reads (the teacher cache stores exactly those); most methods need none.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Params: ClassVar[type[Params]] = Params
    description: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    #: True for a method whose losses generate sequences at every step (the teacher scores what was generated):
    #: the teacher-logit cache (a suite's ``teacher_logits``) does not apply to its runs
    generates: ClassVar[bool] = False

    def checkpoints(self, params: Params, recipe: Recipe) -> list[int]:
        return []

    def phases(self, ctx: MethodContext, params: Params) -> list[Phase]:
        raise NotImplementedError
