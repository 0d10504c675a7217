"""The ``gossip`` command: simulate, demo, inspect and export.

No logic of its own: options map onto config objects, and the work is done by
``gossipd`` modules. Errors are one line naming the bad flag or file, exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cli import simulate_cmd

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="gossipd")
def cli() -> None:
    """gossip: run and inspect decentralised gossip learning.

    \b
    Examples:
      gossip simulate --nodes 100 --cycles 200 --baselines centralised,local,fedavg
      gossip demo
      gossip status http://127.0.0.1:7070
    """


cli.add_command(simulate_cmd.simulate)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":  # pragma: no cover
    cli()
