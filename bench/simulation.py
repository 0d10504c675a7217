"""Simulator throughput: a 1000-node, 100-cycle digits/logreg run with Cyclon.

Run: ``python bench/simulation.py [--nodes 1000 --cycles 100 --seed 1]``.

Prints the wall time of the run and node updates per second (an update = a
model message delivered, merged and trained on: the sum of the nodes'
``merged`` counters). As an in-run yardstick it then times the same number of
bare ``Learner.update`` calls on one node's data, so the cost of everything
around training (event loop, peer sampling, merging, evaluation) shows as a
ratio. No assertions: figures only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gossipd.threads import one_compute_thread  # noqa: E402
from gossipd.core.merge import merge_age  # noqa: E402
from gossipd.sim.simulation import Simulation, SimulationConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    one_compute_thread()  # as `gossip simulate` does: tiny models, threads only cost
    config = SimulationConfig(dataset="digits", model="logreg", nodes=args.nodes, cycles=args.cycles,
                              sampler="cyclon", baselines=(), seed=args.seed)

    t0 = time.perf_counter()
    sim = Simulation.create(config)
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = sim.run()
    run_s = time.perf_counter() - t0

    updates = sum(node.counters.merged for node in sim.nodes)
    final = result["final"]
    evals = len(result["series"])

    # Yardstick: the same number of bare updates (merge included, since every
    # delivered model is merged first) on node 0's data, no event loop around them.
    node = sim.nodes[0]
    learner, data = sim.learner, node.data
    rng = np.random.default_rng(0)
    state = learner.initial_state()
    remote = learner.initial_state()
    t0 = time.perf_counter()
    for _ in range(updates):
        state = learner.update(state, data, rng, node.stats)
    bare_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    stats = node.stats
    for _ in range(updates):
        merge_age(state, remote)
        if stats is not None:  # network scaling: the statistics merge with every model
            stats.merge(stats)
    merge_s = time.perf_counter() - t0

    # Evaluation is part of the run but not of the gossip: time one round of it.
    X_test, y_test = torch.from_numpy(sim.dataset.X_test), torch.from_numpy(sim.dataset.y_test)
    t0 = time.perf_counter()
    for n in sim.nodes:
        learner.evaluate(n.state, X_test, y_test, n.stats)
    eval_round_s = time.perf_counter() - t0

    print(f"simulation: digits/logreg, {config.nodes} nodes, {config.cycles} cycles, sampler cyclon, "
          f"seed {config.seed}, torch threads {torch.get_num_threads()}")
    print(f"  setup (data, split, nodes)       {setup_s:8.2f} s")
    print(f"  run wall time                      {run_s:8.2f} s")
    print(f"  node updates (sum of merged)       {updates:8d}   ({updates / run_s:,.0f} updates/s)")
    print(f"  model messages / shuffle messages  {final['messages']:8d} / {final['sampling_messages']}")
    print(f"  final mean accuracy                {final['mean_accuracy']:8.4f}")
    print(f"  examples per node (node 0)         {len(data):8d}")
    print("yardstick (same number of calls, no event loop):")
    print(f"  bare Learner.update                {bare_s:8.2f} s   ({updates / bare_s:,.0f} updates/s)")
    print(f"  bare merge_age (+ stats merge)     {merge_s:8.2f} s")
    print(f"  evaluation, {evals} rounds of {config.nodes} nodes ~{evals * eval_round_s:5.2f} s")
    print(f"  run / bare update                  {run_s / bare_s:8.2f} x")
    print(f"  run / (bare update + merge + eval) {run_s / (bare_s + merge_s + evals * eval_round_s):8.2f} x")


if __name__ == "__main__":
    main()
