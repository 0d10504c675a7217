"""From declared dataclasses to settings: keys, environment, flags, errors, docs.

A configuration is a tree of frozen dataclasses whose fields are declared with
``peer_sampling.knobs.knob`` (default, documentation, check, optional ``flag``
and ``example``) or :func:`section` (a nested dataclass: a TOML table, or with
``flatten`` its fields lifted into the parent's table). :func:`settings_of`
walks the tree once; everything else reads that list:

- the TOML key (``gossip.interval``) and the environment variable
  (``GOSSIPD_GOSSIP_INTERVAL``) of every field;
- type conversion of TOML values, environment strings and flags;
- layered loading, later wins: defaults < TOML < environment < flags;
- validation: the dataclasses' own checks raise ``KnobError`` naming the
  field, which becomes a :class:`ConfigError` naming the key and its source;
- :func:`render_example`, the documented example file.

A field of a config dataclass that is not declared this way is an error at
import time: an undocumented setting cannot exist.
"""

from __future__ import annotations

import json
import math
import textwrap
import tomllib
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from peer_sampling.knobs import KnobError, tidy


class ConfigError(ValueError):
    """One bad setting: ``field`` is its key, ``source`` where the value came from."""

    def __init__(self, field: str, reason: str, source: str | None = None) -> None:
        where = f"{field} (from {source})" if source else field
        super().__init__(f"{where}: {reason}")
        self.field = field
        self.reason = reason
        self.source = source


def section(cls: type, doc: str, *, flatten: bool = False, flags: Mapping[str, str] | None = None,
            examples: Mapping[str, Any] | None = None) -> Any:
    """A nested config dataclass: the TOML table ``[name]`` (or, with ``flatten``,
    its fields in the parent's table). ``flags`` and ``examples`` give the
    driver's flag and example value of fields the class itself does not know
    about (e.g. a core dataclass knows nothing of ``--gossip-interval``)."""
    return field(default_factory=cls, metadata={
        "section": True, "doc": tidy(doc), "flatten": flatten,
        "flags": dict(flags or {}), "examples": dict(examples or {})})


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Setting:
    """One settable field, found by walking the config dataclasses."""

    key: str  # dotted TOML name, e.g. "gossip.interval"
    path: tuple[str, ...]  # attribute path from the root, e.g. ("model", "learner", "lr")
    table: str  # the TOML table it lives in ("" for the top level)
    type: Any  # the resolved annotation
    default: Any
    doc: str
    flag: str | None = None
    metavar: str | None = None
    example: Any = UNSET
    old_keys: tuple[str, ...] = ()
    old_flags: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The key within its table."""
        return self.key.rpartition(".")[2]

    @property
    def shown(self) -> Any:
        """The value the example file shows."""
        return self.default if self.example is UNSET else self.example


@dataclass(frozen=True)
class Table:
    """A TOML table: its dotted name ("" for the top level) and its doc."""

    name: str
    doc: str


def env_name(key: str, prefix: str) -> str:
    return prefix + key.replace(".", "_").upper()


def settings_of(root: type) -> tuple[dict[str, Setting], list[Table]]:
    """Every setting of ``root`` by key, and the tables in declaration order."""
    out: dict[str, Setting] = {}
    tables: list[Table] = [Table("", root.__doc__ or "")]
    _walk(root, "", (), "", {}, {}, out, tables)
    return out, tables


def _walk(cls: type, prefix: str, path: tuple[str, ...], table: str, flags: Mapping[str, str],
          examples: Mapping[str, Any], out: dict[str, Setting], tables: list[Table]) -> None:
    hints = get_type_hints(cls)
    for f in fields(cls):
        meta = f.metadata
        if meta.get("section"):
            sub = f.default_factory  # the section's dataclass
            if meta["flatten"]:
                _walk(sub, prefix, (*path, f.name), table, {**flags, **meta["flags"]},
                      {**examples, **meta["examples"]}, out, tables)
            else:
                name = prefix + f.name
                tables.append(Table(name, meta["doc"]))
                _walk(sub, name + ".", (*path, f.name), name, meta["flags"], meta["examples"], out, tables)
        elif "doc" in meta:
            key = prefix + f.name
            if not meta["doc"]:
                raise TypeError(f"{cls.__name__}.{f.name}: a setting needs its documentation")
            out[key] = Setting(
                key=key, path=(*path, f.name), table=table, type=hints[f.name], default=_default(f),
                doc=meta["doc"], flag=meta.get("flag") or flags.get(f.name), metavar=meta.get("metavar"),
                example=meta.get("example", examples.get(f.name, UNSET)),
                old_keys=tuple(meta.get("old_keys", ())), old_flags=tuple(meta.get("old_flags", ())))
        elif meta.get("setting", True):
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with knob(): "
                            "every setting carries its documentation and its check")


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise TypeError(f"{f.name}: a setting needs a default")


# -- types -------------------------------------------------------------------------


def _optional(tp: Any) -> Any | None:
    """X for ``X | None``, else None."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0]
    return None


def is_list(tp: Any) -> bool:
    return get_origin(tp) is tuple


def convert(setting: Setting, value: Any) -> Any:
    """``value`` from TOML (typed) or from text (environment, flag) as the setting's type.

    Raises ValueError with a sentence saying what was expected.
    """
    tp = setting.type
    inner = _optional(tp)
    if inner is not None:
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        tp = inner
    if is_list(tp):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of strings, got {value!r}")
        return tuple(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.strip().lower() in ("1", "true", "yes", "on")
        raise ValueError(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise ValueError(f"expected an integer, got {value!r}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise ValueError(f"expected a number, got {value!r}") from None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"expected a string, got {value!r}")
    raise TypeError(f"{setting.key}: unsupported setting type {tp!r}")


# -- loading ------------------------------------------------------------------------


@dataclass
class Layered:
    """Values by key and where each came from (a file, ``$VAR``, ``command line``)."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def set(self, setting: Setting, value: Any, source: str) -> None:
        try:
            self.values[setting.key] = convert(setting, value)
        except ValueError as exc:
            raise ConfigError(setting.key, str(exc), source) from None
        self.sources[setting.key] = source


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"--config {path}", "not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}", f"cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}", f"not valid TOML ({exc})") from None


def _flatten_toml(table: Mapping[str, Any], tables: set[str], source: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in table.items():
        dotted = prefix + key
        if dotted in tables:
            if not isinstance(value, dict):
                raise ConfigError(dotted, f"expected a [{dotted}] table", source)
            yield from _flatten_toml(value, tables, source, dotted + ".")
        else:
            yield dotted, value


def layer_file(layers: Layered, settings: Mapping[str, Setting], tables: list[Table], path: Path,
               warn: Callable[[str], None]) -> None:
    renamed = _renamed(settings)
    source = str(path)
    found: dict[str, Any] = {}
    for key, value in _flatten_toml(read_toml(path), {t.name for t in tables if t.name}, source):
        if key in renamed:
            new = renamed[key].key
            warn(f"{key} (in {path}) is deprecated; use {new}")
            found.setdefault(new, value)  # the new spelling wins when both are there
        elif key in settings:
            found[key] = value
        else:
            raise ConfigError(key, "unknown setting", source)
    for key, value in found.items():
        layers.set(settings[key], value, source)


def layer_env(layers: Layered, settings: Mapping[str, Setting], env: Mapping[str, str], prefix: str,
              warn: Callable[[str], None]) -> None:
    for setting in settings.values():
        name = env_name(setting.key, prefix)
        olds = [env_name(old, prefix) for old in setting.old_keys if env_name(old, prefix) in env]
        for old in olds:
            warn(f"${old} is deprecated; use ${name}")
        if name in env:
            layers.set(setting, env[name], f"${name}")
        elif olds:
            layers.set(setting, env[olds[0]], f"${olds[0]}")


def layer_overrides(layers: Layered, settings: Mapping[str, Setting], overrides: Mapping[str, Any],
                    source: str = "command line") -> None:
    for key, value in overrides.items():
        if key not in settings:
            raise ConfigError(key, "unknown setting", source)
        layers.set(settings[key], value, source)


def _renamed(settings: Mapping[str, Setting]) -> dict[str, Setting]:
    return {old: s for s in settings.values() for old in s.old_keys}


def build(root: type, layers: Layered) -> Any:
    """The ``root`` dataclass from the layered values; the first bad one raises ConfigError."""
    return _construct(root, "", layers)


def _construct(cls: Any, prefix: str, layers: Layered) -> Any:
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.metadata.get("section"):
            sub_prefix = prefix if f.metadata["flatten"] else prefix + f.name + "."
            kwargs[f.name] = _construct(f.default_factory, sub_prefix, layers)
        elif prefix + f.name in layers.values:
            kwargs[f.name] = layers.values[prefix + f.name]
    try:
        return cls(**kwargs)
    except KnobError as exc:
        key = prefix + exc.field
        raise ConfigError(key, exc.reason, layers.sources.get(key)) from None


def values_of(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Key -> value of every setting in a built config (the inverse of build)."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("section"):
            out.update(values_of(value, prefix if f.metadata["flatten"] else prefix + f.name + "."))
        elif "doc" in f.metadata:
            out[prefix + f.name] = value
    return out


# -- the documented example -----------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "inf" if value == math.inf else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a valid TOML basic string
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML spelling for {value!r}")


def _comment(text: str, width: int = 78) -> list[str]:
    lines: list[str] = []
    for i, para in enumerate(p for p in text.split("\n\n") if p.strip()):
        if i:
            lines.append("#")
        lines += textwrap.wrap(" ".join(para.split()), width - 2, initial_indent="# ", subsequent_indent="# ",
                               break_on_hyphens=False)
    return lines


def render_example(settings: Mapping[str, Setting], tables: list[Table], header: str, env_prefix: str) -> str:
    """The example TOML: every setting with its flag, variable, default and documentation."""
    lines = _comment(header)
    for table in tables:
        members = [s for s in settings.values() if s.table == table.name]
        if table.name:
            lines += ["", f"[{table.name}]"] + _comment(table.doc)
        for s in members:
            names = ", ".join(x for x in (s.flag, "$" + env_name(s.key, env_prefix)) if x)
            default = "unset" if s.default is None else toml_value(s.default)
            lines += ["", f"# {names}; default {default}"] + _comment(s.doc)
            if s.shown is None:
                lines.append(f"# {s.name} =")
            elif s.default is None:  # TOML has no null: an unset default stays a comment
                lines.append(f"# {s.name} = {toml_value(s.shown)}")
            else:
                lines.append(f"{s.name} = {toml_value(s.shown)}")
    return "\n".join(lines) + "\n"


def first_sentence(doc: str) -> str:
    head, sep, _ = doc.partition(". ")
    return head + ("." if sep else "")
