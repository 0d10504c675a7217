"""Checkpoints: the model, its age, the peer view and the counters, on disk.

Written atomically (temp file, fsync, rename, fsync of the directory), so a
crash leaves either the old or the new checkpoint. A checkpoint that is corrupt
or belongs to another cluster or architecture is moved aside and reported,
never silently used.

A sound file whose model is not (non-finite parameters, which a gossipd
before numeric safety could write) is not corruption: it loads, and the
daemon keeps its peer view and counters but starts a fresh model (the node
refuses to start from such a model). Offline tools (``load_any``) refuse it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from gossipd.files import atomic_write
from gossipd.core.state import ModelState

log = logging.getLogger(__name__)

FORMAT = "gossipd-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT = "checkpoint.msgpack"
NODE_ID = "node_id"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why."""


@dataclass
class Checkpoint:
    node_id: str
    cluster: str
    fingerprint: str
    state: ModelState
    view: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    saved_at: float = 0.0
    # How to rebuild the learner offline: spec, n_features, n_classes, dataset, share, split.
    meta: dict[str, Any] = field(default_factory=dict)


def encode_checkpoint(cp: Checkpoint) -> bytes:
    params = np.ascontiguousarray(cp.state.params, dtype="<f4")
    raw = params.tobytes()
    return msgpack.packb({
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "node_id": cp.node_id,
        "cluster": cp.cluster,
        "fingerprint": cp.fingerprint,
        "age": cp.state.age,
        "params": raw,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "view": cp.view,
        "counters": cp.counters,
        "saved_at": cp.saved_at or time.time(),
        "meta": cp.meta,
    }, use_bin_type=True)


def decode_checkpoint(data: bytes) -> Checkpoint:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CheckpointError(f"not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError("not a gossipd checkpoint")
    if obj.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format version {obj.get('version')!r}, this gossipd reads {FORMAT_VERSION}")
    try:
        raw = obj["params"]
        if not isinstance(raw, bytes) or len(raw) % 4:
            raise CheckpointError("parameters are not a float32 byte string")
        if hashlib.sha256(raw).hexdigest() != obj["sha256"]:
            raise CheckpointError("parameter checksum does not match (file damaged)")
        params = np.frombuffer(raw, dtype="<f4")
        state = ModelState(params, float(obj["age"]))
        return Checkpoint(
            node_id=str(obj["node_id"]),
            cluster=str(obj["cluster"]),
            fingerprint=str(obj["fingerprint"]),
            state=state,
            view=dict(obj.get("view") or {}),
            counters={str(k): int(v) for k, v in (obj.get("counters") or {}).items()},
            saved_at=float(obj.get("saved_at", 0.0)),
            meta=dict(obj.get("meta") or {}),
        )
    except KeyError as exc:
        raise CheckpointError(f"checkpoint lacks field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint field has a bad value ({exc})") from None


class Store:
    """The state directory of one daemon."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / CHECKPOINT

    def ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def node_id(self, configured: str = "") -> str:
        """The configured id, else the one kept here, else a new one (then kept)."""
        if configured:
            return configured
        path = self.dir / NODE_ID
        if path.is_file():
            existing = path.read_text().strip()
            if existing:
                return existing
        new = uuid.uuid4().hex[:12]
        atomic_write(path, (new + "\n").encode())
        return new

    def save(self, cp: Checkpoint) -> None:
        atomic_write(self.checkpoint_path, encode_checkpoint(cp))

    def load(self, *, cluster: str, fingerprint: str) -> Checkpoint | None:
        """The saved checkpoint if it is sound and ours; otherwise set it aside, None."""
        path = self.checkpoint_path
        if not path.exists():
            return None
        try:
            cp = decode_checkpoint(path.read_bytes())
            if cp.cluster != cluster:
                raise CheckpointError(f"checkpoint is of cluster {cp.cluster!r}, this node is in {cluster!r}")
            if cp.fingerprint != fingerprint:
                raise CheckpointError(f"checkpoint holds architecture {cp.fingerprint}, this node runs {fingerprint}")
        except (CheckpointError, OSError) as exc:
            aside = path.with_name(f"{path.name}.rejected-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(path, aside)
            log.warning("checkpoint %s not used: %s; moved to %s", path, exc, aside.name)
            return None
        return cp

    def load_any(self) -> Checkpoint:
        """For offline tools (``gossip export --state-dir``): read without ownership checks."""
        path = self.checkpoint_path
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"no checkpoint in {self.dir} (expected {path.name})") from None
        cp = decode_checkpoint(data)
        if not np.isfinite(cp.state.params).all():
            raise CheckpointError("the saved model's parameters contain NaN or Inf (written by a gossipd before "
                                  "numeric safety); the daemon starts a fresh model from this file")
        return cp
