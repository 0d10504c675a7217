"""The ``gossip`` command: simulate, demo, inspect and export.

No logic of its own: options map onto config objects, and the work is done by
``gossipd`` modules. Errors are one line naming the bad flag or file, exit 2.
"""

from __future__ import annotations

import click

from cli import crawl, demo_cmd, inspect_cmd, keygen_cmd, simulate_cmd
from cli import sweep_cmd

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
cli.add_command(sweep_cmd.sweep)
cli.add_command(demo_cmd.demo)
cli.add_command(keygen_cmd.keygen)
for _command in (inspect_cmd.status, inspect_cmd.peers, inspect_cmd.join, crawl.crawl_cmd, inspect_cmd.export):
    cli.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    cli()
