"""Communication efficiency: issue 12's acceptance tables (codecs, subsampling, token accounts).

    .venv/bin/python bench/comm.py                     # 100 nodes, 200 cycles, seeds 1-3, digits / logreg
    .venv/bin/python bench/comm.py --seeds 1 --cycles 100 --jobs 2
    .venv/bin/python bench/comm.py --variants fp32,int8      # of fp32, fp16, int8, p10, tokens
    .venv/bin/python bench/comm.py --variants sizes          # only the message sizes by model (no run)
    .venv/bin/python bench/comm.py --variants fp32,p10 --sub-cycles 1400   # subsampling over the whole run's bytes
    .venv/bin/python bench/comm.py --variants fp32,p10 --model mlp:64,32  # a larger model (header share smaller)

Every run is ``gossip simulate`` with one setting changed from plain push of
whole fp32 models. Prints three tables, each with its baseline measured in
the same run:

* **codecs**: total bytes and final mean accuracy of fp32, fp16 and int8
  (per seed and mean), the byte ratio to fp32 of whole messages (what the
  acceptance counts) and of the parameters' payload alone, one message split
  into its header (the same under every codec, about 140 bytes), its scaling
  statistics (coded: fp16 under fp16 and int8) and its parameters, how many
  received statistics the robust statistics merge refused (coded honest ones
  must fare as fp32's), and the accuracy difference in points. Acceptance: int8 <= 0.26x the bytes within 1
  point, fp16 within 0.2.
* **message sizes by model** (no run, ``MessageSizes``): the int8 / fp32
  ratio of one whole push of digits models of growing size, showing where the
  header and statistics stop mattering.
* **subsampling** (P = 10, one partition a push) against whole models, at
  equal total bytes: both curves' accuracy at the budgets the subsampled run
  reached (interpolated linearly in bytes). Acceptance: subsampled >= whole.
  A subsampled push costs ~0.14x a whole one, so in ``--cycles`` it spends
  ~1/7 of the whole run's bytes; ``--sub-cycles`` (~7x ``--cycles``) runs it
  long enough to compare over the whole run's budgets. A second column
  counts each subsampled push as 0.1x a whole push (header-free: its share of
  the parameters): the same run, accounted as if the ~150-byte header and the
  statistics shrank with the parameters. The gap between the two columns is
  what the per-message header costs a small model (digits/logreg: 650
  parameters, 260 bytes a partition); on a model of thousands of parameters
  the columns nearly meet (mlp:64,32: a one-partition push is 0.106x).
* **token accounts** (randomized, A = 10, C = 20) against plain push: messages
  per node per cycle and the first cycle at which the mean accuracy reaches
  ``--target`` (0.93; interpolated between evaluations). Acceptance: fewer
  cycles at about the same messages.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "fp16": {"codec": "fp16"},
    "int8": {"codec": "int8"},
    "p10": {"partitions": 10, "subsample": 0.1},
    "tokens": {"flow": "tokens:10,20"},
}
#: Models of growing size for the message-size table (digits: 64 features, 10 classes).
SIZE_MODELS = ("logreg", "mlp:64,32", "mlp:256,128", "cnn")


def run_one(job: tuple[str, int, int, int, int, str]) -> tuple[str, int, list[dict[str, float]], dict[str, Any],
                                                            float]:
    import torch

    from gossipd.sim.simulation import Simulation, SimulationConfig

    torch.set_num_threads(1)
    variant, seed, nodes, cycles, eval_every, model = job  # cycles: this variant's
    started = time.perf_counter()
    config = SimulationConfig(nodes=nodes, cycles=cycles, seed=seed, dataset="digits", model=model,
                              eval_every=eval_every, **VARIANTS[variant])
    sim = Simulation.create(config)
    result = sim.run()
    # Received scaling statistics the robust statistics merge refused, of those it judged: coded
    # statistics must not look like outliers where fp32 ones do not.
    judges = [node._merge_stats for node in sim.nodes]
    result["final"]["stats_judged"] = sum(j.accepted + j.rejected for j in judges)
    result["final"]["stats_refused"] = sum(j.rejected for j in judges)
    curve = [{"cycle": e["cycle"], "bytes": e["bytes"], "messages": e["messages"], "accuracy": e["mean_accuracy"]}
             for e in result["series"]]
    return variant, seed, curve, result["final"], time.perf_counter() - started


def message_sizes(model: str) -> Any:
    """``MessageSizes`` of a digits model, as the simulator counts its pushes."""
    from gossipd.sim.simulation import Simulation, SimulationConfig
    from gossipd.sim.sizes import MessageSizes

    return MessageSizes(Simulation.create(SimulationConfig(nodes=2, cycles=1, dataset="digits", model=model))
                        .nodes[0].learner)


def split_message(sizes: Any, codec: str) -> tuple[int, int, int]:
    """One whole push under ``codec``: (header, scaling statistics, parameters) bytes. The
    statistics are the two coded vectors (the rest of their map is counted in the header)."""
    from gossipd.core.codec import STATS_CODEC, payload_size

    params = payload_size(codec, sizes.learner.n_params)
    stats = 2 * payload_size(STATS_CODEC[codec], sizes.learner.stat_columns)
    return sizes.model_bytes(codec) - stats - params, stats, params


def print_sizes() -> None:
    from gossipd.core.codec import payload_size

    print("## message sizes by model (one whole push, digits, network-learned scaling)\n")
    print("| model | parameters | fp32 message (B) | int8 message (B) | header / statistics under int8 (B) "
          "| int8 x fp32, whole | int8 x fp32, parameters |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for model in SIZE_MODELS:
        sizes = message_sizes(model)
        n = sizes.learner.n_params
        head, stats, _ = split_message(sizes, "int8")
        fp32, int8 = sizes.model_bytes("fp32"), sizes.model_bytes("int8")
        print(f"| {model} | {n:,} | {fp32:,} | {int8:,} | {head} / {stats} | {int8 / fp32:.3f} "
              f"| {payload_size('int8', n) / payload_size('fp32', n):.3f} |")
    print()


def first_cycle(curve: list[dict[str, float]], target: float) -> float | None:
    """The cycle at which the accuracy first reaches ``target``, interpolated linearly."""
    for before, after in zip(curve, curve[1:]):
        if after["accuracy"] >= target:
            if before["accuracy"] >= target:
                return before["cycle"]
            share = (target - before["accuracy"]) / (after["accuracy"] - before["accuracy"])
            return before["cycle"] + share * (after["cycle"] - before["cycle"])
    return None


def at_bytes(curve: list[dict[str, float]], budget: float) -> float:
    return float(np.interp(budget, [p["bytes"] for p in curve], [p["accuracy"] for p in curve]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--sub-cycles", type=int, default=None,
                        help="cycles of the subsampled run (default: --cycles)")
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--target", type=float, default=0.93)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--model", default="logreg", help="a built-in digits model (e.g. mlp:64,32)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    if "sizes" in args.variants.split(","):
        print_sizes()
    if not variants:
        return
    sub_cycles = args.sub_cycles or args.cycles
    jobs = [(v, s, args.nodes, sub_cycles if v == "p10" else args.cycles, args.eval_every, args.model)
            for v in variants for s in seeds]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_one, jobs))
    curves = {(v, s): c for v, s, c, _, _ in results}
    finals = {(v, s): f for v, s, _, f, _ in results}
    print(f"digits / {args.model}, {args.nodes} nodes, {args.cycles} cycles (p10: {sub_cycles}), seeds {args.seeds}; "
          f"{len(jobs)} runs in {time.perf_counter() - started:.0f} s\n")

    def mean(variant: str, key: str) -> float:
        return float(np.mean([finals[variant, s][key] for s in seeds]))

    print("## codecs (whole models, plain push)\n")
    from gossipd.core.codec import payload_size

    sizes = message_sizes(args.model)
    n = sizes.learner.n_params
    print("Bytes are whole messages (header, scaling statistics and parameters), what the acceptance counts; the")
    print(f"parameter columns count the parameters' bytes alone ({n} parameters a model). One message, in bytes:")
    print("header / statistics / parameters. Refused: received statistics the robust statistics merge refused,")
    print("of those it judged (all seeds).\n")
    print("| codec | bytes (MB) | x fp32 | parameters (MB) | parameters x fp32 | one message (B) | statistics refused "
          "| accuracy per seed | mean | vs fp32 (points) |")
    print("|---|---:|---:|---:|---:|---|---:|---|---:|---:|")
    for v in (c for c in ("fp32", "fp16", "int8") if c in variants):
        accs = ", ".join(f"{finals[v, s]['mean_accuracy']:.4f}" for s in seeds)
        ratio = mean(v, "bytes") / mean("fp32", "bytes") if "fp32" in variants else float("nan")
        diff = 100 * (mean(v, "mean_accuracy") - mean("fp32", "mean_accuracy")) if "fp32" in variants else 0.0
        payload = mean(v, "messages") * payload_size(v, n)
        payload_ratio = payload / (mean("fp32", "messages") * payload_size("fp32", n)) if "fp32" in variants else 0.0
        head, stats, params = split_message(sizes, v)
        refused = " / ".join(str(sum(finals[v, s][k] for s in seeds)) for k in ("stats_refused", "stats_judged"))
        print(f"| {v} | {mean(v, 'bytes') / 1e6:.2f} | {ratio:.3f} | {payload / 1e6:.2f} | {payload_ratio:.3f} "
              f"| {head} / {stats} / {params} | {refused} | {accs} | {mean(v, 'mean_accuracy'):.4f} | {diff:+.2f} |")

    sub = "p10"
    if sub in variants and "fp32" in variants:
        print("\n## subsampling at equal total bytes (mean over seeds)\n")
        # Header-free accounting: each subsampled push counted as its share of a whole push's bytes
        # (0.1x for P = 10, one partition), as if a message's fixed header and its statistics shrank in
        # proportion with its parameters. It separates what the partitioned merge learns per value
        # sent from what the per-message header costs (see the docstring).
        share = sizes.model_bytes("fp32") / 10
        shared = {s: [dict(p, bytes=p["messages"] * share) for p in curves[sub, s]] for s in seeds}
        print("Header-free: the subsampled run with each push counted as 0.1x a whole push's bytes (its share of")
        print("the parameters) instead of its encoded length.\n")
        print("| total bytes (MB) | whole models (fp32) | P = 10, one partition a push | lead (points) "
              "| P = 10, header-free | lead (points) |")
        print("|---:|---:|---:|---:|---:|---:|")
        top = min(mean(sub, "bytes"), mean("fp32", "bytes"))
        # A longer subsampled run also keeps the small budgets of a --cycles one (about top / 7).
        tops = [top] if sub_cycles <= args.cycles else [top * args.cycles / sub_cycles, top]
        for budget in sorted({f * t for t in tops for f in (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)}):
            whole = float(np.mean([at_bytes(curves["fp32", s], budget) for s in seeds]))
            part = float(np.mean([at_bytes(curves[sub, s], budget) for s in seeds]))
            free = ("| - | - |" if budget > min(shared[s][-1]["bytes"] for s in seeds) else  # past that run's end
                    f"| {np.mean([at_bytes(shared[s], budget) for s in seeds]):.4f} "
                    f"| {100 * (np.mean([at_bytes(shared[s], budget) for s in seeds]) - whole):+.2f} |")
            print(f"| {budget / 1e6:.2f} | {whole:.4f} | {part:.4f} | {100 * (part - whole):+.2f} {free}")
        print(f"\n(whole models spent {mean('fp32', 'bytes') / 1e6:.1f} MB in {args.cycles} cycles, "
              f"the subsampled run {mean(sub, 'bytes') / 1e6:.1f} MB in {sub_cycles})")

    tok = "tokens"
    if tok in variants and "fp32" in variants:
        print(f"\n## token account against plain push: cycles to mean accuracy {args.target}\n")
        print("| flow | messages / node / cycle | cycles to target per seed | mean | final accuracy |")
        print("|---|---:|---|---:|---:|")
        for v, label in (("fp32", "push"), (tok, "tokens:10,20")):
            rate = mean(v, "messages") / (args.nodes * args.cycles)
            reach = [first_cycle(curves[v, s], args.target) for s in seeds]
            shown = ", ".join("-" if r is None else f"{r:.1f}" for r in reach)
            got = [r for r in reach if r is not None]
            avg = f"{np.mean(got):.1f}" if len(got) == len(reach) else "not reached"
            print(f"| {label} | {rate:.3f} | {shown} | {avg} | {mean(v, 'mean_accuracy'):.4f} |")


if __name__ == "__main__":
    main()
