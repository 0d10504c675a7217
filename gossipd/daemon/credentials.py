"""The daemon's secrets on disk: the cluster keyring and the admin token.

Both are read at start (a problem stops start-up with one line) and again on
SIGHUP (a problem is logged and the old secret kept, so a typo during a key
rotation never takes a node off the network). A file that group or others can
read is worth a warning: whoever reads the keyring is a cluster member,
whoever reads the token is an administrator.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from gossipd.files import atomic_write
from gossipd.security import Keyring, KeyringError, keyring_permission_problem

__all__ = ["ADMIN_TOKEN_NAME", "MIN_TOKEN_LENGTH", "CredentialError", "admin_token_path", "load_admin_token",
           "load_keyring", "permission_warning"]

ADMIN_TOKEN_NAME = "admin-token"
MIN_TOKEN_LENGTH = 16


class CredentialError(ValueError):
    """A keyring or token file that cannot be used; the message is one line naming the setting and file."""


def load_keyring(path: str) -> Keyring | None:
    """The keyring at ``path`` (``security.keyring``), or None when the setting is empty."""
    if not path:
        return None
    try:
        return Keyring.load(path)
    except KeyringError as exc:
        raise CredentialError(f"security.keyring: {exc}") from None


def admin_token_path(configured: str | None, state_dir: Path) -> Path:
    return Path(configured) if configured is not None else Path(state_dir) / ADMIN_TOKEN_NAME


def load_admin_token(configured: str | None, state_dir: Path, *, create: bool = False) -> str:
    """The admin token from ``security.admin_token_file``, else from STATE_DIR/admin-token.

    With ``create`` (at start), a missing default file is made with a random
    token (mode 0600); a configured file must exist.
    """
    path = admin_token_path(configured, state_dir)
    if create and configured is None and not path.exists():
        atomic_write(path, (secrets.token_urlsafe(32) + "\n").encode("ascii"), mode=0o600)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise CredentialError(f"security.admin_token_file: cannot read {path} ({reason})") from None
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token) or not token.isprintable():
        raise CredentialError(
            f"security.admin_token_file: {path} must hold one token of at least {MIN_TOKEN_LENGTH} printable "
            "characters without spaces (e.g. from `openssl rand -hex 32`)")
    return token


def permission_warning(setting: str, path: str | Path) -> str | None:
    """A sentence if ``path`` is open to group or others, else None."""
    problem = keyring_permission_problem(path)
    return f"{setting}: {problem}" if problem else None
