"""What one simulated experiment is: SimulationConfig and its validation.

Kept apart from the engine so that baselines, plots and the CLI can name a
configuration without importing the event loop (and the engine can import
them without a cycle).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from gossipd.core.codec import check_codec
from gossipd.core.flow import parse_flow
from gossipd.core.merge import parse_merge
from gossipd.core.partition import check_partitions, check_subsample
from gossipd.core.spec import LearnerConfig, parse_input_shape, parse_model_spec, parse_scaling, parse_task
from gossipd.data import parse_split
from gossipd.sim.attackers import parse_attackers
from gossipd.sim.batched_scope import ENGINES, batched_unsupported
from gossipd.sim.churn import ChurnError, parse_churn
from peer_sampling.topology import parse_topology

BASELINES = ("centralised", "local", "fedavg")


class ConfigError(ValueError):
    """A simulation setting that cannot be used; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class SimulationConfig:
    """One experiment. Times are in cycles (Δ = 1)."""

    dataset: str = "digits"
    label_column: str | None = None  # CSV files: the label's column (default: label/target/y/class, else the last)
    model: str = "logreg"  # logreg | mlp:H1,... | cnn | python:PATH.py:FACTORY | pkg.module:FACTORY
    task: str = "auto"  # auto | classification | regression (auto: as the data says)
    input_shape: str = ""  # e.g. 1x8x8 for image rows in a CSV; default: as the data says
    scaling: str = "network"  # network | none | fixed:PATH
    nodes: int = 100
    cycles: int = 200
    split: str = "iid"  # iid | labels | dirichlet:ALPHA: how the training data is cut over the nodes
    merge: str = "robust"
    sampler: str = "cyclon"  # cyclon | full | ring | kregular:K | smallworld:K,P | random:P
    drop: float = 0.0  # probability that a message is lost
    online: float = 1.0  # long-run fraction of time a node is online (churn)
    session: float = 10.0  # mean cycles between churn re-draws of a node's online state
    churn: str | None = None  # a trace: FILE.csv | diurnal[:KEY=VALUE,...] (gossipd.sim.churn); not with online < 1
    delay: float = 0.1  # message delay, uniform in [0, delay] cycles
    jitter: float = 0.1  # gossip and shuffle periods are 1 ± jitter cycles
    kill: str | None = None  # "FRACTION@CYCLE": that share of nodes crash for good then
    cut: str | None = None  # "FRACTION@START-END": that share of nodes cannot reach the rest meanwhile
    attackers: str | None = None  # "FRACTION:KIND" (gossipd.sim.attackers)
    timeout: float = 1.0  # cycles until a sender gives up on an unanswered request (daemon: 5 s of Δ = 5 s)
    reseed_interval: float | None = None  # Cyclon's (cycles); None = its default, inf = never
    view_size: int = 20
    shuffle_length: int = 8
    shuffle_interval: float = 1.0  # cycles between two Cyclon shuffles of a node
    seeds: int = 3  # bootstrap nodes every Cyclon view starts from
    eval_every: int = 10
    baselines: tuple[str, ...] = ()
    lr: float | None = None  # None: the task's default (DEFAULT_LR)
    lr_decay: float = LearnerConfig.lr_decay
    batch_size: int = LearnerConfig.batch_size
    optimizer: str = LearnerConfig.optimizer
    codec: str = "fp32"  # fp32 | fp16 | int8: how pushed parameters are written (core/codec.py)
    partitions: int = 1  # P: the model is cut into P partitions, each with its own age
    subsample: float = 1.0  # the share of the partitions one push carries (at least one)
    flow: str = "push"  # push | tokens:A,C (randomized token account, core/flow.py)
    gossip: bool = True  # False: run only the baselines (an experiment's FedAvg cells)
    fedavg_epochs: int = 5  # FedAvg's E: local passes per round (McMahan et al.)
    fedavg_batch: int = 10  # FedAvg's B: local mini-batch size
    fedavg_fraction: float = 1.0  # FedAvg's C: share of the available clients taken into a round
    seed: int = 1
    # auto | exact | batched. exact: the event-by-event reference; batched: all nodes in
    # arrays, time in slices (docs/architecture.md); auto: batched when it simulates every
    # option set, else exact (with a note saying why).
    engine: str = "auto"

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        for name in ("nodes", "cycles", "eval_every", "view_size", "shuffle_length", "seeds", "batch_size",
                     "fedavg_epochs", "fedavg_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.nodes < 2:
            raise ConfigError("nodes", f"--nodes must be at least 2, got {self.nodes}")
        for name in ("drop",):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(name, f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 < self.online <= 1.0:
            raise ConfigError("online", f"--online must be in (0, 1], got {self.online}")
        for name in ("delay", "session", "shuffle_interval", "lr", "lr_decay", "timeout"):
            v = getattr(self, name)
            if v is None and name == "lr":
                continue
            if not (math.isfinite(v) and (v >= 0 if name == "delay" else v > 0)):
                raise ConfigError(name, f"--{name.replace('_', '-')} must be a positive number, got {v}")
        if not 0.0 <= self.jitter < 1.0:
            raise ConfigError("jitter", f"--jitter must be in [0, 1), got {self.jitter}")
        checks: list[tuple[str, Callable[[str], object], str]] = [
            ("split", parse_split, self.split),
            ("merge", parse_merge, self.merge),
            ("model", parse_model_spec, self.model),
            ("task", parse_task, self.task),
            ("input_shape", lambda v: v and parse_input_shape(v), self.input_shape),
            ("scaling", parse_scaling, self.scaling),
            ("optimizer", lambda v: LearnerConfig(optimizer=v), self.optimizer),
            ("codec", check_codec, self.codec),
            ("partitions", check_partitions, self.partitions),
            ("subsample", check_subsample, self.subsample),
            ("flow", parse_flow, self.flow),
        ]
        if self.sampler != "cyclon":
            checks.append(("sampler", parse_topology, self.sampler))
        for name, parse, value in checks:
            try:
                parse(value)
            except ValueError as exc:
                raise ConfigError(name, f"--{name.replace('_', '-')}: {exc}") from None
        if self.shuffle_length > self.view_size:
            raise ConfigError("shuffle_length", "--shuffle-length must be <= --view-size")
        unknown = set(self.baselines) - set(BASELINES)
        if unknown:
            raise ConfigError("baselines", f"--baselines: unknown {', '.join(sorted(unknown))}; expected {', '.join(BASELINES)}")
        if self.kill is not None:
            parse_kill(self.kill, self.cycles)
        if self.cut is not None:
            parse_cut(self.cut)
        if self.attackers is not None:
            try:
                parse_attackers(self.attackers)
            except ValueError as exc:
                raise ConfigError("attackers", f"--attackers: {exc}") from None
        if not 0.0 < self.fedavg_fraction <= 1.0:
            raise ConfigError("fedavg_fraction", f"--fedavg-fraction must be in (0, 1], got {self.fedavg_fraction}")
        if self.churn is not None:
            if self.online < 1.0:
                raise ConfigError("churn", "--churn replaces --online/--session; give one of them")
            try:
                parse_churn(self.churn)
            except ChurnError as exc:
                raise ConfigError("churn", f"--churn: {exc}") from None
        if not self.gossip and not self.baselines:
            raise ConfigError("gossip", "a run without gossip needs --baselines")
        ri = self.reseed_interval
        if ri is not None and not (ri > 0):  # also rejects nan; inf means never
            raise ConfigError("reseed_interval", f"--reseed-interval must be > 0 (inf = never), got {ri}")
        if self.engine not in ENGINES:
            raise ConfigError("engine", f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "batched":
            why = batched_unsupported(self)
            if why is not None:
                raise ConfigError("engine", f"--engine batched does not simulate {why}; use --engine exact or auto")

    def learner_config(self, task: str = "classification") -> LearnerConfig:
        return LearnerConfig.for_task(task, self.lr, lr_decay=self.lr_decay, batch_size=self.batch_size,
                                      optimizer=self.optimizer)


def parse_kill(spec: str, cycles: int) -> tuple[float, int]:
    """``FRACTION@CYCLE`` -> (fraction, cycle)."""
    try:
        frac_s, cyc_s = spec.split("@")
        fraction, cycle = float(frac_s), int(cyc_s)
    except ValueError:
        raise ConfigError("kill", f"--kill must look like FRACTION@CYCLE (e.g. 0.5@50), got {spec!r}") from None
    if not 0.0 < fraction < 1.0 or not 0 <= cycle <= cycles:
        raise ConfigError("kill", f"--kill needs 0 < FRACTION < 1 and 0 <= CYCLE <= --cycles, got {spec!r}")
    return fraction, cycle


def parse_cut(spec: str) -> tuple[float, float, float]:
    """``FRACTION@START-END`` -> (fraction, start, end): from cycle START until
    END, that share of the nodes and the rest cannot reach each other."""
    try:
        frac_s, window = spec.split("@")
        start_s, end_s = window.split("-")
        fraction, start, end = float(frac_s), float(start_s), float(end_s)
    except ValueError:
        raise ConfigError("cut", f"--cut must look like FRACTION@START-END (e.g. 0.5@50-80), got {spec!r}") from None
    if not (0.0 < fraction < 1.0 and 0.0 <= start < end < math.inf):
        raise ConfigError("cut", f"--cut needs 0 < FRACTION < 1 and 0 <= START < END, got {spec!r}")
    return fraction, start, end
