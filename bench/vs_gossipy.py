"""Paired speed comparison against the public gossipy library (gossipy-dfl 0.0.1).

Run: ``python bench/vs_gossipy.py --gossipy-python /path/to/venv/bin/python
[--nodes 1000 --rounds 100 --seed 1]``.

The same task on both sides, in one run on one machine: digits, logistic
regression (64 -> 10), ``--nodes`` nodes each holding an iid share of the
training split, push gossip over a full overlay, age-weighted merge then one
local SGD pass per received model, ``--rounds`` rounds (one round = one
gossip period Δ in which every node pushes once), and an evaluation of every
node on the test set at the end only. gossipy runs in its own interpreter
(``--gossipy-python``: a scratch venv with ``gossipy-dfl==0.0.1``,
``torch==2.13.0`` and ``scikit-learn``; it is not a dependency of this
project; its unused ``torchvision`` import is stubbed), gossipd in this one; each side's wall time covers building the
network and simulating, not interpreter start-up, imports or loading the data
set (both load digits before their clock starts; gossipd's time also holds its
final evaluation of every node, which gossipy's does not).

Prints both wall times, both final mean accuracies and the ratio. No
assertions: figures only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Runs inside the gossipy venv. gossipy's GossipSimulator evaluates after every
# round; ``sampling_eval`` makes that one node per round (the cost would
# otherwise swamp the comparison), and the final evaluation of every node is
# done here after the run, outside the timed part.
GOSSIPY_DRIVER = r"""
import json, sys, time, types
# gossipy.data imports torchvision at module level, only for its CIFAR10 and
# FashionMNIST downloaders, which this task never calls; PyPI's torchvision does
# not import beside torch 2.13's CPU build, so an empty stand-in takes its place.
sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
import numpy as np, torch
from sklearn.datasets import load_digits
from sklearn.preprocessing import StandardScaler
from sklearn.model_selection import train_test_split
from gossipy import set_seed
from gossipy.core import AntiEntropyProtocol, CreateModelMode, StaticP2PNetwork, ConstantDelay
from gossipy.data import DataDispatcher
from gossipy.data.handler import ClassificationDataHandler
from gossipy.model.handler import TorchModelHandler
from gossipy.model.nn import LogisticRegression
from gossipy.node import GossipNode
from gossipy.simul import GossipSimulator

nodes, rounds, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
set_seed(seed)
X, y = load_digits(return_X_y=True)
X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
sc = StandardScaler().fit(X_tr)
X_tr, X_te = sc.transform(X_tr), sc.transform(X_te)
t0 = time.perf_counter()
handler = ClassificationDataHandler(torch.tensor(X_tr, dtype=torch.float32), torch.tensor(y_tr),
                                    torch.tensor(X_te, dtype=torch.float32), torch.tensor(y_te))
dispatcher = DataDispatcher(handler, n=nodes, eval_on_user=False, auto_assign=True)
net = LogisticRegression(64, 10)
topology = StaticP2PNetwork(nodes, None)
round_len = 100
sim_nodes = {
    i: GossipNode(idx=i, data=dispatcher[i], round_len=round_len,
                  model_handler=TorchModelHandler(net=net, optimizer=torch.optim.SGD,
                                                  optimizer_params={"lr": 0.1, "weight_decay": 1e-4},
                                                  criterion=torch.nn.functional.cross_entropy,
                                                  create_model_mode=CreateModelMode.MERGE_UPDATE,
                                                  batch_size=32),
                  p2p_net=topology, sync=False)
    for i in range(nodes)
}
sim = GossipSimulator(nodes=sim_nodes, data_dispatcher=dispatcher, delta=round_len,
                      protocol=AntiEntropyProtocol.PUSH, delay=ConstantDelay(0),
                      sampling_eval=1.0 / nodes)
sim.init_nodes(seed=seed)
sim.start(n_rounds=rounds)
wall = time.perf_counter() - t0
Xe, ye = dispatcher.get_eval_set()
accs = [n.model_handler.evaluate((Xe, ye))["accuracy"] for n in sim_nodes.values()]
print(json.dumps({"wall_seconds": wall, "mean_accuracy": float(np.mean(accs))}))
"""


def run_gossipy(python: str, nodes: int, rounds: int, seed: int) -> dict:
    out = subprocess.run([python, "-c", GOSSIPY_DRIVER, str(nodes), str(rounds), str(seed)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"gossipy run failed ({python}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_gossipd(nodes: int, rounds: int, seed: int, engine: str | None) -> dict:
    import torch

    from gossipd.sim.config import SimulationConfig
    from gossipd.sim.experiment import load_config_dataset
    from gossipd.sim.simulation import simulate

    torch.set_num_threads(1)
    fields = dict(dataset="digits", model="logreg", nodes=nodes, cycles=rounds, sampler="full",
                  eval_every=rounds, seed=seed)
    if engine is not None:
        fields["engine"] = engine
    config = SimulationConfig(**fields)
    dataset = load_config_dataset(config)  # as gossipy's side loads and scales digits before its clock starts
    t0 = time.perf_counter()
    result = simulate(config, dataset=dataset)
    return {"wall_seconds": time.perf_counter() - t0, "mean_accuracy": result["final"]["mean_accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gossipy-python", required=True, help="python of a venv with gossipy-dfl==0.0.1")
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--engine", default=None, help="gossipd simulation engine (default: gossip simulate's)")
    args = ap.parse_args()

    ours = run_gossipd(args.nodes, args.rounds, args.seed, args.engine)
    theirs = run_gossipy(args.gossipy_python, args.nodes, args.rounds, args.seed)
    print(f"digits/logreg, {args.nodes} nodes, {args.rounds} rounds, full overlay, seed {args.seed}")
    print(f"  gossipd  {ours['wall_seconds']:8.2f} s   mean accuracy {ours['mean_accuracy']:.4f}"
          f"   (engine {args.engine or 'default'})")
    print(f"  gossipy  {theirs['wall_seconds']:8.2f} s   mean accuracy {theirs['mean_accuracy']:.4f}")
    print(f"  gossipd is {theirs['wall_seconds'] / ours['wall_seconds']:.1f}x faster")


if __name__ == "__main__":
    main()
