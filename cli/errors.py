"""One-line user errors for every ``gossip`` command (exit code 2, no traceback)."""

from __future__ import annotations

import os
from pathlib import Path

import click


class UserError(click.ClickException):
    """Printed as ``Error: <message>`` on one line; exit code 2 like click's usage errors."""

    exit_code = 2


def check_output(path: Path, flag: str, suffixes: tuple[str, ...] = ()) -> None:
    """Refuse, before any work is done, an output file that could not be written at the end."""
    if suffixes and path.suffix.lower() not in suffixes:
        raise UserError(f"{flag}: cannot write {path.suffix or 'files without an extension'} "
                        f"({path}); use {', '.join(suffixes)}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"{flag}: directory {parent} does not exist (for {path})")
    if path.is_dir():
        raise UserError(f"{flag}: {path} is a directory")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{flag}: {path} is not writable")
