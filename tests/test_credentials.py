"""The daemon's secrets on disk (gossipd/daemon/credentials.py): keyring and admin token files."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from gossipd.daemon.credentials import (
    CredentialError,
    admin_token_path,
    load_admin_token,
    load_keyring,
    permission_warning,
)


def test_the_default_admin_token_is_made_once_private_and_random(tmp_path: Path) -> None:
    token = load_admin_token(None, tmp_path, create=True)
    path = tmp_path / "admin-token"
    assert admin_token_path(None, tmp_path) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) >= 32
    assert load_admin_token(None, tmp_path, create=True) == token  # kept across restarts
    other = tmp_path / "other"
    other.mkdir()
    assert load_admin_token(None, other, create=True) != token


def test_a_configured_admin_token_file_must_exist_and_hold_a_real_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    with pytest.raises(CredentialError, match=f"security.admin_token_file: cannot read {path}"):
        load_admin_token(str(path), tmp_path, create=True)  # never made up for a configured file
    assert not path.exists()
    for bad in ("short", "two words but long enough", "\n\n"):
        path.write_text(bad)
        with pytest.raises(CredentialError, match="at least 16 printable characters"):
            load_admin_token(str(path), tmp_path)
    path.write_text("  a-long-enough-token-0123456789  \n")
    assert load_admin_token(str(path), tmp_path) == "a-long-enough-token-0123456789"


def test_keyring_errors_name_the_setting_and_file(tmp_path: Path) -> None:
    assert load_keyring("") is None
    path = tmp_path / "keyring"
    with pytest.raises(CredentialError, match=f"security.keyring: {path}: cannot read"):
        load_keyring(str(path))
    path.write_text(base64.b64encode(b"\x07" * 32).decode() + "\n")
    path.chmod(0o644)
    assert load_keyring(str(path)) is not None
    warning = permission_warning("security.keyring", path)
    assert warning is not None and warning.startswith("security.keyring: ") and "chmod 600" in warning
    path.chmod(0o600)
    assert permission_warning("security.keyring", path) is None
