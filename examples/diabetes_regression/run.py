"""Regression by gossip: predict disease progression (diabetes) on 50 nodes.

One command (from the repository root)::

    python examples/diabetes_regression/run.py

Each node holds a few patients; the nodes learn a linear model (or any
--model) by gossip with the scaling of features and target learned by the
network too, and are compared with the centralised model on the same test
rows (RMSE in the target's units, R²). Node 0's model is exported to ONNX
(input: the 10 raw features, output: ``value``) and checked with onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from gossipd.data import load_dataset  # noqa: E402
from gossipd.export import export_onnx, run_onnx, signature, signature_text  # noqa: E402
from gossipd.sim.baselines import centralised  # noqa: E402
from gossipd.sim.simulation import Simulation, SimulationConfig  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--model", default="logreg", help="logreg (linear regression) | mlp:H | python:...")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("diabetes.onnx"), help="ONNX file to write")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    ds = load_dataset("diabetes")
    config = SimulationConfig(dataset="diabetes", model=args.model, nodes=args.nodes, cycles=args.cycles,
                              eval_every=max(1, args.cycles // 4), seed=args.seed)
    sim = Simulation.create(config, ds)
    result = sim.run()
    f = result["final"]
    cen = centralised(ds, sim.learner, np.random.default_rng(args.seed))
    for e in result["series"]:
        print(f"cycle {e['cycle']:4d}  RMSE {e['mean_rmse']:7.2f} (nodes {e['min_rmse']:.2f}..{e['max_rmse']:.2f})"
              f"  R2 {e['mean_r2']:.3f}")
    ratio = f["mean_rmse"] / cen["rmse"]
    print(f"gossip RMSE {f['mean_rmse']:.2f} vs centralised {cen['rmse']:.2f}: {ratio:.3f}x; "
          f"R2 {f['mean_r2']:.3f} vs {cen['r2']:.3f}")

    node = sim.nodes[0]
    report = export_onnx(sim.learner, node.state, args.out, stats=node.stats, check_X=ds.X_test)
    value = run_onnx(args.out, ds.X_test)["value"]
    onnx_rmse = float(np.sqrt(np.mean((value - ds.y_test) ** 2)))
    print(f"wrote {args.out}: {signature_text(signature(args.out))}; onnxruntime RMSE {onnx_rmse:.2f}")
    summary = {"gossip_rmse": f["mean_rmse"], "centralised_rmse": cen["rmse"], "ratio": ratio,
               "gossip_r2": f["mean_r2"], "onnx_rmse": onnx_rmse, "parity": report.max_abs_diff}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
