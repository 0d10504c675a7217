"""Issue 11 acceptance figures at full size (the tests run smaller versions).

Run: ``python bench/acceptance_models.py [--seeds 1,2,3]``.

1. ONNX from a digits/logreg gossip node (100 nodes, 200 cycles): accuracy of
   the file's ``label`` on the RAW digits test rows with onnxruntime (no
   scaling by the caller), and whether ``label`` equals the node's own
   predictions.
2. A user-written conv + linear module (``tests/plugins/user_conv.py``, not
   part of the package) in ``gossip simulate`` on digits images,
   100 nodes, 200 cycles: mean accuracy, then ONNX parity of node 0.
3. Regression on diabetes, 50 nodes, 200 cycles: gossip RMSE against the
   centralised model's.

Prints figures; no assertions.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gossipd.threads import one_compute_thread  # noqa: E402
from gossipd.data import load_dataset  # noqa: E402
from gossipd.export import export_onnx, run_onnx  # noqa: E402
from gossipd.sim.baselines import centralised  # noqa: E402
from gossipd.sim.simulation import Simulation, SimulationConfig  # noqa: E402

# The user's module the acceptance tests use: a file outside the package.
USER_CONV = Path(__file__).resolve().parent.parent / "tests" / "plugins" / "user_conv.py"


def run(config: SimulationConfig, dataset) -> tuple[Simulation, dict, float]:
    t0 = time.perf_counter()
    sim = Simulation.create(config, dataset)
    result = sim.run()
    return sim, result, time.perf_counter() - t0


def onnx_check(sim: Simulation, dataset, path: Path) -> tuple[float, bool, float]:
    node = sim.nodes[0]
    report = export_onnx(sim.learner, node.state, path, stats=node.stats, check_X=dataset.X_test)
    labels = run_onnx(path, dataset.X_test)["label"]
    same = bool(np.array_equal(labels, sim.learner.predict(node.state, dataset.X_test, node.stats)))
    return float(np.mean(labels == dataset.y_test)), same, float(report.max_abs_diff)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    one_compute_thread()
    digits, diabetes = load_dataset("digits"), load_dataset("diabetes")
    tmp = Path(tempfile.mkdtemp(prefix="gossipd-acceptance-"))
    module = USER_CONV

    for seed in seeds:
        print(f"== seed {seed}")
        sim, r, secs = run(SimulationConfig(dataset="digits", model="logreg", nodes=100, cycles=200, seed=seed),
                           digits)
        acc, same, diff = onnx_check(sim, digits, tmp / "logreg.onnx")
        print(f"1. digits/logreg 100x200: gossip mean accuracy {r['final']['mean_accuracy']:.4f}; node 0 ONNX on "
              f"raw rows {acc:.4f}, label == node's predictions: {same}, max |diff| {diff:.2g}  ({secs:.0f} s)")

        sim, r, secs = run(SimulationConfig(dataset="digits", model=f"python:{module}:make", nodes=100, cycles=200,
                                            seed=seed), digits)
        acc, same, diff = onnx_check(sim, digits, tmp / "conv.onnx")
        f = r["final"]
        print(f"2. user conv module 100x200: mean accuracy {f['mean_accuracy']:.4f} (min {f['min_accuracy']:.4f}, "
              f"max {f['max_accuracy']:.4f}); node 0 ONNX {acc:.4f}, parity {diff:.2g}, labels equal: {same}"
              f"  ({secs:.0f} s)")

        sim, r, secs = run(SimulationConfig(dataset="diabetes", model="logreg", nodes=50, cycles=200, seed=seed),
                           diabetes)
        cen = centralised(diabetes, sim.learner, np.random.default_rng(seed))
        f = r["final"]
        print(f"3. diabetes 50x200: gossip RMSE {f['mean_rmse']:.2f} (R2 {f['mean_r2']:.3f}), centralised "
              f"{cen['rmse']:.2f} (R2 {cen['r2']:.3f}): ratio {f['mean_rmse'] / cen['rmse']:.3f}  ({secs:.0f} s)")


if __name__ == "__main__":
    main()
