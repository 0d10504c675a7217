"""The ``gossip`` command: simulate, demo, inspect and export.

No logic of its own: options map onto config objects, and the work is done by
``gossipd`` modules. Errors are one line naming the bad flag or file, exit 2.

Subcommands are imported when they run (or when ``gossip --help`` lists them),
so ``gossip --version`` and ``gossip status --help`` answer at once instead of
loading torch, numpy and aiohttp first.
"""

from __future__ import annotations

import importlib

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# name -> "module:attribute" of the click command.
COMMANDS: dict[str, str] = {
    "simulate": "cli.simulate_cmd:simulate",
    "sweep": "cli.sweep_cmd:sweep",
    "experiment": "cli.experiment_cmd:experiment",
    "demo": "cli.demo_cmd:demo",
    "status": "cli.inspect_cmd:status",
    "peers": "cli.inspect_cmd:peers",
    "join": "cli.inspect_cmd:join",
    "wait": "cli.inspect_cmd:wait",
    "crawl": "cli.crawl:crawl_cmd",
    "export": "cli.inspect_cmd:export",
    "keygen": "cli.keygen_cmd:keygen",
}


class LazyGroup(click.Group):
    """A group whose ``COMMANDS`` are imported on first use (click's documented lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.version_option(package_name="gossipd")
def cli() -> None:
    """gossip: run and inspect decentralised gossip learning.

    \b
    Examples:
      gossip simulate --nodes 100 --cycles 200 --baselines centralised,local,fedavg
      gossip demo
      gossip status http://127.0.0.1:7070
    """


if __name__ == "__main__":  # pragma: no cover
    cli()
