"""Model specs and training settings: plain values, no torch.

Kept apart from the learner so that configuration (the CLI, the daemon's
config, the simulator's) can be parsed and checked without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from peer_sampling.knobs import check_knobs, integer, knob, non_negative, positive

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
    """How a node trains on its local data."""

    lr: float = knob(0.5, """Initial SGD step size. Larger learns faster from few examples but makes the
        model jump towards whatever data the current node holds (bad under skew).""", positive)
    lr_decay: float = knob(2000.0, """The model age (examples seen) at which the step size has halved:
        lr(age) = lr / (1 + age / lr_decay). Smaller settles sooner, larger keeps adapting longer.""",
        positive)
    batch_size: int = knob(32, "Mini-batch size of the one local pass per update.", integer(1))
    weight_decay: float = knob(1e-4, "L2 penalty; keeps logistic regression from over-confident weights.",
                               non_negative)
    init_seed: int = knob(0, """Seed of the initial parameters. Every node of a network must use the same
        one, since averaging differently initialised MLPs does not work.""", integer(0))

    def __post_init__(self) -> None:
        check_knobs(self)
