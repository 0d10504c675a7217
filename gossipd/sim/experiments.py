"""Named experiments: a sweep grid that asks one question, and the tables and figures that answer it.

``gossip experiment golf-vs-fedavg`` asks the question of Hegedűs, Danner and
Jelasity ("Gossip learning as a decentralized alternative to federated
learning", DAIS 2019; "Decentralized learning works", JPDC 2021): at equal
communication, is gossip learning competitive with federated learning? It
runs, on two bundled data sets, uniform (iid) and label-skewed splits, with
and without churn (the diurnal phone model, ``sim/churn.py``), six methods:

=====================  =====================================================
gossip                 plain push, whole fp32 models
gossip-tokens          the randomized token account, A = 10, C = 20
gossip-subsampled      P = 10 partitions, one per push
fedavg                 C = 0.5 of the available clients a round, E = 5, B = 10
fedavg-1pass           C = 0.5, E = 1, B = 32: one local pass a round, the
                       local work of one gossip update
fedavg-subsampled      the same, uploads of one partition in ten (the server
                       sends the whole model down)
=====================  =====================================================

FedAvg takes half the clients a round so that a round moves as many models
as a gossip cycle (N/2 down, N/2 up against N pushes): the methods then use
the same bandwidth per unit of time, as in the papers, and the time axis is
comparable too. McMahan's E = 5, B = 10 gives a client ten SGD steps a round
where a gossip node takes one per received model; ``fedavg-1pass`` is FedAvg
at gossip's local work, so the table separates what the server's averaging
buys from what the extra local computation buys. The outcome table compares each gossip method with its FedAvg
counterpart at three equal byte budgets: 10%, 30% and 100% of what the
cheaper of the two spent in the run (accuracy interpolated linearly in bytes
between evaluations).

Built on the sweep machinery (``sweep.py``): the grid is a ``SweepSpec`` with a
bundle axis ``method``; every run is cached in ``OUT/runs`` and a re-run only
re-draws the figures. Importing this module loads neither torch nor the engine.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gossipd.files import atomic_write
from gossipd.sim.sweep import RunCache, Runner, SweepOutcome, SweepProgress, run_sweep
from gossipd.sim.sweep_spec import Cell, SweepSpec

__all__ = ["EXPERIMENTS", "Experiment", "ExperimentOptions", "ExperimentResult", "accuracy_at", "curve_of",
           "run_experiment"]

BUDGET_FRACTIONS = (0.1, 0.3, 1.0)


@dataclass(frozen=True)
class Method:
    name: str
    settings: Mapping[str, Any]
    note: str

    @property
    def fedavg(self) -> bool:
        return self.settings.get("gossip", True) is False


@dataclass(frozen=True)
class ExperimentOptions:
    """The grid's size: the defaults are the full experiment, flags make it smaller."""

    nodes: int = 100
    cycles: int = 200
    seeds: tuple[int, ...] = (1,)
    datasets: tuple[str, ...] = ("digits", "breast_cancer")
    splits: tuple[str, ...] = ("iid", "labels")
    churn: tuple[str, ...] = ("none", "diurnal")
    methods: tuple[str, ...] = ()  # () = all of the experiment's
    eval_every: int = 5
    engine: str | None = None  # None: the experiment's own (exact); auto: gossip runs batched


@dataclass(frozen=True)
class Experiment:
    name: str
    question: str
    methods: tuple[Method, ...]
    pairs: tuple[tuple[str, str], ...]  # (gossip method, the FedAvg method it is compared with)
    base: Mapping[str, Any] = field(default_factory=dict)

    def method_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.methods)

    def spec(self, options: ExperimentOptions, output: Path) -> SweepSpec:
        """The sweep: base settings, then dataset x split x churn x method (last fastest)."""
        chosen = options.methods or self.method_names()
        unknown = [m for m in chosen if m not in self.method_names()]
        if unknown:
            raise ValueError(f"unknown method {', '.join(unknown)}; {self.name} has {', '.join(self.method_names())}")
        methods = [{"name": m.name, **m.settings} for m in self.methods if m.name in chosen]
        base = {**self.base, "nodes": options.nodes, "cycles": options.cycles, "eval_every": options.eval_every}
        if options.engine is not None:
            base["engine"] = options.engine
        grid = {"dataset": list(options.datasets), "split": list(options.splits), "churn": list(options.churn),
                "method": methods}
        return SweepSpec.from_mapping({"sweep": {"name": self.name, "seeds": list(options.seeds)}, "base": base,
                                       "grid": grid}, source=f"experiment {self.name}", output=output)


GOLF_VS_FEDAVG = Experiment(
    name="golf-vs-fedavg",
    question="At equal communication, is gossip learning competitive with federated learning "
             "(Hegedűs, Danner and Jelasity 2019, 2021)?",
    methods=(
        Method("gossip", {}, "plain push, whole fp32 models"),
        Method("gossip-tokens", {"flow": "tokens:10,20"}, "randomized token account, A = 10, C = 20"),
        Method("gossip-subsampled", {"partitions": 10, "subsample": 0.1}, "P = 10, one partition a push"),
        Method("fedavg", {"gossip": False, "baselines": ["fedavg"], "fedavg_fraction": 0.5},
               "C = 0.5, E = 5, B = 10"),
        Method("fedavg-1pass", {"gossip": False, "baselines": ["fedavg"], "fedavg_fraction": 0.5,
                                "fedavg_epochs": 1, "fedavg_batch": 32},
               "C = 0.5, E = 1, B = 32: a gossip update's local work"),
        Method("fedavg-subsampled", {"gossip": False, "baselines": ["fedavg"], "fedavg_fraction": 0.5,
                                     "partitions": 10, "subsample": 0.1},
               "as fedavg, uploads of one partition in ten"),
    ),
    pairs=(("gossip", "fedavg"), ("gossip", "fedavg-1pass"), ("gossip-tokens", "fedavg"),
           ("gossip-subsampled", "fedavg-subsampled")),
    # The exact engine for every method: the reference (the batched engine simulates every
    # option here too, as the same experiment statistically: tests/test_batched_engine.py).
    base={"model": "logreg", "engine": "exact"},
)

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (GOLF_VS_FEDAVG,)}


# -- curves and budgets -------------------------------------------------------------------


def curve_of(result: Mapping[str, Any]) -> list[dict[str, float]]:
    """(cycle, bytes, accuracy) points of one run: gossip's series, or FedAvg's when gossip did not run."""
    if result.get("series"):
        series = result["series"]
    else:
        series = result["baselines"]["fedavg"]["series"]
    return [{"cycle": float(e["cycle"]), "bytes": float(e["bytes"]), "accuracy": float(e["mean_accuracy"])}
            for e in series]


def mean_curve(curves: Sequence[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Point-wise mean over seeds (runs of one cell evaluate at the same cycles)."""
    n = min(len(c) for c in curves)
    return [{key: float(np.mean([c[i][key] for c in curves])) for key in ("cycle", "bytes", "accuracy")}
            for i in range(n)]


def accuracy_at(curve: Sequence[Mapping[str, float]], budget: float) -> float | None:
    """Accuracy after spending ``budget`` bytes, interpolated linearly; None past the run's spending."""
    spent = [p["bytes"] for p in curve]
    if not curve or budget > spent[-1]:
        return None
    return float(np.interp(budget, spent, [p["accuracy"] for p in curve]))


# -- running --------------------------------------------------------------------------------


@dataclass
class ExperimentResult:
    summary: dict[str, Any]  # experiment.json
    table: list[dict[str, Any]]  # the outcome table's rows
    paths: dict[str, Path]
    sweep: SweepOutcome


def run_experiment(experiment: Experiment, options: ExperimentOptions, output: Path,
                   make_runner: Callable[[], Runner], progress: Callable[[SweepProgress], None] | None = None,
                   plot: bool = True) -> ExperimentResult:
    """Run (or resume) the grid, then write experiment.json, experiment.csv and the figures."""
    spec = experiment.spec(options, output)
    outcome = run_sweep(spec, make_runner, progress=progress, plot=plot)
    cache = RunCache(spec.output / "runs")
    conditions: dict[tuple[str, ...], dict[str, list[dict[str, float]]]] = {}
    for cell in spec.cells():
        params = dict(cell.params)
        key = (str(params["dataset"]), str(params["split"]), str(params["churn"]))
        conditions.setdefault(key, {})[str(params["method"])] = mean_curve(_curves(cache, cell))
    table = outcome_table(experiment, conditions)
    summary = {
        "experiment": experiment.name,
        "question": experiment.question,
        "methods": {m.name: {"settings": dict(m.settings), "note": m.note} for m in experiment.methods},
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(options).items()},
        "budgets": f"{', '.join(f'{f:.0%}' for f in BUDGET_FRACTIONS)} of what the cheaper method of each pair "
                   "spent; accuracy interpolated linearly in bytes",
        "curves": [{"dataset": d, "split": s, "churn": c, "method": m, "points": pts}
                   for (d, s, c), methods in conditions.items() for m, pts in methods.items()],
        "table": table,
    }
    output.mkdir(parents=True, exist_ok=True)
    paths = {"json": output / "experiment.json", "csv": output / "experiment.csv"}
    atomic_write(paths["json"], (json.dumps(summary, indent=1) + "\n").encode(), mode=0o644)
    atomic_write(paths["csv"], table_csv(table).encode(), mode=0o644)
    if plot:
        from gossipd.sim.experiment_plot import plot_curves

        for axis in ("bytes", "time"):
            paths[f"png_{axis}"] = output / f"accuracy_vs_{axis}.png"
            plot_curves(summary, axis, paths[f"png_{axis}"])
    return ExperimentResult(summary, table, paths, outcome)


def _curves(cache: RunCache, cell: Cell) -> list[list[dict[str, float]]]:
    out = []
    for config in cell.runs():
        result = cache.get(config)
        assert result is not None, f"run {config.seed} of {cell.label} is not cached"
        out.append(curve_of(result))
    return out


def outcome_table(experiment: Experiment, conditions: Mapping[tuple[str, ...], Mapping[str, list]]) -> list[dict]:
    """Per condition and pair: both methods' accuracy at the pair's three budgets."""
    rows = []
    for (dataset, split, churn), curves in conditions.items():
        for gossip, fed in experiment.pairs:
            if gossip not in curves or fed not in curves:
                continue
            top = min(curves[gossip][-1]["bytes"], curves[fed][-1]["bytes"])
            for fraction in BUDGET_FRACTIONS:
                budget = fraction * top
                g, f = accuracy_at(curves[gossip], budget), accuracy_at(curves[fed], budget)
                rows.append({"dataset": dataset, "split": split, "churn": churn, "gossip_method": gossip,
                             "fedavg_method": fed, "budget_fraction": fraction, "budget_bytes": budget,
                             "gossip_accuracy": g, "fedavg_accuracy": f,
                             "gossip_leads_by": None if g is None or f is None else g - f})
    return rows


def table_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    rows = list(rows)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()
