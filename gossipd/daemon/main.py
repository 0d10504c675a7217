"""The ``gossipd`` command: flags and environment onto a NodeConfig, then serve."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from gossipd.daemon.config import DEPRECATED_FLAGS, FLAGS, ConfigError, load_config, warn_stderr
from gossipd.daemon.driver import VERSION, StartupError, serve


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file (see systemd/gossipd.toml)")
@click.option("--listen", help="HOST:PORT to bind [127.0.0.1:7070]")
@click.option("--advertise", help="URL peers use to reach this node [http://LISTEN]")
@click.option("--join", multiple=True, help="seed peer URL (repeatable)")
@click.option("--cluster", help="cluster name [default]")
@click.option("--state-dir", help="checkpoint directory [./gossipd-state]")
@click.option("--node-id", help="stable node name [generated, kept in state dir]")
@click.option("--model", help="logreg | mlp:H1,H2 [logreg]")
@click.option("--dataset", help="digits | breast_cancer | wine | FILE.csv | FILE.npz [digits]")
@click.option("--share", help="K/N: hold part K of N of the training data [1/1]")
@click.option("--split", help="how the N shares are cut: iid | labels | dirichlet:ALPHA [iid]")
@click.option("--data", hidden=True, help="deprecated spelling of --dataset")
@click.option("--partition", hidden=True, help="deprecated spelling of --share")
@click.option("--gossip-interval", type=float, help="seconds between pushes [5.0]")
@click.option("--merge", help="age | average | overwrite | limited:L [age]")
@click.option("--shuffle-interval", type=float, help="seconds between Cyclon shuffles [10.0]")
@click.option("--seed", type=int, help="seed this node's randomness [random]")
@click.option("--log-level", help="DEBUG | INFO | WARNING | ERROR [INFO]")
@click.version_option(VERSION, package_name="gossipd")
def main(config_path: Path | None, **flags: Any) -> None:
    """gossipd: one gossip-learning node. Settings: flag > GOSSIPD_* env > --config file > default.

    \b
    Example:
      gossipd --listen 127.0.0.1:7070 --dataset digits --share 1/2 --state-dir /tmp/g1
      gossipd --listen 127.0.0.1:7071 --dataset digits --share 2/2 --state-dir /tmp/g2 \\
              --join http://127.0.0.1:7070
    """
    given = {k: v for k, v in flags.items() if v is not None and v != ()}
    for old, new in DEPRECATED_FLAGS.items():
        if old in given:
            warn_stderr(f"--{old} is deprecated; use --{new}")
            value = given.pop(old)
            given.setdefault(new, value)
    overrides = {FLAGS[k]: v for k, v in given.items()}
    try:
        config = load_config(config_path, env=os.environ, overrides=overrides)
    except ConfigError as exc:
        click.echo(f"gossipd: invalid config: {exc}", err=True)
        sys.exit(2)
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    # One intra-op thread: several daemons often share a machine, and OpenMP
    # workers spinning against each other cost far more than they give on small models.
    torch.set_num_threads(1)
    try:
        asyncio.run(serve(config))
    except StartupError as exc:
        click.echo(f"gossipd: cannot start: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        sys.exit(130)
