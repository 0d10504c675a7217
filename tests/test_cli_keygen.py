"""``gossip keygen``: keys that parse, files that stay private, one-line errors."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from cli.main import cli
from gossipd.security import Keyring

GOSSIP = Path(sys.executable).with_name("gossip")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_prints_one_new_key_that_a_keyring_accepts():
    outs = [CliRunner().invoke(cli, ["keygen"]) for _ in range(2)]
    assert all(r.exit_code == 0 for r in outs)
    rings = [Keyring.parse(r.output, "out") for r in outs]
    assert all(len(r.keys) == 1 and r.primary.hex_id in out.output for r, out in zip(rings, outs))
    assert rings[0].primary.secret != rings[1].primary.secret
    assert outs[0].output.count("\n") == 1


def test_redirected_stdout_becomes_0600(tmp_path: Path):
    path = tmp_path / "keyring"
    old_umask = os.umask(0o022)
    try:
        with open(path, "w") as fh:  # what the shell does for `gossip keygen > keyring`: 0644
            assert mode(path) == 0o644
            subprocess.run([GOSSIP, "keygen"], stdout=fh, check=True, timeout=60)
        assert mode(path) == 0o600
        with open(path, "a") as fh:  # `gossip keygen >> keyring` adds a second key
            subprocess.run([GOSSIP, "keygen"], stdout=fh, check=True, timeout=60)
    finally:
        os.umask(old_umask)
    assert len(Keyring.load(path).keys) == 2 and mode(path) == 0o600


def test_stdout_to_a_pipe_just_prints():
    out = subprocess.run([GOSSIP, "keygen"], capture_output=True, text=True, check=True, timeout=60)
    assert len(Keyring.parse(out.stdout).keys) == 1 and out.stderr == ""


def test_output_file_is_atomic_private_and_not_replaced_by_accident(tmp_path: Path):
    path = tmp_path / "keyring"
    r = CliRunner().invoke(cli, ["keygen", "-o", str(path)])
    assert r.exit_code == 0, r.output
    first = Keyring.load(path)
    assert mode(path) == 0o600 and first.primary.hex_id in r.output
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind

    r = CliRunner().invoke(cli, ["keygen", "--output", str(path)])
    assert r.exit_code == 2 and "--output" in r.output and "exists" in r.output and "Traceback" not in r.output
    assert Keyring.load(path).primary.secret == first.primary.secret

    r = CliRunner().invoke(cli, ["keygen", "-o", str(path), "--force"])
    assert r.exit_code == 0 and Keyring.load(path).primary.secret != first.primary.secret


def test_errors_are_one_line(tmp_path: Path):
    r = CliRunner().invoke(cli, ["keygen", "-o", str(tmp_path / "missing" / "keyring")])
    assert r.exit_code == 2 and r.output.startswith("Error: --output: cannot write") and r.output.count("\n") == 1
    r = CliRunner().invoke(cli, ["keygen", "--force"])
    assert r.exit_code == 2 and "--force" in r.output
