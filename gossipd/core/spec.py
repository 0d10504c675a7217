"""Model specs, data schemas and training settings: plain values, no torch.

Kept apart from the learner so that configuration (the CLI, the daemon's
config, the simulator's) can be parsed and checked without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gossipd.core.plugin import split_reference
from peer_sampling.knobs import check_knobs, integer, knob, non_negative, optional, positive

TASKS = ("classification", "regression")
MODEL_SPECS = ("logreg", "mlp:H1[,H2...]", "cnn[:C1[,C2...]]", "python:PATH.py:FACTORY", "pkg.module:FACTORY")
OPTIMIZERS = ("sgd", "adam")
#: The step size when none is configured. Squared error has no bound on its
#: gradient (cross-entropy does), and a node's step on a handful of examples
#: overshoots at 0.5: diabetes diverges at 0.5 and matches the centralised
#: model from 0.2 down.
DEFAULT_LR: dict[str, float] = {"classification": 0.5, "regression": 0.1}
SCALINGS = ("network", "none", "fixed:PATH")

#: What each task measures; the first is the headline (tables, plots, ``evaluate``).
METRICS: dict[str, tuple[str, ...]] = {"classification": ("accuracy",), "regression": ("rmse", "r2")}

BUILTIN_MODELS = ("logreg", "mlp", "cnn")
DEFAULT_CNN_CHANNELS = (16, 32)


def primary_metric(task: str) -> str:
    return METRICS[task][0]


# -- model specs -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model`` value.

    kind: ``logreg`` | ``mlp`` | ``cnn`` (built in) or ``python`` (a file) |
        ``module`` (an importable module) for a user's torch module factory.
    widths: hidden layer widths (``mlp``) or convolution channels (``cnn``).
    target: the plugin's file path or dotted module name; attr: its factory.
    """

    kind: str
    widths: tuple[int, ...] = ()
    target: str = ""
    attr: str = ""

    @property
    def is_plugin(self) -> bool:
        return self.kind in ("python", "module")

    @property
    def hand_written(self) -> bool:
        """Linear/ReLU stacks: trained by the fast hand-written path."""
        return self.kind in ("logreg", "mlp")

    @property
    def text(self) -> str:
        if self.kind == "logreg":
            return "logreg"
        if self.kind in ("mlp", "cnn"):
            return f"{self.kind}:{','.join(map(str, self.widths))}"
        if self.kind == "python":
            return f"python:{self.target}:{self.attr}"
        return f"{self.target}:{self.attr}"


def _widths(spec: str, name: str, arg: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in arg.split(","))
    except ValueError:
        raise ValueError(f"model '{name}:N1,N2,...' needs integer widths, got {spec!r}") from None
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"model '{name}' widths must be positive integers, got {spec!r}")
    return widths


def parse_model_spec(spec: str) -> ModelSpec:
    """``logreg``, ``mlp:64,32``, ``cnn``, ``cnn:8,16``, ``python:PATH.py:FACTORY`` or
    ``pkg.module:FACTORY``. Plugins are only parsed here; loading them is the learner's job.
    """
    spec = spec.strip()
    if spec == "logreg":
        return ModelSpec("logreg")
    if spec == "cnn":
        return ModelSpec("cnn", DEFAULT_CNN_CHANNELS)
    name, sep, arg = spec.partition(":")
    if name == "mlp":
        return ModelSpec("mlp", _widths(spec, name, arg))
    if name == "cnn" and sep:
        return ModelSpec("cnn", _widths(spec, name, arg))
    ref = split_reference(spec)
    if ref is not None and name not in BUILTIN_MODELS:
        return ModelSpec(ref[0], target=ref[1], attr=ref[2])
    if spec.startswith("python:"):
        raise ValueError(f"model 'python:PATH.py:FACTORY' needs a .py path and a function name, got {spec!r}")
    raise ValueError(f"unknown model {spec!r}; expected one of {', '.join(MODEL_SPECS)}")


# -- what the data looks like --------------------------------------------------------------


@dataclass(frozen=True)
class Schema:
    """What a model maps from and to: the data's shapes and names.

    input_shape: one example's shape, e.g. ``(64,)`` for a table row or
        ``(1, 8, 8)`` for an image; rows travel flat, ``n_features`` long.
    n_outputs: the number of classes (classification) or 1 (regression).
    feature_names / class_names: carried into the ONNX file; class i of the
        model's output is ``class_names[i]``.
    Every node of a network must agree on the whole schema: it is part of
    the model's fingerprint.
    """

    task: str
    input_shape: tuple[int, ...]
    n_outputs: int
    feature_names: tuple[str, ...] = field(default=())
    class_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "feature_names", tuple(str(s) for s in self.feature_names))
        object.__setattr__(self, "class_names", tuple(str(s) for s in self.class_names))
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not self.input_shape or any(s < 1 for s in self.input_shape):
            raise ValueError(f"input shape must be positive sizes, got {self.input_shape}")
        if self.task == "classification" and self.n_outputs < 2:
            raise ValueError(f"classification needs at least 2 classes, got {self.n_outputs}")
        if self.task == "regression" and self.n_outputs != 1:
            raise ValueError(f"regression predicts one value, got n_outputs={self.n_outputs}")
        if self.feature_names and len(self.feature_names) != self.n_features:
            raise ValueError(f"{len(self.feature_names)} feature names for {self.n_features} features")
        if self.class_names and (self.task != "classification" or len(self.class_names) != self.n_outputs):
            raise ValueError(f"{len(self.class_names)} class names for {self.n_outputs} {self.task} outputs")

    @classmethod
    def classification(cls, n_features: int, n_classes: int, **names: Any) -> Schema:
        return cls("classification", (n_features,), n_classes, **names)

    @classmethod
    def regression(cls, n_features: int, **names: Any) -> Schema:
        return cls("regression", (n_features,), 1, **names)

    @property
    def n_features(self) -> int:
        return math.prod(self.input_shape)

    @property
    def n_classes(self) -> int:
        """Number of classes; 0 for regression."""
        return self.n_outputs if self.task == "classification" else 0

    @property
    def n_stat_columns(self) -> int:
        """Columns the scaler keeps statistics of: the features, and the target for regression."""
        return self.n_features + (1 if self.task == "regression" else 0)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "input_shape": list(self.input_shape), "n_outputs": self.n_outputs,
                "feature_names": list(self.feature_names), "class_names": list(self.class_names)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schema:
        return cls(str(d["task"]), tuple(d["input_shape"]), int(d["n_outputs"]),
                   tuple(d.get("feature_names") or ()), tuple(d.get("class_names") or ()))


def format_shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``1x8x8`` -> (1, 8, 8)."""
    try:
        shape = tuple(int(s) for s in text.strip().lower().split("x"))
    except ValueError:
        raise ValueError(f"input shape must look like 1x8x8, got {text!r}") from None
    if any(s < 1 for s in shape):
        raise ValueError(f"input shape sizes must be positive, got {text!r}")
    return shape


def parse_task(text: str) -> str | None:
    """``auto`` (infer from the data) -> None, else ``classification`` | ``regression``."""
    text = text.strip()
    if text in ("", "auto"):
        return None
    if text not in TASKS:
        raise ValueError(f"task must be auto, classification or regression, got {text!r}")
    return text


def parse_scaling(text: str) -> tuple[str, str]:
    """``network`` | ``none`` | ``fixed:PATH`` -> (mode, path)."""
    mode, sep, arg = text.strip().partition(":")
    if mode in ("network", "none") and not sep:
        return mode, ""
    if mode == "fixed" and arg:
        return mode, arg
    raise ValueError(f"unknown scaling {text!r}; expected one of {', '.join(SCALINGS)}")


# -- training settings -----------------------------------------------------------------


def _optimizer(value: str) -> None:
    if value not in OPTIMIZERS:
        raise ValueError(f"expected one of {', '.join(OPTIMIZERS)}, got {value!r}")


@dataclass(frozen=True)
class LearnerConfig:
    """How a node trains on its local data."""

    lr: float | None = knob(None, """Initial SGD step size. Larger learns faster from few examples but
        makes the model jump towards whatever data the current node holds (bad under skew). Unset: the
        task's default, 0.5 for classification and 0.1 for regression (squared error has no bounded
        gradient: 0.5 diverges on diabetes).""", optional(positive))
    lr_decay: float = knob(2000.0, """The model age (examples seen) at which the step size has halved:
        lr(age) = lr / (1 + age / lr_decay). Smaller settles sooner, larger keeps adapting longer.""",
        positive)
    batch_size: int = knob(32, "Mini-batch size of the one local pass per update.", integer(1))
    weight_decay: float = knob(1e-4, "L2 penalty; keeps logistic regression from over-confident weights.",
                               non_negative)
    init_seed: int = knob(0, """Seed of the initial parameters. Every node of a network must use the same
        one, since averaging differently initialised MLPs does not work.""", integer(0))
    optimizer: str = knob("sgd", """sgd | adam. sgd: plain steps on the age schedule above. adam: torch
        modules only (python:/module: models, cnn); its moments live for one local pass and are never
        gossiped.""", _optimizer)

    def __post_init__(self) -> None:
        check_knobs(self)

    @classmethod
    def for_task(cls, task: str, lr: float | None = None, **settings: Any) -> LearnerConfig:
        """Settings for ``task``, with the task's default step size when ``lr`` is None."""
        return cls(lr=DEFAULT_LR[task] if lr is None else lr, **settings)

    def lr_for(self, task: str) -> float:
        """The initial step size: ``lr``, or the task's default when it is unset."""
        return DEFAULT_LR[task] if self.lr is None else self.lr
