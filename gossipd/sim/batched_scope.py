"""What the batched engine simulates, and so when ``--engine auto`` uses it.

Kept apart from the engine (plain values, no numpy) so that
``SimulationConfig.validate`` can refuse ``--engine batched`` with an
option it does not simulate before anything is loaded.

Options are listed by what the engine does support: a configuration field
that is not in :data:`KNOWN_FIELDS` (one added to the exact engine since, e.g.
a new attack) sends a run to the exact engine as soon as it is set
away from its default, so a new option is never silently ignored.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any

from gossipd.core.spec import parse_model_spec

ENGINES = ("auto", "exact", "batched")
#: Merge rules the batched engine has (``core.merge``'s formulas over arrays).
BATCHED_MERGES = ("robust", "age")
#: SimulationConfig fields the batched engine simulates (any value, unless a check below says not).
KNOWN_FIELDS = frozenset({
    "dataset", "label_column", "model", "task", "input_shape", "scaling", "nodes", "cycles", "split", "merge",
    "sampler", "drop", "online", "session", "delay", "jitter", "kill", "cut", "timeout", "reseed_interval",
    "view_size", "shuffle_length", "shuffle_interval", "seeds", "eval_every", "baselines", "lr", "lr_decay",
    "batch_size", "optimizer", "seed", "engine", "codec", "partitions", "subsample", "flow", "churn",
})


def batched_unsupported(config: Any) -> str | None:
    """The option of ``config`` (a SimulationConfig) the batched engine does not simulate,
    as the user spells it, or None when it simulates all of them."""
    try:
        hand_written = parse_model_spec(config.model).hand_written
    except ValueError:
        return None  # validation names the bad model
    if not hand_written:
        return f"--model {config.model} (a torch module: only logreg and mlp are batched)"
    if config.attackers is not None:
        return "--attackers"
    if config.merge.strip() not in BATCHED_MERGES:
        return f"--merge {config.merge} (batched: {', '.join(BATCHED_MERGES)})"
    for f in fields(config):
        if f.name in KNOWN_FIELDS or f.name == "attackers":
            continue
        default = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
        if getattr(config, f.name) != default:
            return f"--{f.name.replace('_', '-')}"
    return None
