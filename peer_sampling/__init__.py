"""Peer sampling for gossipd: who a node talks to.

Pure state machines with no I/O, clock or global randomness: Cyclon (a dynamic,
self-healing random overlay) and static overlays for experiments. Both drivers
(the simulator and the daemon) feed them time and messages through the
:class:`PeerSampler` interface.
"""

from peer_sampling.cyclon import Cyclon, CyclonConfig
from peer_sampling.messages import Address, PeerDescriptor, ShuffleReply, ShuffleRequest
from peer_sampling.outcome import Outcome
from peer_sampling.sampler import PeerSampler
from peer_sampling.topology import (
    TOPOLOGIES,
    AllOthers,
    FullOverlay,
    FullSampler,
    StaticSampler,
    TopologySpec,
    build_edges,
    build_overlay,
    parse_topology,
)
from peer_sampling.view import View

__all__ = [
    "TOPOLOGIES",
    "Address",
    "AllOthers",
    "Cyclon",
    "CyclonConfig",
    "FullOverlay",
    "FullSampler",
    "Outcome",
    "PeerDescriptor",
    "PeerSampler",
    "ShuffleReply",
    "ShuffleRequest",
    "StaticSampler",
    "TopologySpec",
    "View",
    "build_edges",
    "build_overlay",
    "parse_topology",
]
