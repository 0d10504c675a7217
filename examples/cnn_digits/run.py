"""Gossip-train your own CNN on digit images, then deploy one node's model as ONNX.

One command (from the repository root)::

    python examples/cnn_digits/run.py

It simulates --nodes nodes (seeded) learning ``model.py:make`` by gossip on
the bundled digits (8x8 images), compares them with a centralised model,
exports node 0's model to ONNX and checks the file with onnxruntime on RAW
pixel rows (the feature scaling is inside the file). Prints what it measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # run from a source checkout without installing

from gossipd.data import load_dataset  # noqa: E402
from gossipd.export import export_onnx, run_onnx, signature, signature_text  # noqa: E402
from gossipd.sim.baselines import centralised  # noqa: E402
from gossipd.sim.simulation import Simulation, SimulationConfig  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("cnn_digits.onnx"), help="ONNX file to write")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    digits = load_dataset("digits")
    config = SimulationConfig(dataset="digits", model=f"python:{HERE / 'model.py'}:make", nodes=args.nodes,
                              cycles=args.cycles, eval_every=max(1, args.cycles // 5), seed=args.seed)
    sim = Simulation.create(config, digits)
    result = sim.run()
    for e in result["series"]:
        print(f"cycle {e['cycle']:4d}  mean accuracy {e['mean_accuracy']:.4f}  "
              f"(min {e['min_accuracy']:.4f}, max {e['max_accuracy']:.4f})")
    cen = centralised(digits, sim.learner, np.random.default_rng(args.seed), epochs=10)
    print(f"centralised (same model, all data, 10 epochs): {cen['accuracy']:.4f}")

    node = sim.nodes[0]
    report = export_onnx(sim.learner, node.state, args.out, stats=node.stats, check_X=digits.X_test,
                         metadata={"gossipd.node_id": node.address})
    labels = run_onnx(args.out, digits.X_test)["label"]
    onnx_acc = float(np.mean(labels == digits.y_test))
    print(f"wrote {args.out}: {signature_text(signature(args.out))}")
    print(f"onnxruntime on raw pixels: accuracy {onnx_acc:.4f}, max |diff| vs torch {report.max_abs_diff:.2g}")
    summary = {"gossip_mean_accuracy": result["final"]["mean_accuracy"], "centralised_accuracy": cen["accuracy"],
               "onnx_accuracy": onnx_acc, "parity": report.max_abs_diff, "params": sim.learner.n_params}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
