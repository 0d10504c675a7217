"""Plots of a simulation result: the task's headline metric (accuracy, or RMSE for
regression) against cycles and against bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_simulation(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    metric = result.get("metrics", ["accuracy"])[0]
    label = {"accuracy": "test accuracy", "rmse": "test RMSE"}.get(metric, f"test {metric}")
    fig, (ax_c, ax_b) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    curves = [("gossip", result["series"])]
    baselines = result.get("baselines", {})
    for name in ("local", "fedavg"):
        if name in baselines:
            curves.append((name, baselines[name]["series"]))
    for name, series in curves:
        cycles = [e["cycle"] for e in series]
        mean = [e[f"mean_{metric}"] for e in series]
        (line,) = ax_c.plot(cycles, mean, label=name)
        if name == "gossip":
            ax_c.fill_between(cycles, [e[f"min_{metric}"] for e in series], [e[f"max_{metric}"] for e in series],
                              color=line.get_color(), alpha=0.2, label="gossip min-max")
        if name != "local":
            sent = [e for e in series if e["bytes"] > 0]  # log axis: leave out the start
            ax_b.plot([e["bytes"] / 1e6 for e in sent], [e[f"mean_{metric}"] for e in sent],
                      label=name, color=line.get_color(), marker=".")
    if "centralised" in baselines:
        for ax in (ax_c, ax_b):
            ax.axhline(baselines["centralised"][metric], color="black", ls="--", lw=1, label="centralised")
    cfg = result["config"]
    fig.suptitle(f"{cfg['dataset']}, {cfg['model']}, {cfg['nodes']} nodes, {cfg['split']}, seed {cfg['seed']}")
    ax_c.set(xlabel="cycle", ylabel=f"{label} (mean over nodes)")
    ax_b.set(xlabel="model bytes sent (MB)", ylabel=label, xscale="log")
    for ax in (ax_c, ax_b):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if metric == "accuracy" else "upper right")
    fig.savefig(path, dpi=110)
    plt.close(fig)
