"""``gossip demo``: a real gossip network of N daemons on this machine."""

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


def _status(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url + "/v1/status", timeout=2) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def _table(rows: list[tuple[str, dict[str, Any] | None]], elapsed: float, target: float) -> Table:
    table = Table(title=f"gossip demo: {len(rows)} gossipd processes on 127.0.0.1 ({elapsed:.0f} s, "
                        f"target mean accuracy {target:.2f})")
    for col in ("node", "url", "age", "accuracy", "peers", "sent", "received"):
        table.add_column(col, justify="left" if col in ("node", "url") else "right")
    for name, st in rows:
        if st is None:
            table.add_row(name, "", "", "starting", "", "", "")
            continue
        acc = st["evaluation"]["accuracy"]
        table.add_row(name, st["advertise"], f"{st['model']['age']:,.0f}", "" if acc is None else f"{acc:.3f}",
                      str(st["peers"]), str(st["counters"]["sent"]), str(st["counters"]["received"]))
    accs = [st["evaluation"]["accuracy"] for _, st in rows if st and st["evaluation"]["accuracy"] is not None]
    if accs:
        table.caption = f"mean accuracy {sum(accs) / len(accs):.3f}"
    return table


@click.command()
@click.option("--nodes", default=8, show_default=True, type=click.IntRange(2, 64), help="daemons to start")
@click.option("--dataset", default="digits", show_default=True, help="bundled data set each node holds a part of")
@click.option("--target", default=0.90, show_default=True, type=click.FloatRange(0, 1),
              help="stop once the nodes' mean accuracy reaches this")
@click.option("--time-limit", default=150.0, show_default=True, type=click.FloatRange(1),
              help="seconds of gossip before giving up")
@click.option("--gossip-interval", default=0.5, show_default=True, type=click.FloatRange(0.01))
@click.option("--workdir", default="gossip-demo", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="state dirs, logs and the ONNX file go here")
def demo(nodes: int, dataset: str, target: float, time_limit: float, gossip_interval: float, workdir: Path) -> None:
    """Start N real gossipd processes, watch them learn, export the best model to ONNX.

    Each daemon holds its own part of the data set and joins through the first;
    nothing else coordinates them. The best node's model is scored with
    onnxruntime on the whole test set. Every process started is stopped.

    \b
    Example:
      gossip demo --nodes 8 --target 0.90
    """
    from gossipd.data import DataError, load_dataset
    from gossipd.export import read_metadata, score_onnx
    from gossipd.testing import start_network, stop_all

    console = Console()
    try:
        data = load_dataset(dataset)
    except DataError as exc:
        raise UserError(f"--dataset: {exc}") from None
    if workdir.exists():
        shutil.rmtree(workdir)  # a demo starts from scratch: no old checkpoints
    workdir.mkdir(parents=True)
    extra = ["--dataset", dataset, "--gossip-interval", str(gossip_interval),
             "--shuffle-interval", str(2 * gossip_interval)]
    console.print(f"starting {nodes} gossipd processes (logs in {workdir}/) ...")
    procs = []
    try:
        t0 = time.monotonic()
        procs = start_network(workdir, nodes, extra=extra)
        console.print(f"all {nodes} up in {time.monotonic() - t0:.1f} s; gossiping")
        started = time.monotonic()
        reached = False
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                rows = [(f"n{k + 1}", _status(p.url)) for k, p in enumerate(procs)]
                live.update(_table(rows, time.monotonic() - started, target))
                accs = [st["evaluation"]["accuracy"] for _, st in rows if st and st["evaluation"]["accuracy"] is not None]
                if len(accs) == nodes and sum(accs) / nodes >= target:
                    reached = True
                    break
                if time.monotonic() - started > time_limit:
                    break
                time.sleep(0.5)
        console.print()  # Live leaves its last line open when stdout is not a terminal
        elapsed = time.monotonic() - started
        mean = sum(accs) / len(accs) if accs else float("nan")
        if reached:
            console.print(f"[green]mean accuracy {mean:.3f} >= {target:.2f} after {elapsed:.1f} s of gossip")
        else:
            console.print(f"[yellow]mean accuracy {mean:.3f} after {elapsed:.1f} s: target {target:.2f} not reached")
        best_k, best = max(((k, st) for k, (_, st) in enumerate(rows) if st), key=lambda kv: kv[1]["evaluation"]["accuracy"] or 0)
        request = urllib.request.Request(procs[best_k].url + "/v1/model?format=onnx",
                                         headers={"Authorization": f"Bearer {procs[best_k].admin_token}"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            onnx_bytes = resp.read()
        path = (workdir / "best-model.onnx").resolve()
        path.write_bytes(onnx_bytes)
        acc = score_onnx(path, data.X_test, data.y_test)
        meta = read_metadata(path)
        console.print(f"best node n{best_k + 1} ({best['advertise']}, own test share accuracy "
                      f"{best['evaluation']['accuracy']:.3f}) exported to [bold]{path}[/bold]")
        console.print(f"onnxruntime on the whole {dataset} test set ({len(data.y_test)} examples): "
                      f"accuracy {acc:.3f}; model age {float(meta['gossipd.age']):,.0f}")
    finally:
        stop_all(procs)
        console.print(f"stopped {len(procs)} processes")
    if not reached:
        raise SystemExit(1)
