"""The daemon's configuration: layers, validation, deprecated spellings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gossipd.daemon.config import ConfigError, load_config


def test_deprecated_toml_keys_map_to_the_new_ones_with_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[data]\nsource = "wine"\npartition = "2/3"\n')
    notices: list[str] = []
    config = load_config(path, warn=notices.append)
    assert (config.data.dataset, config.data.share) == ("wine", "2/3")
    assert len(notices) == 2
    assert any("data.source" in n and "data.dataset" in n for n in notices)
    assert any("data.partition" in n and "data.share" in n for n in notices)


def test_deprecated_env_names_map_to_the_new_ones(tmp_path: Path) -> None:
    notices: list[str] = []
    config = load_config(env={"GOSSIPD_DATA_PARTITION": "3/4"}, warn=notices.append)
    assert config.data.share == "3/4"
    assert notices == ["$GOSSIPD_DATA_PARTITION is deprecated; use $GOSSIPD_DATA_SHARE"]
    # The new name wins when both are set.
    config = load_config(env={"GOSSIPD_DATA_PARTITION": "3/4", "GOSSIPD_DATA_SHARE": "1/4"}, warn=notices.append)
    assert config.data.share == "1/4"


def test_bad_share_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^data\.share: "):
        load_config(overrides={"data.share": "5/4"}, warn=lambda line: None)


def test_deprecated_flags_print_one_line_naming_the_new_flag(tmp_path: Path) -> None:
    # An invalid value after the alias: the daemon stops before loading anything.
    run = subprocess.run([sys.executable, "-m", "gossipd", "--data", "digits", "--partition", "9/4",
                          "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert "gossipd: --data is deprecated; use --dataset" in lines
    assert "gossipd: --partition is deprecated; use --share" in lines
    assert lines[-1].startswith("gossipd: invalid config: data.share")
    assert len(lines) == 3
