"""An experiment's figures: accuracy against total bytes, and against time, one panel per condition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLOURS = {"gossip": "tab:blue", "gossip-tokens": "tab:green", "gossip-subsampled": "tab:cyan",
           "fedavg": "tab:red", "fedavg-1pass": "tab:purple", "fedavg-subsampled": "tab:orange"}


def plot_curves(summary: dict[str, Any], axis: str, path: Path) -> None:
    """``axis``: ``bytes`` (log scale, MB) or ``time`` (cycles). Gossip solid, FedAvg dashed."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    conditions = list(dict.fromkeys((c["dataset"], c["split"], c["churn"]) for c in summary["curves"]))
    cols = 2 if len(conditions) > 1 else 1
    rows = -(-len(conditions) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 3.4 * rows), squeeze=False, constrained_layout=True)
    for n, condition in enumerate(conditions):
        ax = axes[n // cols][n % cols]
        curves = [c for c in summary["curves"] if (c["dataset"], c["split"], c["churn"]) == condition]
        finals = []
        for c in curves:
            # On the log bytes axis only points after the first byte: nothing is sent at cycle 0, nor,
            # under a token account, while the nodes save their first tokens.
            pts = [p for p in c["points"] if p["bytes"] > 0] if axis == "bytes" else c["points"]
            xs = [p["bytes"] / 1e6 for p in pts] if axis == "bytes" else [p["cycle"] for p in pts]
            ys = [p["accuracy"] for p in pts]
            finals.append(ys[-1] if ys else 0.0)
            ax.plot(xs, ys, label=c["method"], color=COLOURS.get(c["method"]),
                    linestyle="--" if c["method"].startswith("fedavg") else "-", linewidth=1.4)
        if axis == "bytes":
            ax.set_xscale("log")
        # Zoom on where the methods differ: from a little under the worst final accuracy.
        low = max(0.0, min(finals, default=0.0) - 0.15)
        ax.set_ylim(low, 1.0)
        ax.set(xlabel="total bytes sent (MB)" if axis == "bytes" else "time (cycles of Δ; FedAvg: one round a cycle)",
               ylabel="mean accuracy", title=f"{condition[0]}, {condition[1]}, churn {condition[2]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for n in range(len(conditions), rows * cols):
        axes[n // cols][n % cols].set_visible(False)
    fig.suptitle(f"{summary['experiment']}: accuracy against {'total bytes' if axis == 'bytes' else 'time'}")
    fig.savefig(path, dpi=100)
    plt.close(fig)
