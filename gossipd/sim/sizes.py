"""Bytes a message takes on the wire, as the simulator and the baselines count them.

The exact encoder's length (``wire.encoded_model_size``), computed once per
shape and cached: it depends on the codec, on how many partitions a push
carries and how many values they hold, and on whether the scaling statistics
ride along, never on the values or ages. The batched engine and FedAvg count
with the same object, so every driver's bytes are the daemon's.
"""

from __future__ import annotations

from gossipd import wire
from gossipd.core.learner import Learner
from gossipd.core.messages import ModelMessage, PeerDescriptor, ShuffleRequest
from gossipd.core.partition import Layout

__all__ = ["MessageSizes"]

_SENDER = "n0000"  # simulated addresses are n0 .. n9999; the widest is counted
_CLUSTER = "sim"


class MessageSizes:
    """Encoded sizes for one learner's messages, cached per (codec, partitions carried, values, stats)."""

    def __init__(self, learner: Learner, partitions: int = 1) -> None:
        self.learner = learner
        self.layout = Layout(learner.n_params, partitions) if partitions > 1 else None
        self._model: dict[tuple[str, int, int, bool], int] = {}
        self._shuffle: dict[int, int] = {}

    def model_bytes(self, codec: str, index: tuple[int, ...] | None = None, stats: bool | None = None) -> int:
        """A push under ``codec`` of the partitions ``index`` (None: the whole model). ``stats``:
        whether the scaling statistics ride along (default: as a node sends them, with the whole
        model or partition 0, when the network learns them)."""
        if stats is None:
            stats = self.learner.scaling.learned and (index is None or index[0] == 0)
        if index is None or self.layout is None:
            return self._size(codec, 0, self.learner.n_params, stats)
        return self._size(codec, len(index), self.layout.size_of(index), stats)

    def of(self, msg: ModelMessage) -> int:
        """The bytes of ``msg`` as the wire would write it."""
        carried = len(msg.parts.index) if msg.parts is not None else 0
        return self._size(msg.codec, carried, int(msg.params.shape[0]), msg.stats is not None)

    def _size(self, codec: str, carried: int, values: int, stats: bool) -> int:
        key = (codec, carried, values, stats)
        size = self._model.get(key)
        if size is None:
            partitions = self.layout.count if self.layout is not None else 1
            size = self._model[key] = wire.encoded_model_size(
                values, _SENDER, self.learner.fingerprint, _CLUSTER, self.learner.stat_columns if stats else 0,
                codec=codec, parts=carried, partitions=partitions)
        return size

    def shuffle(self, entries: int) -> int:
        size = self._shuffle.get(entries)
        if size is None:
            probe = ShuffleRequest(_SENDER, tuple(PeerDescriptor(f"n{i:04d}", 1) for i in range(entries)))
            size = self._shuffle[entries] = wire.encoded_size(probe, cluster=_CLUSTER)
        return size
