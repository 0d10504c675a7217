"""``gossip demo``: a real gossip network of N daemons on this machine.

By default each daemon holds a label-skewed share of digits (a few classes
each), so a node alone scores ~0.2 on the common task; the table shows each
node's local-only score beside its gossip score, which is what gossip is for.
Both are measured here, on the whole test set: the local-only model is trained
in this process, the gossip model is each daemon's current one (GET /v1/model).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cli.errors import UserError

LOCAL_EPOCHS = 30


def _admin(url: str, token: str) -> urllib.request.Request:
    """A request to an admin endpoint (/v1/model) with the daemon's token."""
    return urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})


def _get(url: str | urllib.request.Request) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read()
    except OSError:
        return None


def _status(url: str) -> dict[str, Any] | None:
    body = _get(url + "/v1/status")
    try:
        return None if body is None else json.loads(body)
    except ValueError:
        return None


class Scorer:
    """Accuracy of models on the whole test set: alone (trained here) and gossiped (fetched)."""

    def __init__(self, dataset: Any, spec: str = "logreg") -> None:
        from gossipd.core.learner import make_learner
        from gossipd.data import make_scaling

        self.dataset = dataset
        # As the daemons: features scaled by statistics the network learns (each node's own, alone).
        self.learner = make_learner(spec, dataset.schema, scaling=make_scaling("network", dataset.schema))

    def alone(self, nodes: int, split: str) -> list[float]:
        """Each node's model trained only on its own share (LOCAL_EPOCHS passes)."""
        import numpy as np

        from gossipd.core.learner import LocalData
        from gossipd.data import node_share

        ds, scores = self.dataset, []
        for k in range(1, nodes + 1):
            X_tr, y_tr, _, _ = node_share(ds, f"{k}/{nodes}", split)
            data, state = LocalData.for_schema(X_tr, y_tr, ds.schema), self.learner.initial_state()
            stats = self.learner.initial_stats(data)
            rng = np.random.default_rng(k)
            for _ in range(LOCAL_EPOCHS):
                state = self.learner.update(state, data, rng, stats)
            scores.append(self.learner.evaluate(state, ds.X_test, ds.y_test, stats))
        return scores

    def gossiped(self, url: str, cluster: str, token: str) -> float | None:
        """The daemon's current model (GET /v1/model with its admin token), or None if it cannot be fetched."""
        from gossipd import wire
        from gossipd.core.messages import ModelMessage
        from gossipd.core.state import ModelState

        body = _get(_admin(url + "/v1/model?format=msgpack", token))
        try:
            msg = None if body is None else wire.decode(body, cluster=cluster)
        except wire.WireError:
            return None
        if not isinstance(msg, ModelMessage) or msg.params.size != self.learner.n_params or msg.stats is None:
            return None
        return self.learner.evaluate(ModelState(msg.params, msg.age), self.dataset.X_test, self.dataset.y_test,
                                     msg.stats)


Row = tuple[str, dict[str, Any] | None, float | None]  # node name, status, gossip accuracy


def demo_table(rows: list[Row], alone: list[float], elapsed: float, target: float, n_test: int) -> Table:
    table = Table(title=f"gossip demo: {len(rows)} daemons, {elapsed:.0f} s of gossip, target {target:.2f}")
    for col in ("node", "alone", "gossip", "age", "peers", "sent", "received"):
        table.add_column(col, justify="left" if col == "node" else "right")
    for (name, st, acc), own in zip(rows, alone):
        if st is None:
            table.add_row(name, f"{own:.3f}", "starting", "", "", "", "")
            continue
        table.add_row(name, f"{own:.3f}", "" if acc is None else f"{acc:.3f}", f"{st['model']['age']:,.0f}",
                      str(st["peers"]), str(st["counters"]["sent"]), str(st["counters"]["received"]))
    accs = [acc for _, _, acc in rows if acc is not None]
    caption = f"accuracy on the whole test set ({n_test} examples); alone: mean {sum(alone) / len(alone):.3f}"
    if accs:
        caption += f"; with gossip: mean {sum(accs) / len(accs):.3f}, lowest {min(accs):.3f}"
    table.caption = caption
    return table


@click.command()
@click.option("--nodes", default=8, show_default=True, type=click.IntRange(2, 64), help="daemons to start")
@click.option("--dataset", default="digits", show_default=True, help="bundled data set each node holds a share of")
@click.option("--split", default="labels", show_default=True,
              help="how the data is cut over the nodes: labels (a few classes each) | iid | dirichlet:ALPHA")
@click.option("--target", default=0.93, show_default=True, type=click.FloatRange(0, 1),
              help="stop once every node's accuracy reaches this")
@click.option("--time-limit", default=150.0, show_default=True, type=click.FloatRange(1),
              help="seconds of gossip before giving up")
@click.option("--gossip-interval", default=0.5, show_default=True, type=click.FloatRange(0.01))
@click.option("--workdir", default="gossip-demo", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="state dirs, logs and the ONNX file go here")
def demo(nodes: int, dataset: str, split: str, target: float, time_limit: float, gossip_interval: float,
         workdir: Path) -> None:
    """Start N real gossipd processes; watch gossip lift every node above what it scores alone.

    Each daemon holds its own share of the data set (by default a few classes
    each) and joins through the first; nothing else coordinates them. The table
    shows each node's accuracy alone (its model trained on its share only) and
    with gossip. The best node's model is exported to ONNX and scored with
    onnxruntime on the whole test set. Every process started is stopped.

    \b
    Example:
      gossip demo --nodes 8 --target 0.93
      gossip demo --split iid --target 0.90
    """
    from gossipd.data import DataError, load_dataset, parse_split
    from gossipd.export import read_metadata, score_onnx
    from gossipd.testing import start_network, stop_all

    console = Console()
    try:
        parse_split(split)
    except DataError as exc:
        raise UserError(f"--split: {exc}") from None
    try:
        data = load_dataset(dataset)
    except DataError as exc:
        raise UserError(f"--dataset: {exc}") from None
    if workdir.exists():
        shutil.rmtree(workdir)  # a demo starts from scratch: no old checkpoints
    workdir.mkdir(parents=True)
    extra = ["--dataset", dataset, "--gossip-interval", str(gossip_interval),
             "--shuffle-interval", str(2 * gossip_interval)]
    console.print(f"starting {nodes} gossipd processes, {split} shares of {dataset} (logs in {workdir}/) ...")
    procs = []
    try:
        t0 = time.monotonic()
        procs = start_network(workdir, nodes, extra=extra, split=split)
        console.print(f"all {nodes} up in {time.monotonic() - t0:.1f} s; gossiping")
        started = time.monotonic()
        scorer = Scorer(data)
        alone = scorer.alone(nodes, split)  # while the network warms up
        reached = False
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                statuses = [_status(p.url) for p in procs]
                rows = [(f"n{k + 1}", st, None if st is None else scorer.gossiped(p.url, st["cluster"], p.admin_token))
                        for k, (p, st) in enumerate(zip(procs, statuses))]
                live.update(demo_table(rows, alone, time.monotonic() - started, target, len(data.y_test)))
                accs = [acc for _, _, acc in rows if acc is not None]
                if len(accs) == nodes and min(accs) >= target:
                    reached = True
                    break
                if time.monotonic() - started > time_limit:
                    break
                time.sleep(0.5)
        console.print()  # Live leaves its last line open when stdout is not a terminal
        elapsed = time.monotonic() - started
        low = min(accs) if accs else float("nan")
        span = f"alone they score {min(alone):.3f} to {max(alone):.3f}"
        if reached:
            console.print(f"[green]every node >= {target:.2f} (lowest {low:.3f}) after {elapsed:.1f} s of gossip; "
                          f"{span}")
        else:
            console.print(f"[yellow]lowest node {low:.3f} after {elapsed:.1f} s of gossip: target {target:.2f} "
                          f"not reached; {span}")
        best_k, best = max(((k, st) for k, (_, st, acc) in enumerate(rows) if st), key=lambda kv: rows[kv[0]][2] or 0)
        with urllib.request.urlopen(_admin(procs[best_k].url + "/v1/model?format=onnx", procs[best_k].admin_token),
                                    timeout=30) as resp:
            onnx_bytes = resp.read()
        path = workdir / "best-model.onnx"
        path.write_bytes(onnx_bytes)
        acc = score_onnx(path, data.X_test, data.y_test)
        meta = read_metadata(path)
        console.print(f"best node n{best_k + 1} ({best['advertise']}, accuracy {rows[best_k][2] or 0:.3f}) "
                      f"exported to [bold]{path}[/bold]")
        console.print(f"onnxruntime on the whole {dataset} test set ({len(data.y_test)} examples): "
                      f"accuracy {acc:.3f}; model age {float(meta['gossipd.age']):,.0f}")
    finally:
        stop_all(procs)
        console.print(f"stopped {len(procs)} processes")
    if not reached:
        raise SystemExit(1)
