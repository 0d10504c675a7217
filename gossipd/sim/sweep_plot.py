"""The sweep's PNG: the cells side by side (mean ± std over seeds) and against bytes sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_BARS = 40  # past this the labels are unreadable: show the best cells only


def chosen_metric(summary: dict[str, Any]) -> str | None:
    """The spec's metric if any cell has it, else the first that differs between runs."""
    names = list(dict.fromkeys(m for c in summary["cells"] for m in c["mean"]))
    if summary["metric"] in names:
        return summary["metric"]
    for name in names:
        values = {r["final"].get(name) for c in summary["cells"] for r in c["runs"]}
        if len(values) > 1:
            return name
    return names[0] if names else None


def plot_sweep(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    metric = chosen_metric(summary)
    cells = [c for c in summary["cells"] if metric in c["mean"]]
    shown = sorted(cells, key=lambda c: c["mean"][metric], reverse=True)[:MAX_BARS]
    with_bytes = [c for c in cells if "bytes" in c["mean"]]
    fig, axes = plt.subplots(1, 2 if with_bytes else 1, figsize=(12, max(3.0, 1.2 + 0.32 * len(shown))),
                             constrained_layout=True, squeeze=False)
    ax = axes[0][0]
    y = list(range(len(shown)))[::-1]  # best on top
    # Points, not bars: the axis is zoomed on the spread, and a bar's length would mislead.
    ax.errorbar([c["mean"][metric] for c in shown], y, xerr=[c["std"][metric] for c in shown],
                fmt="o", color="tab:blue", capsize=3)
    ax.set_yticks(y, [c["label"] for c in shown], fontsize=8)
    low = min((c["mean"][metric] - c["std"][metric] for c in shown), default=0.0)
    high = max((c["mean"][metric] + c["std"][metric] for c in shown), default=1.0)
    pad = 0.05 * (high - low) or 0.01
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(-0.7, len(shown) - 0.3)
    title = f"{metric} (mean ± std over {len(summary['seeds'])} seeds)"
    if len(cells) > len(shown):
        title += f": best {len(shown)} of {len(cells)} cells"
    ax.set(xlabel=metric, title=title)
    ax.grid(axis="x", alpha=0.3)
    if with_bytes:
        bx = axes[0][1]
        for c in with_bytes:
            bx.errorbar(c["mean"]["bytes"] / 1e6, c["mean"][metric], xerr=c["std"]["bytes"] / 1e6,
                        yerr=c["std"][metric], fmt="o", capsize=3, label=c["label"] if len(with_bytes) <= 12 else None)
        bx.set(xlabel="model bytes sent (MB)", ylabel=metric, title="cost against outcome")
        bx.grid(alpha=0.3)
        if len(with_bytes) <= 12:
            bx.legend(fontsize=7, loc="best")
    fig.suptitle(f"sweep {summary['name']}: {len(summary['cells'])} cells")
    fig.savefig(path, dpi=110)
    plt.close(fig)
