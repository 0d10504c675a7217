"""``gossip keygen``: a new random 256-bit key for the cluster keyring.

The key never touches a file that others can read: with ``-o FILE`` it is
written atomically with mode 0600; on stdout redirected to a file
(``gossip keygen > keyring``) that file is made 0600 before the key is written.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from pathlib import Path

import click

from cli.errors import UserError
from gossipd.files import atomic_write


@click.command("keygen")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write a new keyring holding just this key to FILE (atomic, mode 0600)")
@click.option("--force", is_flag=True, help="with --output: replace FILE if it exists (its keys are lost)")
def keygen(output: Path | None, force: bool) -> None:
    """Print a new random key for the cluster keyring.

    One line: the base64 of 32 random bytes, then its public key id as a
    comment. Every node of a cluster shares one keyring file; the first key
    seals, all of them open. docs/security.md says how to install and rotate keys.

    \b
    Examples:
      gossip keygen > /etc/gossipd/keyring     # a new keyring (the file becomes 0600)
      gossip keygen >> /etc/gossipd/keyring    # add a key at the end (rotation, step 1)
      gossip keygen -o /etc/gossipd/keyring    # atomic; refuses to replace an existing file
    """
    from gossipd.security import generate_key_line  # cryptography only when a key is made

    line = generate_key_line() + "\n"
    if output is not None:
        _write_file(output, line, force)
        click.echo(f"wrote a new keyring to {output} (mode 0600): key id {line.split('# id ')[1].strip()}",
                   err=True)
        return
    if force:
        raise UserError("--force: only with --output FILE")
    _make_stdout_private()
    click.echo(line, nl=False)


def _write_file(path: Path, line: str, force: bool) -> None:
    if path.exists() and not force:
        raise UserError(f"--output: {path} exists; add a key with `gossip keygen >> {path}`, "
                        "or pass --force to replace it (its keys are lost)")
    try:
        atomic_write(path, line.encode("ascii"), mode=0o600)
    except OSError as exc:
        raise UserError(f"--output: cannot write {path} ({exc.strerror or exc})") from None


def _make_stdout_private() -> None:
    """chmod 600 the file stdout is redirected to; nothing for a terminal or a pipe."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return  # not backed by a file descriptor (an in-process test runner)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode) and stat.S_IMODE(mode) != 0o600:
            os.fchmod(fd, 0o600)
    except OSError as exc:
        raise UserError(f"cannot make the file on stdout private ({exc.strerror or exc}); "
                        "use --output FILE instead") from None
