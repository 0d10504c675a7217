"""``gossip experiment NAME``: a named, reproducible comparison on the sweep machinery."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.errors import UserError
from cli.sweep_cmd import sweep_errors
from gossipd.sim.experiments import EXPERIMENTS, ExperimentOptions, ExperimentResult, run_experiment
from gossipd.sim.sweep import LocalRunner, SweepError, SweepProgress


def _names(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise click.BadParameter("give at least one value, comma-separated")
    return names


def _seeds(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected integers separated by commas, got {value!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"expected distinct integers separated by commas, got {value!r}")
    return seeds


@click.command()
@click.argument("name", required=False)
@click.option("--list", "list_only", is_flag=True, help="list the experiments and their methods")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="output directory [default: experiment-NAME]")
@click.option("--seeds", default="1", show_default=True, callback=_seeds, help="comma list of seeds")
@click.option("--nodes", type=click.IntRange(min=2), default=ExperimentOptions.nodes, show_default=True)
@click.option("--cycles", type=click.IntRange(min=1), default=ExperimentOptions.cycles, show_default=True,
              help="gossip cycles (FedAvg rounds) per run")
@click.option("--datasets", callback=_names, default=None, help="comma list [default: digits,breast_cancer]")
@click.option("--splits", callback=_names, default=None, help="comma list [default: iid,labels]")
@click.option("--churn", callback=_names, default=None,
              help="comma list of none and --churn values [default: none,diurnal]")
@click.option("--methods", callback=_names, default=None, help="comma list [default: all of the experiment's]")
@click.option("--eval-every", type=click.IntRange(min=1), default=ExperimentOptions.eval_every, show_default=True)
@click.option("--engine", type=click.Choice(["exact", "auto"]), default="exact", show_default=True,
              help="auto: the gossip runs on the batched engine (fast at thousands of nodes; statistically the "
                   "same experiment), FedAvg as always")
@click.option("--workers", type=click.IntRange(min=1), default=min(2, os.cpu_count() or 1), show_default=True,
              help="processes running simulations at once")
@click.option("--quiet", is_flag=True, help="no progress bar")
def experiment(name: str | None, list_only: bool, out_dir: Path | None, seeds: tuple[int, ...], nodes: int,
               cycles: int, datasets: tuple[str, ...] | None, splits: tuple[str, ...] | None,
               churn: tuple[str, ...] | None, methods: tuple[str, ...] | None, eval_every: int, engine: str,
               workers: int, quiet: bool) -> None:
    """Run a named experiment: its grid of simulations, then its tables and figures.

    Writes OUT/experiment.json (curves and the outcome table), OUT/experiment.csv
    (the outcome table), OUT/accuracy_vs_bytes.png, OUT/accuracy_vs_time.png, and
    the sweep's own OUT/sweep.json, sweep.csv, sweep.png. Finished runs are cached
    in OUT/runs: an interrupted experiment resumes, a re-run only redraws.

    \b
    Examples:
      gossip experiment --list
      gossip experiment golf-vs-fedavg                      # the full grid, 3 to 6 min on 2 cores
      gossip experiment golf-vs-fedavg --datasets digits --churn none --seeds 1,2,3
      gossip experiment golf-vs-fedavg --nodes 1000 --engine auto --datasets digits
    """
    console = Console(stderr=True)
    if list_only or name is None:
        if name is None and not list_only:
            raise UserError(f"name an experiment: {', '.join(EXPERIMENTS)} (gossip experiment --list)")
        for exp in EXPERIMENTS.values():
            Console().print(f"[bold]{exp.name}[/bold]: {exp.question}")
            for m in exp.methods:
                Console().print(f"  {m.name:20s} {m.note}")
        return
    if name not in EXPERIMENTS:
        raise UserError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    defaults = ExperimentOptions()
    options = ExperimentOptions(nodes=nodes, cycles=cycles, seeds=seeds, datasets=datasets or defaults.datasets,
                                splits=splits or defaults.splits, churn=churn or defaults.churn,
                                methods=methods or (), eval_every=eval_every, engine=engine)
    output = out_dir if out_dir is not None else Path(f"experiment-{name}")
    try:
        cells = exp.spec(options, output).cells()  # every error before any run starts
    except (SweepError, ValueError) as exc:
        raise UserError(str(exc)) from None
    runs = len(cells) * len(seeds)
    console.print(f"experiment {name}: {len(cells)} cells x {len(seeds)} seeds = {runs} runs, "
                  f"{workers} worker{'s' if workers > 1 else ''} -> {output}")
    with Progress(TextColumn("[bold]runs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=quiet, transient=True) as progress:
        task = progress.add_task("experiment", total=runs)

        def show(p: SweepProgress) -> None:
            progress.update(task, completed=p.runs_done)

        with sweep_errors(output, console):
            result = run_experiment(exp, options, output, partial(LocalRunner, workers), progress=show)
    Console().print(outcome_table(result))
    console.print(f"ran {result.sweep.ran} runs, {result.sweep.cached} cached")
    for path in result.paths.values():
        console.print(f"wrote {path}")


def outcome_table(result: ExperimentResult) -> Table:
    table = Table(title=f"{result.summary['experiment']}: accuracy at equal total bytes "
                        f"({result.summary['budgets']})")
    for col in ("data", "split", "churn", "gossip vs FedAvg", "budget", "gossip", "FedAvg", "lead"):
        table.add_column(col, justify="left" if col in ("data", "split", "churn", "gossip vs FedAvg") else "right")
    for row in result.table:
        g, f, lead = row["gossip_accuracy"], row["fedavg_accuracy"], row["gossip_leads_by"]
        table.add_row(row["dataset"], row["split"], row["churn"], f"{row['gossip_method']} / {row['fedavg_method']}",
                      f"{row['budget_bytes'] / 1e6:,.2f} MB", "-" if g is None else f"{g:.4f}",
                      "-" if f is None else f"{f:.4f}", "-" if lead is None else f"{lead:+.4f}")
    return table
