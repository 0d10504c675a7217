"""``gossip sweep SWEEP.toml``: a grid of simulations x seeds on Ray (or --local)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.errors import UserError
from gossipd.sim.sweep import LocalRunner, Runner, SweepError, SweepProgress, SweepSpec, run_sweep

TABLE_ROWS = 30


@contextmanager
def sweep_errors(output: Path, console: Console) -> Iterator[None]:
    """A SweepError becomes a one-line CLI error; Ctrl-C says how to resume (exit 130)."""
    try:
        yield
    except SweepError as exc:
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        console.print(f"interrupted: finished runs are cached in {output / 'runs'}; "
                      "run the same command again to resume")
        raise SystemExit(130) from None


@click.command()
@click.argument("sweep_file", metavar="SWEEP.toml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--local", is_flag=True, help="no Ray: run in this process (or a process pool, see --workers)")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="with --local: processes running simulations at once")
@click.option("--address", default=None,
              help="an existing Ray cluster: ray://HOST:PORT, HOST:PORT or auto (default: start a local Ray)")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None,
              help="CPUs of the local Ray (default: all cores); one simulation per CPU")
@click.option("--ray-temp-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="session and log directory of the local Ray (default /tmp/ray)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="output directory (default: [sweep] output in the file, else sweep-NAME)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def sweep(sweep_file: Path, local: bool, workers: int, address: str | None, num_cpus: int | None,
          ray_temp_dir: Path | None, out_dir: Path | None, quiet: bool) -> None:
    """Run a grid of `simulate` configurations x seeds and compare the cells.

    Every (cell, seed) is one task; finished runs are cached under OUT/runs, so
    an interrupted sweep resumes and a re-run only re-aggregates. Writes
    OUT/sweep.json, OUT/sweep.csv (mean and std over seeds of every final
    metric, one row per cell) and OUT/sweep.png.

    \b
    Example:
      gossip sweep examples/sweep.toml              # a local Ray on this machine
      gossip sweep examples/sweep.toml --local      # no Ray, one run at a time
      gossip sweep grid.toml --address ray://head:10001
    """
    if local and (address or num_cpus or ray_temp_dir):
        raise UserError("--address, --num-cpus and --ray-temp-dir are for Ray; drop them or drop --local")
    if not local and workers != 1:
        raise UserError("--workers is for --local; Ray runs one simulation per CPU it has")
    try:
        spec = SweepSpec.from_toml(sweep_file, output=out_dir)
        cells = spec.cells()  # all errors in the file before any run starts
        make_runner = partial(LocalRunner, workers) if local else _ray_runner(address, num_cpus, ray_temp_dir)
    except SweepError as exc:
        raise UserError(str(exc)) from None
    console = Console(stderr=True)
    where = "locally" if local else f"on Ray ({address or 'local'})"
    console.print(f"sweep {spec.name}: {len(cells)} cells x {len(spec.seeds)} seeds {where} -> {spec.output}")
    with Progress(TextColumn("[bold]cells"), BarColumn(), MofNCompleteColumn(), TextColumn("runs {task.fields[runs]}"),
                  TimeElapsedColumn(), console=console, disable=quiet, transient=True) as progress:
        task = progress.add_task("sweep", total=len(cells), runs="")

        def show(p: SweepProgress) -> None:
            progress.update(task, completed=p.cells_done, runs=f"{p.runs_done}/{p.runs}")

        with sweep_errors(spec.output, console):
            outcome = run_sweep(spec, make_runner, progress=show)
    from gossipd.sim.sweep_plot import chosen_metric

    metric = chosen_metric(outcome.summary)
    if metric != spec.metric:
        console.print(f"warning: no cell has the metric {spec.metric!r}; the table and plot show {metric!r}")
    Console().print(summary_table(outcome.summary, metric))
    console.print(f"ran {outcome.ran} runs, {outcome.cached} cached")
    for path in outcome.paths.values():
        console.print(f"wrote {path}")


def _ray_runner(address: str | None, num_cpus: int | None, temp_dir: Path | None) -> partial[Runner]:
    from gossipd.sim.sweep_ray import RayRunner, require_ray

    require_ray()
    return partial(RayRunner, address, num_cpus, str(temp_dir.resolve()) if temp_dir else None)


def summary_table(summary: dict, metric: str | None) -> Table:
    cells = summary["cells"]
    if metric is not None:
        cells = sorted(cells, key=lambda c: c["mean"].get(metric, float("-inf")), reverse=True)
    table = Table(title=f"sweep {summary['name']}: {len(cells)} cells x {len(summary['seeds'])} seeds")
    for col in ("cell", "config", f"{metric} (mean ± std)", "bytes (mean)"):
        table.add_column(col, justify="left" if col == "config" else "right")
    for c in cells[:TABLE_ROWS]:
        value = f"{c['mean'][metric]:.4f} ± {c['std'][metric]:.4f}" if metric in c["mean"] else "-"
        sent = f"{c['mean']['bytes'] / 1e6:,.1f} MB" if "bytes" in c["mean"] else "-"
        table.add_row(str(c["index"]), c["label"], value, sent)
    if len(cells) > TABLE_ROWS:
        table.caption = f"best {TABLE_ROWS} of {len(cells)} cells; all of them in sweep.csv"
    return table
