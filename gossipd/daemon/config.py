"""NodeConfig: everything a daemon is told, from one place.

Layers, later wins: defaults < TOML file < ``GOSSIPD_*`` environment < flags.
Every field has a dotted name (``gossip.interval``), an environment variable
(``GOSSIPD_GOSSIP_INTERVAL``) and, for the common ones, a flag. An invalid value
stops start-up with one line that names the field and where it came from.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gossipd.data import DataError, parse_share, parse_split
from gossipd.core.spec import LearnerConfig, parse_model_spec
from gossipd.core.node import GossipConfig
from peer_sampling.cyclon import CyclonConfig

ENV_PREFIX = "GOSSIPD_"


class ConfigError(ValueError):
    """One bad field: ``str(err)`` is the line printed before exiting."""


@dataclass(frozen=True)
class ModelSection:
    """spec: the architecture (``logreg``, ``mlp:64,32``); must match the whole cluster.
    The rest tune local SGD (see ``LearnerConfig``)."""

    spec: str = "logreg"
    lr: float = LearnerConfig.lr
    lr_decay: float = LearnerConfig.lr_decay
    batch_size: int = LearnerConfig.batch_size
    weight_decay: float = LearnerConfig.weight_decay

    def learner_config(self) -> LearnerConfig:
        return LearnerConfig(lr=self.lr, lr_decay=self.lr_decay, batch_size=self.batch_size,
                             weight_decay=self.weight_decay)


@dataclass(frozen=True)
class DataSection:
    """dataset: a bundled set (digits, breast_cancer, wine) or a .csv/.npz path.
    share: ``K/N``, this node holds part K of N of the training split (cut
    with one fixed seed, so N daemons hold disjoint parts without talking).
    split: how the N parts are cut: iid | labels | dirichlet:ALPHA.
    label_column: for CSV files (default: label/target/y/class, else the last)."""

    dataset: str = "digits"
    share: str = "1/1"
    split: str = "iid"
    label_column: str = ""


@dataclass(frozen=True)
class NodeConfig:
    """A daemon's configuration. Times are in seconds.

    listen: host:port to bind (port 0 picks a free port: tests).
    advertise: the URL peers use to reach this node; default http://listen.
        Required when listening on 0.0.0.0 or ::, which is not an address.
    join: seed peers' URLs; contacted when the view is empty.
    cluster: nodes only accept messages of their own cluster.
    state_dir: checkpoints and the node id live here.
    node_id: stable name of this node; default: generated once, kept in state_dir.
    admin_allow: client IPs allowed to call /v1/admin/*; ``*`` allows all.
    checkpoint_interval: seconds between checkpoints; shorter loses less on a
        crash at the cost of disk writes (each one fsyncs the whole model).
    eval_interval: minimum seconds between two evaluations on the local test
        share (they cost a forward pass over it).
    request_timeout: seconds before a peer that does not answer counts as failed.
    max_pending: received models waiting for the trainer before new ones get
        503; bounds memory and latency under load.
    seed: seeds this node's randomness (peer choice, batches); default: random.
    log_level: DEBUG | INFO | WARNING | ERROR.
    """

    listen: str = "127.0.0.1:7070"
    advertise: str = ""
    join: tuple[str, ...] = ()
    cluster: str = "default"
    state_dir: str = "./gossipd-state"
    node_id: str = ""
    admin_allow: tuple[str, ...] = ("127.0.0.1", "::1")
    checkpoint_interval: float = 5.0
    eval_interval: float = 2.0
    request_timeout: float = 5.0
    max_pending: int = 32
    seed: int = -1
    log_level: str = "INFO"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    peer_sampling: CyclonConfig = field(default_factory=CyclonConfig)

    @property
    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "data": DataSection,
    "gossip": GossipConfig,
    "peer_sampling": CyclonConfig,
}
# Flags of `gossipd` and the dotted field each sets.
FLAGS: dict[str, str] = {
    "listen": "listen", "advertise": "advertise", "join": "join", "cluster": "cluster",
    "state_dir": "state_dir", "node_id": "node_id", "model": "model.spec", "dataset": "data.dataset",
    "share": "data.share", "split": "data.split", "gossip_interval": "gossip.interval",
    "merge": "gossip.merge", "shuffle_interval": "peer_sampling.interval", "log_level": "log_level",
    "seed": "seed",
}
# Old spellings, still accepted; each use prints one line naming the new one.
DEPRECATED_KEYS: dict[str, str] = {"data.source": "data.dataset", "data.partition": "data.share"}
DEPRECATED_FLAGS: dict[str, str] = {"data": "dataset", "partition": "share"}


def warn_stderr(line: str) -> None:
    print(f"gossipd: {line}", file=sys.stderr)


def _defaults() -> dict[str, Any]:
    """Dotted name -> default value, for every settable field."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(NodeConfig):
        if f.name in SECTIONS:
            for sf in dataclasses.fields(SECTIONS[f.name]):
                out[f"{f.name}.{sf.name}"] = getattr(SECTIONS[f.name](), sf.name)
        else:
            out[f.name] = getattr(NodeConfig(), f.name)
    return out


DEFAULTS = _defaults()


def env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def _coerce(dotted: str, value: Any, source: str) -> Any:
    """Convert ``value`` to the type of the field's default, or raise ConfigError."""
    default = DEFAULTS[dotted]
    if default is None:  # optional numbers, e.g. peer_sampling.pending_timeout
        default = 0.0
    where = f"{dotted} (from {source})"
    try:
        if isinstance(default, tuple):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise TypeError("a list of strings")
            return tuple(value)
        if isinstance(default, bool):
            raise TypeError("unsupported")
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError("an integer")
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError("a number")
            return float(value)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError("a string")
            return value
    except (TypeError, ValueError) as exc:
        kind = exc.args[0] if isinstance(exc, TypeError) else f"a {type(default).__name__}"
        raise ConfigError(f"{where}: expected {kind}, got {value!r}") from None
    raise ConfigError(f"{where}: unsupported value {value!r}")


def _flatten(table: Mapping[str, Any], path: Path, warn: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{key} (from {path}): expected a [{key}] table")
            for sub, v in value.items():
                out[f"{key}.{sub}"] = v
        else:
            out[key] = value
    for old, new in DEPRECATED_KEYS.items():
        if old in out:
            warn(f"{old} (in {path}) is deprecated; use {new}")
            value = out.pop(old)
            out.setdefault(new, value)
    for dotted in out:
        if dotted not in DEFAULTS:
            raise ConfigError(f"{dotted} (from {path}): unknown setting")
    return out


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    warn: Callable[[str], None] = warn_stderr,
) -> NodeConfig:
    """Build a NodeConfig: defaults < file < environment < ``overrides`` (dotted names).

    ``warn`` receives one line per deprecated spelling used."""
    values: dict[str, Any] = dict(DEFAULTS)
    if path is not None:
        p = Path(path)
        try:
            table = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {p}: not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {p}: cannot read ({exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p}: not valid TOML ({exc})") from None
        for dotted, value in _flatten(table, p, warn).items():
            values[dotted] = _coerce(dotted, value, str(p))
    env = env if env is not None else {}
    for old, new in DEPRECATED_KEYS.items():
        if env_name(old) in env:
            warn(f"${env_name(old)} is deprecated; use ${env_name(new)}")
            if env_name(new) not in env:
                values[new] = _coerce(new, env[env_name(old)], f"${env_name(old)}")
    for dotted in DEFAULTS:
        name = env_name(dotted)
        if name in env:
            values[dotted] = _coerce(dotted, env[name], f"${name}")
    for dotted, value in (overrides or {}).items():
        if dotted not in DEFAULTS:
            raise ConfigError(f"{dotted}: unknown setting")
        values[dotted] = _coerce(dotted, value, "command line")
    return build(values)


def build(values: Mapping[str, Any]) -> NodeConfig:
    """Construct and validate; every error names its dotted field."""
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        kwargs = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(name + ".")}
        try:
            sections[name] = cls(**kwargs)
        except ValueError as exc:
            named = [f.name for f in dataclasses.fields(cls) if f.name in str(exc)]
            where = f"{name}.{max(named, key=len)}" if named else name
            raise ConfigError(f"{where}: {exc}") from None
    top = {k: v for k, v in values.items() if "." not in k}
    config = NodeConfig(**top, **sections)
    validate(config)
    return config


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port_s = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ConfigError(f"listen: expected HOST:PORT (e.g. 127.0.0.1:7070), got {listen!r}")
    return host, int(port_s)


def check_peer_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what}: expected an http(s)://HOST:PORT URL, got {url!r}")
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"{what}: bad port in {url!r}") from None
    return url.rstrip("/")


def validate(config: NodeConfig) -> None:
    host, _ = split_listen(config.listen)
    if config.advertise:
        check_peer_url(config.advertise, "advertise")
    elif host in ("0.0.0.0", "::"):
        raise ConfigError(f"advertise: required when listen is {config.listen} (peers need a reachable URL)")
    for url in config.join:
        check_peer_url(url, "join")
    if not config.cluster or len(config.cluster) > 128:
        raise ConfigError(f"cluster: expected 1 to 128 characters, got {config.cluster!r}")
    if not config.state_dir:
        raise ConfigError("state_dir: must not be empty")
    for name in ("checkpoint_interval", "eval_interval", "request_timeout"):
        v = getattr(config, name)
        if not (math.isfinite(v) and v > 0):
            raise ConfigError(f"{name}: must be a number > 0, got {v!r}")
    if config.max_pending < 1:
        raise ConfigError(f"max_pending: must be >= 1, got {config.max_pending}")
    if config.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log_level: expected DEBUG, INFO, WARNING or ERROR, got {config.log_level!r}")
    try:
        parse_model_spec(config.model.spec)
    except ValueError as exc:
        raise ConfigError(f"model.spec: {exc}") from None
    try:
        parse_share(config.data.share)
    except DataError as exc:
        raise ConfigError(f"data.share: {exc}") from None
    try:
        parse_split(config.data.split)
    except DataError as exc:
        raise ConfigError(f"data.split: {exc}") from None
    # data.dataset is checked when the data is loaded (it may be a file path).
