"""Per-update cost of the autograd (torch module) path against the hand-written one.

Run: ``python bench/learner.py [--hidden 32 --examples 13,32,128 --repeat 2000]``.

The same MLP (digits, 64 -> hidden -> 10, ReLU) trained two ways on the same
examples: by ``LinearStackLearner`` (``mlp:H``, hand-written backprop over one
flat tensor) and by ``ModuleLearner`` (an ``nn.Sequential`` from a factory,
autograd through ``torch.func.functional_call``). One update = one local pass
of mini-batch SGD over a node's examples, as a gossip node does per received
model; 13 examples is a node's share of digits among 100 nodes. Both run with
network scaling, as the simulator does by default. Prints microseconds per
update and the ratio autograd / hand-written, measured in the same run.
No assertions: figures only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gossipd.threads import one_compute_thread  # noqa: E402
from gossipd.core.learner import LocalData, make_learner  # noqa: E402
from gossipd.core.scaling import Scaling  # noqa: E402
from gossipd.core.spec import LearnerConfig, ModelSpec, Schema  # noqa: E402
from gossipd.core.torch_module import ModuleLearner  # noqa: E402
from gossipd.data import load_dataset  # noqa: E402


def per_update(learner, data: LocalData, stats, repeat: int) -> float:
    rng = np.random.default_rng(0)
    state = learner.initial_state()
    for _ in range(20):  # warm-up: allocator, first-call paths
        state = learner.update(state, data, rng, stats)
    best = float("inf")
    for _ in range(3):  # best of three: the machine is shared
        t0 = time.perf_counter()
        for _ in range(repeat):
            state = learner.update(state, data, rng, stats)
        best = min(best, (time.perf_counter() - t0) / repeat)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--examples", default="13,32,128", help="examples per update (comma list)")
    ap.add_argument("--repeat", type=int, default=2000)
    args = ap.parse_args()
    one_compute_thread()  # as the simulator and the daemon do

    ds = load_dataset("digits")
    schema = Schema.classification(ds.n_features, ds.n_classes)  # flat rows for both
    config = LearnerConfig(batch_size=32)
    h = args.hidden
    by_hand = make_learner(f"mlp:{h}", schema, config, scaling=Scaling.network())

    def factory(s: Schema) -> nn.Module:
        return nn.Sequential(nn.Linear(s.n_features, h), nn.ReLU(), nn.Linear(h, s.n_outputs))

    autograd = ModuleLearner(ModelSpec("python", target="bench", attr="mlp"), schema, config, Scaling.network(),
                             factory=factory)
    assert autograd.n_params == by_hand.n_params

    print(f"per-update cost, digits MLP 64-{h}-10 ({by_hand.n_params} params), batch 32, SGD, network scaling, "
          f"torch {torch.__version__}, 1 thread")
    print(f"  {'examples':>8}  {'hand-written':>14}  {'autograd':>12}  {'autograd / hand':>16}")
    for n in (int(x) for x in args.examples.split(",")):
        data = LocalData.from_numpy(ds.X_train[:n], ds.y_train[:n], ds.n_classes)
        stats = by_hand.initial_stats(data)
        hand_s = per_update(by_hand, data, stats, args.repeat)
        auto_s = per_update(autograd, data, stats, max(1, args.repeat // 4))
        print(f"  {n:>8}  {hand_s * 1e6:>11.1f} us  {auto_s * 1e6:>9.1f} us  {auto_s / hand_s:>15.1f}x")


if __name__ == "__main__":
    main()
