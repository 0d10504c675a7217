"""``gossip simulate``: one seeded experiment, gossip against baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.errors import UserError, check_output
from gossipd.sim.config import BASELINES, ConfigError, SimulationConfig


PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def _baselines(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise click.BadParameter(f"unknown baseline {', '.join(unknown)}; expected some of {', '.join(BASELINES)}")
    return names


@click.command()
@click.option("--dataset", default="digits", show_default=True,
              help="digits | breast_cancer | wine | diabetes | a .csv/.npz file or a directory of them | "
                   "python:PATH.py:LOADER | pkg.module:LOADER")
@click.option("--label-column", default=None,
              help="CSV: the column holding the label [label, target, y or class, else the last]")
@click.option("--model", default="logreg", show_default=True,
              help="logreg | mlp:H1,H2,... | cnn[:C1,C2,...] | python:PATH.py:FACTORY | pkg.module:FACTORY")
@click.option("--task", default="auto", show_default=True, help="auto | classification | regression")
@click.option("--input-shape", default="", help="one example's shape, e.g. 1x8x8 (default: as the data says)")
@click.option("--scaling", default="network", show_default=True,
              help="feature scaling: network (learned by gossip) | none | fixed:PATH (JSON mean/std)")
@click.option("--nodes", default=100, show_default=True, type=int)
@click.option("--cycles", default=200, show_default=True, type=int, help="gossip periods (Δ) to simulate")
@click.option("--split", default="iid", show_default=True,
              help="how the training data is cut over the nodes: iid | labels | dirichlet:ALPHA")
@click.option("--partition", "old_partition", hidden=True, help="deprecated spelling of --split")
@click.option("--merge", default=SimulationConfig.merge, show_default=True,
              help="robust | age | average | overwrite | limited:L")
@click.option("--sampler", default="cyclon", show_default=True,
              help="cyclon | full | ring | kregular:K | smallworld:K,P | random:P")
@click.option("--drop", default=0.0, show_default=True, type=float, help="message loss probability")
@click.option("--online", default=1.0, show_default=True, type=float, help="fraction of time a node is online")
@click.option("--churn", default=None,
              help="availability trace: FILE.csv (node,online_from,online_to in cycles) | "
                   "diurnal[:day=100,online=0.4,swing=0.8,session=10,spread=0.1] (phone-like sessions)")
@click.option("--delay", default=0.1, show_default=True, type=float, help="max message delay, in cycles")
@click.option("--kill", default=None, help="FRACTION@CYCLE: crash that share of nodes at that cycle")
@click.option("--cut", default=None, help="FRACTION@START-END: that share of nodes cannot reach the rest meanwhile")
@click.option("--attackers", default=None,
              help="FRACTION:KIND, KIND = age | age:zero | scale:S | signflip | noise:SIGMA | zero | stats")
@click.option("--codec", default="fp32", show_default=True, help="how pushed parameters are sent: fp32 | fp16 | int8")
@click.option("--partitions", default=1, show_default=True, type=int,
              help="P: cut the model into P partitions, each with its own age")
@click.option("--subsample", default=1.0, show_default=True, type=float,
              help="share of the partitions one push carries (0.1 with P=10: one)")
@click.option("--flow", default="push", show_default=True,
              help="push | tokens:A,C (randomized token account, reactivity A, capacity C)")
@click.option("--view-size", default=20, show_default=True, type=int, help="Cyclon view size c")
@click.option("--shuffle-length", default=8, show_default=True, type=int, help="Cyclon shuffle length ℓ")
@click.option("--baselines", default="", callback=_baselines, help="comma list of centralised,local,fedavg")
@click.option("--fedavg-epochs", default=SimulationConfig.fedavg_epochs, show_default=True, type=int,
              help="FedAvg's E: local passes per round")
@click.option("--fedavg-batch", default=SimulationConfig.fedavg_batch, show_default=True, type=int,
              help="FedAvg's B: local mini-batch size")
@click.option("--fedavg-fraction", default=SimulationConfig.fedavg_fraction, show_default=True, type=float,
              help="FedAvg's C: share of the available clients per round")
@click.option("--eval-every", default=10, show_default=True, type=int, help="cycles between evaluations")
@click.option("--lr", default=None, type=float, help="initial step  [default: 0.5; 0.1 for regression]")
@click.option("--lr-decay", default=SimulationConfig.lr_decay, show_default=True, type=float,
              help="age at which the step has halved")
@click.option("--optimizer", default="sgd", show_default=True, help="sgd | adam (adam: torch modules only)")
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--engine", default="auto", show_default=True, type=click.Choice(["auto", "exact", "batched"]),
              help="batched: all nodes in arrays, time in slices of 0.1 cycle (fast); exact: event by event "
                   "(the reference); auto: batched unless an option needs exact")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="write the results as JSON to this file ('-': standard output, the table goes to stderr)")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="accuracy against cycles and against bytes (.png, .pdf or .svg)")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.pass_context
def simulate(ctx: click.Context, json_path: Path | None, plot_path: Path | None, quiet: bool,
             old_partition: str | None, **options: Any) -> None:
    """Simulate gossip learning on one machine, seeded and reproducible.

    \b
    Example:
      gossip simulate --dataset digits --model logreg --nodes 100 --cycles 200 \\
          --split iid --baselines centralised,local,fedavg --seed 1 \\
          --json out.json --plot out.png
    """
    if old_partition is not None:
        click.echo("gossip simulate: --partition is deprecated; use --split", err=True)
        if ctx.get_parameter_source("split") is not ParameterSource.COMMANDLINE:
            options["split"] = old_partition
    to_stdout = json_path is not None and str(json_path) == "-"
    # Everything that could fail at the end is checked now: a run's results are never lost to a typo.
    if json_path is not None and not to_stdout:
        check_output(json_path, "--json")
    if plot_path is not None:
        check_output(plot_path, "--plot", PLOT_SUFFIXES)
    config = SimulationConfig(**options)
    try:
        config.validate()
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    from gossipd.sim.simulation import simulate as run_simulation
    from gossipd.threads import one_compute_thread

    one_compute_thread()  # tiny per-node models: threads cost more than they give
    console = Console(stderr=True)
    with Progress(TextColumn("[bold]simulating"), BarColumn(), TextColumn("cycle {task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, disable=quiet, transient=True) as progress:
        task = progress.add_task("sim", total=config.cycles)
        try:
            result = run_simulation(config, progress=lambda c: progress.update(task, completed=c),
                                    note=lambda line: console.print(f"gossip simulate: {line}", soft_wrap=True,
                                                                    highlight=False, markup=False))
        except ConfigError as exc:
            raise UserError(str(exc)) from None
    (console if to_stdout else Console()).print(summary_table(result))
    if to_stdout:
        click.echo(json.dumps(result, indent=2))
    elif json_path is not None:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {json_path}")
    if plot_path is not None:
        from gossipd.sim.plot import plot_simulation

        plot_simulation(result, plot_path)
        console.print(f"wrote {plot_path}")


SHORT = {"accuracy": "acc", "rmse": "RMSE", "r2": "R²"}
FORMAT = {"accuracy": ".4f", "rmse": "#.4g", "r2": ".3f"}  # RMSE: 4 significant digits, any scale


def summary_table(result: dict[str, Any]) -> Table:
    """One row per method: the headline metric's mean, min and max over nodes (accuracy, or
    RMSE), and the mean of any other (R²)."""
    cfg = result["config"]
    metrics = result.get("metrics", ["accuracy"])
    # (metric, statistic) per column: all three for the headline metric, the mean for the rest.
    cols = [(metrics[0], k) for k in ("mean", "min", "max")] + [(m, "mean") for m in metrics[1:]]
    table = Table(title=f"{cfg['dataset']} / {cfg['model']} / {cfg['nodes']} nodes / {cfg['cycles']} cycles / "
                        f"{cfg['split']} / seed {cfg['seed']}")
    for col in ("method", *(f"{k} {SHORT.get(m, m)}" for m, k in cols), "messages", "bytes"):
        table.add_column(col, justify="left" if col == "method" else "right")

    def cells(entry: dict[str, Any]) -> list[str]:
        return [format(entry[f"{k}_{m}"], FORMAT.get(m, ".4f")) for m, k in cols]

    f = result["final"]
    attack = f", honest {result['honest_nodes']} of {cfg['nodes']}" if cfg.get("attackers") else ""
    table.add_row(f"gossip ({cfg['merge']}, {cfg['sampler']}{attack})", *cells(f), f"{f['messages']:,}",
                  _mb(f["bytes"]))
    for name, base in result.get("baselines", {}).items():
        if name == "centralised":
            table.add_row("centralised", *[format(base[m], FORMAT.get(m, ".4f")) if k == "mean" else ""
                                           for m, k in cols], "-", "-")
        else:
            b = base["final"]
            table.add_row(name, *cells(b), f"{b['messages']:,}", _mb(b["bytes"]))
    engine = result.get("engine", {}).get("name", "exact")
    table.caption = f"wall time {result['wall_seconds']:.1f} s ({engine} engine); peer sampling: " \
                    f"{f['sampling_messages']:,} messages, {_mb(f['sampling_bytes'])}"
    if cfg.get("attackers"):
        table.caption += (f"\nattackers {cfg['attackers']}: scores are honest nodes'; attackers hold "
                          f"{f['attacker_view_share']:.1%} of honest views")
    return table


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"
