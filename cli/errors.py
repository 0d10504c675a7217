"""One-line user errors for every ``gossip`` command (exit code 2, no traceback)."""

from __future__ import annotations

import click


class UserError(click.ClickException):
    """Printed as ``Error: <message>`` on one line; exit code 2 like click's usage errors."""

    exit_code = 2
