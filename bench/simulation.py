"""Simulator throughput and memory by network size, batched engine against exact.

Run: ``python bench/simulation.py [--sizes 1000:100,10000:100,100000:50]
[--exact-up-to 1000] [--seed 1]``.

Each SIZE:CYCLES pair is one digits/logreg run with the defaults of ``gossip
simulate`` (Cyclon, robust merge, network scaling, an evaluation of every
node every 10 cycles, no baselines) on the batched engine, and also on the
exact engine for sizes up to ``--exact-up-to``, so the ratio between the two
is measured in the same invocation on the same machine.

Every run is a fresh child process, so its memory figure is its own: **peak
RSS** is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that child at the
end (the whole process: interpreter, numpy/torch, digits, the nodes, the
evaluation's chunks), and **base RSS** is the same child's RSS (``VmRSS``)
just before the simulation is built, so ``peak - base`` is what the network
itself costs. ``node-cycles/s`` is nodes x cycles / run wall time (building
the network is reported apart as setup). No assertions: figures only.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def one_run(nodes: int, cycles: int, engine: str, seed: int) -> dict:
    """One run in this process (the child); returns its figures."""
    from gossipd.sim.batched import BatchedSimulation
    from gossipd.sim.experiment import load_config_dataset
    from gossipd.sim.simulation import Simulation, SimulationConfig
    from gossipd.threads import one_compute_thread

    one_compute_thread()  # as `gossip simulate` does: tiny models, threads only cost
    config = SimulationConfig(dataset="digits", model="logreg", nodes=nodes, cycles=cycles, baselines=(),
                              seed=seed, engine=engine)
    dataset = load_config_dataset(config)
    base_kb = _rss_kb()
    cls = BatchedSimulation if engine == "batched" else Simulation
    t0 = time.perf_counter()
    sim = cls.create(config, dataset)
    setup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    final = sim.run()["final"]
    run_s = time.perf_counter() - t0
    return {"nodes": nodes, "cycles": cycles, "engine": engine, "setup_s": setup_s, "run_s": run_s,
            "node_cycles_per_s": nodes * cycles / run_s, "base_rss_mb": base_kb / 1024,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "accuracy": final["mean_accuracy"], "messages": final["messages"]}


def in_child(nodes: int, cycles: int, engine: str, seed: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", f"{nodes}:{cycles}:{engine}", "--seed", str(seed)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000:100,10000:100,100000:50", help="NODES:CYCLES,... (batched engine)")
    ap.add_argument("--exact-up-to", type=int, default=1000, help="also run the exact engine up to this size")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # NODES:CYCLES:ENGINE, in a child process
    args = ap.parse_args()
    if args.one:
        nodes, cycles, engine = args.one.split(":")
        print(json.dumps(one_run(int(nodes), int(cycles), engine, args.seed)))
        return

    print(f"simulation: digits/logreg, gossip simulate defaults (cyclon, robust merge, eval every 10), "
          f"seed {args.seed}; one child process per run")
    print(f"{'nodes':>7} {'cycles':>6} {'engine':>7} {'setup s':>8} {'run s':>8} {'node-cyc/s':>11} "
          f"{'base MB':>8} {'peak MB':>8} {'MB/1k nodes':>11} {'accuracy':>8} {'vs exact':>8}")
    for pair in args.sizes.split(","):
        nodes, cycles = (int(x) for x in pair.split(":"))
        rows = {"batched": in_child(nodes, cycles, "batched", args.seed)}
        if nodes <= args.exact_up_to:
            rows["exact"] = in_child(nodes, cycles, "exact", args.seed)
        for engine, r in rows.items():
            ratio = f"{rows['exact']['run_s'] / r['run_s']:>7.1f}x" if "exact" in rows else f"{'-':>8}"
            per_k = (r["peak_rss_mb"] - r["base_rss_mb"]) / nodes * 1000
            print(f"{nodes:>7} {cycles:>6} {engine:>7} {r['setup_s']:>8.2f} {r['run_s']:>8.2f} "
                  f"{r['node_cycles_per_s']:>11,.0f} {r['base_rss_mb']:>8.0f} {r['peak_rss_mb']:>8.0f} "
                  f"{per_k:>11.1f} {r['accuracy']:>8.4f} {ratio}", flush=True)


if __name__ == "__main__":
    main()
