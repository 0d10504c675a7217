"""What a sweep runs: a TOML file -> SweepSpec -> validated cells, and their cache keys.

Nothing here knows the fields of ``SimulationConfig``: the TOML is checked
against the dataclass's own fields and type hints, then against its
``validate()``, so a field added to the config can be swept at once.

An axis is either a config field with its values (``drop = [0.0, 0.3]``) or a
*bundle* axis, named freely, whose values are tables that each set several
fields at once and are named by their ``name`` key (``method = [{name =
"gossip"}, {name = "fedavg", gossip = false, baselines = ["fedavg"]}]``):
what differs between the methods of an experiment is rarely one field.

A run's key hashes its resolved config (every field, seed included) and the
gossipd version; ``sweep.RunCache`` files results under it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gossipd.sim.config import ConfigError, SimulationConfig
from gossipd.version import VERSION

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
    grid: Mapping[str, tuple[Any, ...]]  # a bundle axis's values are Mappings (with "name")
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
        bundles = {a for a, v in grid_in.items() if isinstance(v, list) and v and isinstance(v[0], Mapping)}
        for axis in bundles:
            _check_bundle(source, axis, grid_in[axis], tuple(hints))
        for table, keys in (("base", base), ("grid", {k: v for k, v in grid_in.items() if k not in bundles})):
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
            params = tuple((a, v["name"] if isinstance(v, Mapping) else v) for a, v in zip(axes, values))
            label = ", ".join(f"{a}={show_value(v)}" for a, v in params) or "base"
            where = f"{self.source}: cell {index} ({label})"
            settings: list[tuple[str, str, Any]] = [("base", k, v) for k, v in self.base.items()]
            for axis, value in zip(axes, values):
                if isinstance(value, Mapping):
                    settings += [(f"grid {axis}", k, v) for k, v in value.items() if k != "name"]
                else:
                    settings.append(("grid", axis, value))
            kwargs: dict[str, Any] = {}
            set_by: dict[str, str] = {}
            for table, name, value in settings:
                if table != "base" and set_by.get(name, "base") != "base":
                    raise SweepError(f"{where}: {name} is set by both [{set_by[name]}] and [{table}]")
                set_by[name] = table
                try:
                    kwargs[name] = coerce(hints[name], value)
                except TypeError as exc:
                    at = where if table != "base" else f"{self.source}: [base]"
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


def _check_bundle(source: str, axis: str, values: list[Any], fields: tuple[str, ...]) -> None:
    """A bundle axis: tables, each with a unique string ``name`` and otherwise config fields."""
    names: set[str] = set()
    for i, value in enumerate(values):
        where = f"{source}: [grid] {axis}[{i}]"
        if not isinstance(value, Mapping):
            raise SweepError(f"{where}: an axis of tables takes only tables, got {value!r}")
        name = value.get("name")
        if not isinstance(name, str) or not name:
            raise SweepError(f"{where}: a table of settings needs a name = \"...\"")
        if name in names:
            raise SweepError(f"{where}: the name {name!r} is used twice")
        names.add(name)
        if "seed" in value:
            raise SweepError(f"{where}: seed: list the seeds as [sweep] seeds = [1, 2, 3]")
        _reject_unknown({k: v for k, v in value.items() if k != "name"}, fields,
                        lambda key: f"{where}: {key}: not a simulation setting")


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


def show_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "+".join(map(str, value)) or "none"
    return str(value)


# -- keys -----------------------------------------------------------------------------------


def config_dict(config: SimulationConfig) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _digest(data: Any) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, "gossipd": VERSION, **data}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def run_key(config: SimulationConfig) -> str:
    """Cache key of one run: a hash of the resolved config, seed included."""
    return _digest({"config": config_dict(config)})
