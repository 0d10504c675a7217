"""Parameter sweeps: run a grid of simulation configurations x seeds, cache, aggregate, write.

The pipeline is ``SweepSpec`` (``sweep_spec``: from a TOML file, validated
into cells) -> ``run_sweep`` (runs every (cell, seed) not yet cached on a
``Runner``: in-process, a process pool, or Ray in ``sweep_ray``) ->
``aggregate`` (mean and std over seeds of every numeric final metric) ->
``write_outputs`` (JSON, CSV, PNG).

Each run's result is cached as ``OUTPUT/runs/KEY.json`` (KEY: ``run_key``) as
soon as it finishes: an interrupted sweep resumes where it stopped, and a
re-run only aggregates.

Importing this module loads neither torch nor the engine (the CLI imports it).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

from gossipd.files import atomic_write
from gossipd.sim.config import ConfigError, SimulationConfig
from gossipd.sim.sweep_spec import CACHE_FORMAT, Cell, SweepError, SweepSpec, config_dict, run_key, show_value
from gossipd.version import VERSION

__all__ = ["Cell", "LocalRunner", "RunCache", "Runner", "SweepError", "SweepOutcome", "SweepProgress", "SweepSpec",
           "aggregate", "run_one", "run_sweep", "write_outputs"]


class RunCache:
    """One JSON file per finished run, ``DIR/KEY.json``, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, config: SimulationConfig) -> Path:
        return self.directory / f"{run_key(config)}.json"

    def get(self, config: SimulationConfig) -> dict[str, Any] | None:
        """The cached result, or None when absent, unreadable or for another config."""
        try:
            entry = json.loads(self.path(config).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("config") != config_dict(config):
            return None
        return entry.get("result")

    def put(self, config: SimulationConfig, result: dict[str, Any]) -> None:
        # The config is stored beside the result, not read from it: what simulate() reports
        # about its config may grow without invalidating every cache.
        entry = {"format": CACHE_FORMAT, "config": config_dict(config), "result": result}
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path(config), (json.dumps(entry, indent=1) + "\n").encode(), mode=0o644)


# -- running -------------------------------------------------------------------------


def run_one(config: SimulationConfig) -> dict[str, Any]:
    """One simulation, as a worker runs it (in-process, a pool process or a Ray task).

    A configuration the engine refuses (e.g. a data file a worker cannot read)
    comes back as ``{"error": {...}}`` rather than an exception, so that the
    driver can name the cell whatever carried the task.
    """
    from gossipd.sim.simulation import simulate
    from gossipd.threads import one_compute_thread

    one_compute_thread()  # one task per core: tiny models, threads cost more than they give
    try:
        return simulate(config)
    except ConfigError as exc:
        return {"error": {"field": exc.field, "message": str(exc)}}


# What a runner yields: each config with its result, as runs finish (any order).
Finished = Generator[tuple[SimulationConfig, dict[str, Any]], None, None]


class Runner(Protocol):
    """Runs configs and yields (config, result) as each finishes, in any order."""

    def map(self, configs: Sequence[SimulationConfig]) -> Finished: ...


@dataclass
class LocalRunner:
    """No Ray: in this process one after another (``workers=1``), or a process pool."""

    workers: int = 1

    def map(self, configs: Sequence[SimulationConfig]) -> Finished:
        if self.workers <= 1:
            for config in configs:
                yield config, run_one(config)
            return
        # spawn, not fork: a forked child of a process that has used torch's thread pool can hang.
        pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
        try:
            pending = {pool.submit(run_one, c): c for c in configs}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class SweepProgress:
    """What a progress display is told after every finished run."""

    cells_done: int
    cells: int
    runs_done: int
    runs: int


@dataclass
class SweepOutcome:
    summary: dict[str, Any]  # what sweep.json holds
    ran: int  # runs executed by this call
    cached: int  # runs found on disk
    paths: dict[str, Path] = field(default_factory=dict)


def run_sweep(spec: SweepSpec, make_runner: Callable[[], Runner],
              progress: Callable[[SweepProgress], None] | None = None, plot: bool = True) -> SweepOutcome:
    """Run what is not cached yet, then aggregate and write the outputs.

    ``make_runner`` is called only when something is left to run, so a finished
    sweep re-run starts no Ray. Each result is cached as it arrives.
    """
    cells = spec.cells()
    cache = RunCache(spec.output / "runs")
    results: dict[str, dict[str, Any]] = {}
    pending: list[SimulationConfig] = []
    owner: dict[str, Cell] = {}
    for cell in cells:
        for config in cell.runs():
            key = run_key(config)
            owner[key] = cell
            hit = cache.get(config)
            if hit is None:
                pending.append(config)
            else:
                results[key] = hit
    cached = len(results)
    missing = {cell.index: sum(run_key(c) not in results for c in cell.runs()) for cell in cells}

    def report() -> None:
        if progress is not None:
            done = sum(m == 0 for m in missing.values())
            progress(SweepProgress(done, len(cells), len(results), len(owner)))

    report()
    if pending:
        with contextlib.closing(make_runner().map(pending)) as finished:
            for config, result in finished:
                key = run_key(config)
                cell = owner[key]
                if "error" in result:
                    raise SweepError(f"{spec.source}: cell {cell.index} ({cell.label}), seed {config.seed}: "
                                     f"{result['error']['message']}")
                cache.put(config, result)
                results[key] = result
                missing[cell.index] -= 1
                report()
    summary = aggregate(spec, cells, results)
    paths = write_outputs(summary, spec.output, plot=plot)
    return SweepOutcome(summary, ran=len(results) - cached, cached=cached, paths=paths)


# -- aggregation -------------------------------------------------------------------------


def final_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """Every numeric final metric of one run, flattened: ``mean_accuracy``,
    ``indegree.mean``, ``fedavg.mean_accuracy``, ``centralised.accuracy``, ``wall_seconds``."""
    out = dict(_numeric_leaves(result.get("final", {})))
    for name, base in result.get("baselines", {}).items():
        out.update(_numeric_leaves(base.get("final", base), f"{name}."))
    if _is_number(result.get("wall_seconds")):
        out["wall_seconds"] = float(result["wall_seconds"])
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numeric_leaves(data: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, float]]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _numeric_leaves(value, f"{prefix}{key}.")
        elif _is_number(value):
            yield f"{prefix}{key}", float(value)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single seed)."""
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def aggregate(spec: SweepSpec, cells: Sequence[Cell], results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One entry per cell: its axis values, resolved config, per-seed metrics, mean and std."""
    entries = []
    for cell in cells:
        runs = []
        for config in cell.runs():
            key = run_key(config)
            runs.append({"seed": config.seed, "key": key, "final": final_metrics(results[key])})
        names = list(dict.fromkeys(m for r in runs for m in r["final"]))
        stats = {m: mean_std([r["final"][m] for r in runs if m in r["final"]]) for m in names}
        config = config_dict(cell.config)
        del config["seed"]
        entries.append({
            "index": cell.index,
            "key": cell.key,
            "label": cell.label,
            "params": dict(cell.params),
            "config": config,
            "runs": runs,
            "mean": {m: s[0] for m, s in stats.items()},
            "std": {m: s[1] for m, s in stats.items()},
        })
    return {
        "name": spec.name,
        "source": spec.source,
        "gossipd": VERSION,
        "metric": spec.metric,
        "seeds": list(spec.seeds),
        "axes": {a: list(v) for a, v in spec.grid.items()},
        "base": dict(spec.base),
        "std": "sample standard deviation over seeds (ddof=1)",
        "cells": entries,
    }


def csv_text(summary: Mapping[str, Any]) -> str:
    """One row per cell: index, key, the axes, the seeds, then METRIC_mean and METRIC_std."""
    axes = list(summary["axes"])
    metrics = list(dict.fromkeys(m for c in summary["cells"] for m in c["mean"]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["cell", "key", *axes, "seeds", *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])
    for c in summary["cells"]:
        row = [c["index"], c["key"], *(show_value(c["params"][a]) for a in axes), len(c["runs"])]
        for m in metrics:
            row += [repr(c["mean"][m]), repr(c["std"][m])] if m in c["mean"] else ["", ""]
        writer.writerow(row)
    return buf.getvalue()


def write_outputs(summary: dict[str, Any], directory: Path, plot: bool = True) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / "sweep.json", "csv": directory / "sweep.csv"}
    atomic_write(paths["json"], (json.dumps(summary, indent=2) + "\n").encode(), mode=0o644)
    atomic_write(paths["csv"], csv_text(summary).encode(), mode=0o644)
    if plot:
        from gossipd.sim.sweep_plot import plot_sweep

        paths["png"] = directory / "sweep.png"
        plot_sweep(summary, paths["png"])
    return paths
