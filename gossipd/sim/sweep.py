"""Parameter sweeps: a grid of simulation configurations x seeds, run, cached, aggregated.

The pipeline is ``SweepSpec`` (from a TOML file or a mapping) -> ``cells()``
(one ``SimulationConfig`` per grid point, validated) -> ``run_sweep`` (runs
every (cell, seed) not yet cached, on a ``Runner``: in-process, a process pool,
or Ray in ``sweep_ray``) -> ``aggregate`` (mean and std over seeds of every
numeric final metric) -> ``write_outputs`` (JSON, CSV, PNG).

Nothing here knows the fields of ``SimulationConfig``: the TOML is checked
against the dataclass's own fields and type hints and then against its
``validate()``, so a field added to the config can be swept at once.

Each run's result is cached as ``OUTPUT/runs/KEY.json``, KEY a hash of the
resolved config (seed included) and the gossipd version, written as soon as the
run finishes: an interrupted sweep resumes where it stopped, and a re-run
only aggregates.

Importing this module loads neither torch nor the engine (the CLI imports it).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import difflib
import hashlib
import io
import itertools
import json
import math
import tomllib
import types
import typing
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol

from gossipd.files import atomic_write
from gossipd.sim.config import ConfigError, SimulationConfig

# Bump when the layout of a cached run changes: old caches are then ignored, not misread.
CACHE_FORMAT = 1
SPEC_TABLES = ("sweep", "base", "grid")
SWEEP_KEYS = ("name", "seeds", "output", "metric")
DEFAULT_METRIC = "mean_accuracy"


class SweepError(ValueError):
    """A sweep that cannot run as written; the message names the file, field or cell."""


# -- the spec ------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSpec:
    """What to run: base config, grid axes (a cartesian product), seeds, where to write."""

    base: Mapping[str, Any]
    grid: Mapping[str, tuple[Any, ...]]
    seeds: tuple[int, ...]
    output: Path
    name: str = "sweep"
    metric: str = DEFAULT_METRIC  # plotted and shown first; every numeric metric is aggregated
    source: str = "<sweep>"  # the file it came from, for error messages

    @classmethod
    def from_toml(cls, path: Path | str, output: Path | None = None) -> SweepSpec:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise SweepError(f"{path}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SweepError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_mapping(data, source=str(path), default_name=path.stem, output=output)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<sweep>", default_name: str = "sweep",
                     output: Path | None = None) -> SweepSpec:
        """Check a parsed TOML document; every error names ``source`` and the table or field."""
        _reject_unknown(data, SPEC_TABLES, lambda key: f"{source}: unknown table [{key}]")
        for table in SPEC_TABLES:
            if not isinstance(data.get(table, {}), Mapping):
                raise SweepError(f"{source}: [{table}] must be a table")
        sweep = data.get("sweep", {})
        _reject_unknown(sweep, SWEEP_KEYS, lambda key: f"{source}: [sweep] {key}: unknown key")
        base = dict(data.get("base", {}))
        grid_in = data.get("grid", {})
        hints = _config_hints()
        for table, keys in (("base", base), ("grid", grid_in)):
            if "seed" in keys:
                raise SweepError(f"{source}: [{table}] seed: list the seeds as [sweep] seeds = [1, 2, 3]")
            _reject_unknown(keys, tuple(hints), lambda key, t=table: f"{source}: [{t}] {key}: not a simulation setting")
        grid: dict[str, tuple[Any, ...]] = {}
        for axis, values in grid_in.items():
            if not isinstance(values, list) or not values:
                raise SweepError(f"{source}: [grid] {axis} must be a non-empty list of values")
            grid[axis] = tuple(values)
        seeds = sweep.get("seeds", [1])
        if (not isinstance(seeds, list) or not seeds
                or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
            raise SweepError(f"{source}: [sweep] seeds must be a non-empty list of integers, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise SweepError(f"{source}: [sweep] seeds has duplicates: {seeds!r}")
        name = sweep.get("name", default_name)
        metric = sweep.get("metric", DEFAULT_METRIC)
        out = sweep.get("output", f"sweep-{name}")
        for key, value in (("name", name), ("metric", metric), ("output", out)):
            if not isinstance(value, str) or not value:
                raise SweepError(f"{source}: [sweep] {key} must be a non-empty string, got {value!r}")
        return cls(base=base, grid=grid, seeds=tuple(seeds), output=output if output is not None else Path(out),
                   name=name, metric=metric, source=source)

    def cells(self) -> list[Cell]:
        """Every grid point as a validated config, in the grid's order (last axis fastest)."""
        hints = _config_hints()
        axes = list(self.grid)
        cells = []
        for index, values in enumerate(itertools.product(*self.grid.values())):
            params = tuple(zip(axes, values))
            label = ", ".join(f"{a}={_show(v)}" for a, v in params) or "base"
            where = f"{self.source}: cell {index} ({label})"
            kwargs: dict[str, Any] = {}
            for table, items in (("base", self.base.items()), ("grid", params)):
                for name, value in items:
                    try:
                        kwargs[name] = coerce(hints[name], value)
                    except TypeError as exc:
                        at = where if table == "grid" else f"{self.source}: [base]"
                        raise SweepError(f"{at}: {name}: {exc}") from None
            config = SimulationConfig(**kwargs, seed=self.seeds[0])
            try:
                config.validate()
            except ConfigError as exc:
                raise SweepError(f"{where}: {exc}") from None
            cells.append(Cell(index, params, label, config, self.seeds))
        return cells


@dataclass(frozen=True)
class Cell:
    """One grid point: a resolved config, run once per seed."""

    index: int
    params: tuple[tuple[str, Any], ...]  # (axis, value) in grid order
    label: str
    config: SimulationConfig  # seed = the first seed; runs() sets each
    seeds: tuple[int, ...]

    @property
    def key(self) -> str:
        """The cell's identity: its resolved config without the seed, and its seeds."""
        data = config_dict(self.config)
        del data["seed"]
        return _digest({"config": data, "seeds": list(self.seeds)})

    def runs(self) -> list[SimulationConfig]:
        return [dataclasses.replace(self.config, seed=s) for s in self.seeds]


def _config_hints() -> dict[str, Any]:
    hints = typing.get_type_hints(SimulationConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(SimulationConfig) if f.init}


def _reject_unknown(data: Mapping[str, Any], known: Sequence[str], message: Callable[[str], str]) -> None:
    """SweepError(message(key) and the closest known name) for the first unknown key."""
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; expected one of {', '.join(known)}"
            raise SweepError(message(key) + hint)


def coerce(hint: Any, value: Any) -> Any:
    """A TOML value as the type a config field declares, or TypeError saying why not.

    TOML has no null: for an optional field the string ``"none"`` means None. A
    tuple field also takes the CLI's comma-separated string.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or value == "none"):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(arg, value)
            except TypeError:
                pass
        raise TypeError(f"expected {_type_name(hint)}, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(args[0], v) for v in value)
        if len(args) != len(value):
            raise TypeError(f"expected {len(args)} values, got {value!r}")
        return tuple(coerce(a, v) for a, v in zip(args, value))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:  # a type this module does not know: the config's validate() judges it
        return value
    raise TypeError(f"expected {_type_name(hint)}, got {value!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "+".join(map(str, value)) or "none"
    return str(value)


# -- keys and the cache ----------------------------------------------------------------


def config_dict(config: SimulationConfig) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _version() -> str:
    try:
        return metadata.version("gossipd")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _digest(data: Any) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, "gossipd": _version(), **data}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def run_key(config: SimulationConfig) -> str:
    """Cache key of one run: a hash of the resolved config, seed included."""
    return _digest({"config": config_dict(config)})


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
    import torch

    from gossipd.sim.simulation import simulate

    torch.set_num_threads(1)  # one task per core: tiny models, threads cost more than they give
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
        "gossipd": _version(),
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
        row = [c["index"], c["key"], *(_show(c["params"][a]) for a in axes), len(c["runs"])]
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
