"""Model specs and training settings: plain values, no torch.

Kept apart from the learner so that configuration (the CLI, the daemon's
config, the simulator's) can be parsed and checked without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MODEL_SPECS = ("logreg", "mlp:H1[,H2...]")


def parse_model_spec(spec: str) -> tuple[int, ...]:
    """Hidden layer widths: ``logreg`` -> (), ``mlp:64,32`` -> (64, 32)."""
    spec = spec.strip()
    if spec == "logreg":
        return ()
    name, _, arg = spec.partition(":")
    if name == "mlp":
        try:
            widths = tuple(int(w) for w in arg.split(","))
        except ValueError:
            raise ValueError(f"model 'mlp:H1,H2,...' needs integer widths, got {spec!r}") from None
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"model 'mlp' widths must be positive integers, got {spec!r}")
        return widths
    raise ValueError(f"unknown model {spec!r}; expected one of {', '.join(MODEL_SPECS)}")


@dataclass(frozen=True)
class LearnerConfig:
    """How a node trains on its local data.

    lr: initial step size. Larger learns faster from few examples but makes the
        model jump towards whatever data the current node holds (bad under skew).
    lr_decay: the age (examples seen) at which the step size has halved:
        ``lr(age) = lr / (1 + age / lr_decay)``. Smaller settles sooner, larger
        keeps adapting longer.
    batch_size: mini-batch size of the one local pass per update.
    weight_decay: L2 penalty; keeps logistic regression from over-confident weights.
    init_seed: seed of the initial parameters. Every node of a network must use
        the same one, since averaging differently initialised MLPs does not work.
    """

    lr: float = 0.5
    lr_decay: float = 2000.0
    batch_size: int = 32
    weight_decay: float = 1e-4
    init_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("lr", "lr_decay"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"learner {name} must be finite and > 0, got {v!r}")
        if self.batch_size < 1:
            raise ValueError(f"learner batch_size must be >= 1, got {self.batch_size}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"learner weight_decay must be >= 0, got {self.weight_decay}")
