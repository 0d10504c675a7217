"""Gossip-learning messages: plain values exchanged by nodes, no I/O.

``wire.py`` is the only place these become bytes and bytes become these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gossipd.core.scaling import FeatureStats
from peer_sampling.messages import Address, PeerDescriptor, ShuffleReply, ShuffleRequest

__all__ = [
    "Address",
    "ModelMessage",
    "PeerDescriptor",
    "Send",
    "ShuffleReply",
    "ShuffleRequest",
    "Message",
]


@dataclass(frozen=True, slots=True)
class ModelMessage:
    """A pushed model: flat float32 parameters, their age and architecture, and the
    scaling statistics when the network learns them (see core/scaling.py)."""

    sender: Address
    arch: str  # architecture fingerprint (learner.Learner.fingerprint)
    age: float
    params: np.ndarray  # 1-D float32
    stats: FeatureStats | None = None


Message = ModelMessage | ShuffleRequest | ShuffleReply


@dataclass(frozen=True, slots=True)
class Send:
    """An action returned by the node core: deliver ``message`` to ``peer``."""

    peer: Address
    message: Message
