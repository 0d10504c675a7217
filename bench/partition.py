"""Cut and heal: how long a network split in two takes to become one overlay again.

    .venv/bin/python bench/partition.py                       # issue 10: 1000 nodes, --cut 0.5@50-80
    .venv/bin/python bench/partition.py --nodes 20 --cut 0.5@10-70 --cycles 90

Runs the simulator with the default settings (reseeding every 5 shuffle
periods) and, for comparison, with reseeding off (``reseed_interval = inf``,
the old default). Prints, every 2 cycles around the cut, the largest
component of the links that can carry a message (cross-cut links do not count
while the cut lasts), the view entries pointing across the cut, and, per run,
the cycles from the end of the cut until the overlay is one component again.
"""

from __future__ import annotations

import argparse
import math
import time


def heal(nodes: int, cycles: int, cut: str, seed: int, reseed: float | None) -> tuple[list[dict], float]:
    import torch

    from gossipd.sim.simulation import Simulation, SimulationConfig

    torch.set_num_threads(1)
    started = time.perf_counter()
    config = SimulationConfig(nodes=nodes, cycles=cycles, cut=cut, seed=seed, eval_every=2, reseed_interval=reseed)
    return Simulation.create(config).run()["series"], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=110)
    parser.add_argument("--cut", default="0.5@50-80")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    start, end = (float(x) for x in args.cut.split("@")[1].split("-"))
    runs = {"default": None, "reseed off": math.inf}
    results = {name: heal(args.nodes, args.cycles, args.cut, args.seed, ri) for name, ri in runs.items()}
    print(f"{args.nodes} nodes, --cut {args.cut}, seed {args.seed}: largest component (cut links)")
    print("| cycle | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    series = {name: {e["cycle"]: e for e in s} for name, (s, _) in results.items()}
    for c in range(max(0, int(start) - 4), args.cycles + 1, 2):
        cells = [f"{series[n][c]['largest_component_fraction']:.3f} ({series[n][c]['cut_links']})" for n in results]
        print(f"| {c} | " + " | ".join(cells) + " |")
    for name, (s, wall) in results.items():
        healed = [e["cycle"] for e in s if e["cycle"] >= end and e["largest_component_fraction"] == 1.0]
        after = f"{healed[0] - end:.0f} cycles after the cut" if healed else "never (within the run)"
        print(f"{name}: one component {after}; wall {wall:.0f} s")


if __name__ == "__main__":
    main()
