"""The ``gossipd`` command: flags and environment onto a NodeConfig, then serve.

The flags are generated from the setting declarations (``gossipd.daemon.config``):
a setting declared with a ``flag`` gets an option whose help is the first
sentence of its documentation and whose default is the declared one.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gossipd.daemon.config import ENV_PREFIX, SETTINGS, ConfigError, example_config, load_config, warn_stderr
from gossipd.daemon.settings import Setting, env_name, first_sentence, is_list, toml_value
from gossipd.version import VERSION


def _param(key: str) -> str:
    return "set__" + key.replace(".", "__")


def _click_type(setting: Setting) -> Any:
    return setting.type if setting.type in (int, float) else None


def _help(setting: Setting) -> str:
    env = env_name(setting.key, ENV_PREFIX)
    if setting.default in (None, "", ()):
        return f"{first_sentence(setting.doc)} [env {env}]"
    default = toml_value(setting.default).strip('"')
    return f"{first_sentence(setting.doc)} [default {default}; env {env}]"


def _setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per setting that declares a flag, plus hidden deprecated spellings."""
    for setting in reversed(list(SETTINGS.values())):
        if setting.flag is None:
            continue
        kind: dict[str, Any] = {"multiple": True} if is_list(setting.type) else {"type": _click_type(setting)}
        if setting.metavar:
            kind["metavar"] = setting.metavar
        if setting.type is bool:
            kind = {"is_flag": True, "default": None, "flag_value": True}
        for old in setting.old_flags:
            command = click.option(old, "old__" + old.lstrip("-").replace("-", "_"), hidden=True, **kind,
                                   help=f"deprecated spelling of {setting.flag}")(command)
        command = click.option(setting.flag, _param(setting.key), help=_help(setting), **kind)(command)
    return command


def _print_example(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(example_config(), nl=False)
        ctx.exit(0)


def overrides_from_flags(flags: dict[str, Any], warn: Callable[[str], None] = warn_stderr) -> dict[str, Any]:
    """Dotted key -> value of the flags given; each deprecated spelling used prints one line."""
    given = {k: v for k, v in flags.items() if v is not None and v != ()}
    out: dict[str, Any] = {}
    for setting in SETTINGS.values():
        if _param(setting.key) in given:
            out[setting.key] = given[_param(setting.key)]
        for old in setting.old_flags:
            name = "old__" + old.lstrip("-").replace("-", "_")
            if name in given:
                warn(f"{old} is deprecated; use {setting.flag}")
                out.setdefault(setting.key, given[name])
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
               epilog="Every setting, with its TOML key, variable and trade-offs: gossipd --print-config-example")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file (see systemd/gossipd.toml)")
@_setting_options
@click.option("--print-config-example", is_flag=True, expose_value=False, is_eager=True, callback=_print_example,
              help="print the documented example configuration (every key) and exit")
@click.version_option(VERSION, package_name="gossipd")
def main(config_path: Path | None, **flags: Any) -> None:
    """gossipd: one gossip-learning node. Settings: flag > GOSSIPD_* env > --config file > default.

    \b
    Example:
      gossipd --listen 127.0.0.1:7070 --dataset digits --share 1/2 --state-dir /tmp/g1
      gossipd --listen 127.0.0.1:7071 --dataset digits --share 2/2 --state-dir /tmp/g2 \\
              --join http://127.0.0.1:7070
    """
    try:
        config = load_config(config_path, env=os.environ, overrides=overrides_from_flags(flags))
    except ConfigError as exc:
        click.echo(f"gossipd: invalid config: {exc}", err=True)
        sys.exit(2)
    from gossipd.daemon.driver import run

    code = run(config)
    # The checkpoint is on disk (fsynced) and the log written: skip the interpreter's
    # teardown, which spends seconds unloading torch, so SIGTERM ends the process at once.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

