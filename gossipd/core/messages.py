"""Gossip-learning messages: plain values exchanged by nodes, no I/O.

``wire.py`` is the only place these become bytes and bytes become these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gossipd.core.scaling import FeatureStats
from peer_sampling.messages import Address, PeerDescriptor, ShuffleReply, ShuffleRequest
from peer_sampling.outcome import Outcome

__all__ = [
    "Address",
    "ModelMessage",
    "Outcome",
    "Parts",
    "PeerDescriptor",
    "Send",
    "ShuffleReply",
    "ShuffleRequest",
    "Message",
]


@dataclass(frozen=True, slots=True)
class Parts:
    """The partitions a push carries (``core/partition.py``): of ``count``, those in
    ``index`` (increasing), each with its age in ``ages``."""

    count: int
    index: tuple[int, ...]
    ages: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class ModelMessage:
    """A pushed model: flat float32 parameters, their age and architecture, and the
    scaling statistics when the network learns them (see core/scaling.py).

    ``params`` holds exactly what the receiver decodes: the sender applies its
    ``codec``'s round trip (``core/codec.py``) before the message leaves, so a
    simulated message and a decoded one carry the same numbers. With ``parts``
    it holds only the carried partitions' values, partition after partition,
    and ``stats`` ride only with partition 0; ``age`` is then the sender's
    overall age (the mean of its partitions'), ``parts.ages`` what is merged by.
    """

    sender: Address
    arch: str  # architecture fingerprint (learner.Learner.fingerprint)
    age: float
    params: np.ndarray  # 1-D float32
    stats: FeatureStats | None = None
    codec: str = "fp32"
    parts: Parts | None = None  # None: the whole model, at ``age``


Message = ModelMessage | ShuffleRequest | ShuffleReply


@dataclass(frozen=True, slots=True)
class Send:
    """An action returned by the node core: deliver ``message`` to ``peer``."""

    peer: Address
    message: Message
