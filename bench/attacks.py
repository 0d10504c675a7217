"""Attack table: honest nodes' accuracy for each attack kind under each merge rule.

    .venv/bin/python bench/attacks.py                 # issue 10's table: 100 nodes, 200 cycles, seeds 1-3
    .venv/bin/python bench/attacks.py --seeds 1 --jobs 2

Digits / logreg / iid, 20% attackers of each kind (``--fraction``), every merge
rule in ``--merges``. Prints one row per (kind, merge): the honest mean
accuracy per seed, their mean, and the difference to the same merge without
attackers (in points). The acceptance of issue 10 reads off this table: with
``robust`` every kind stays within 3 points of no attack, ``age`` collapses
under the ``age`` attack, and without attackers ``robust`` is within 0.5
points of ``age``.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

KINDS = ("none", "age", "age:zero", "scale:10", "signflip", "noise:1", "zero", "stats")


def run_one(job: tuple[str, str, int, int, int, float]) -> tuple[str, str, int, float, float]:
    import torch

    from gossipd.sim.simulation import Simulation, SimulationConfig

    torch.set_num_threads(1)
    kind, merge, seed, nodes, cycles, fraction = job
    attackers = None if kind == "none" else f"{fraction}:{kind}"
    started = time.perf_counter()
    config = SimulationConfig(nodes=nodes, cycles=cycles, seed=seed, merge=merge, attackers=attackers,
                              eval_every=cycles)
    final = Simulation.create(config).run()["final"]
    return kind, merge, seed, final["mean_accuracy"], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--merges", default="robust,age")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--fraction", type=float, default=0.2)
    parser.add_argument("--jobs", type=int, default=1, help="simulations run at once (one core each)")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    merges = args.merges.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    if "none" not in kinds:
        kinds.insert(0, "none")  # the reference every row is compared with
    jobs = [(k, m, s, args.nodes, args.cycles, args.fraction) for k in kinds for m in merges for s in seeds]
    started = time.perf_counter()
    acc: dict[tuple[str, str, int], float] = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for kind, merge, seed, accuracy, wall in pool.map(run_one, jobs):
            acc[kind, merge, seed] = accuracy
            print(f"  {kind:>9} {merge:>7} seed {seed}: {accuracy:.4f} ({wall:.1f} s)", flush=True)

    print(f"\ndigits / logreg / {args.nodes} nodes / {args.cycles} cycles / iid, "
          f"{args.fraction:.0%} attackers; honest nodes' mean accuracy")
    head = f"| {'attack':9} | {'merge':7} | " + " | ".join(f"seed {s}" for s in seeds) + " |   mean | vs no attack |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for kind in kinds:
        for merge in merges:
            values = [acc[kind, merge, s] for s in seeds]
            mean = sum(values) / len(values)
            ref = sum(acc["none", merge, s] for s in seeds) / len(seeds)
            delta = "" if kind == "none" else f"{100 * (mean - ref):+.2f} pt"
            print(f"| {kind:9} | {merge:7} | " + " | ".join(f"{v:.4f}" for v in values)
                  + f" | {mean:.4f} | {delta:>12} |")
    if {"robust", "age"} <= set(merges):
        gap = [100 * (acc["none", "robust", s] - acc["none", "age", s]) for s in seeds]
        print("\nno attackers, robust - age, per seed: " + ", ".join(f"{g:+.2f} pt" for g in gap))
    print(f"wall {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
