"""The daemon's configuration: declarations, the example file, layers, validation, old spellings."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gossipd.daemon.config import SETTINGS, ConfigError, NodeConfig, example_config, load_config
from gossipd.daemon.http import ip_allowed
from gossipd.daemon.main import main
from gossipd.daemon.settings import section, settings_of, values_of
from peer_sampling.knobs import knob

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "systemd" / "gossipd.toml"


def quiet(line: str) -> None:
    raise AssertionError(f"unexpected notice: {line}")


# -- the declaration and the documented example ------------------------------------------


def test_committed_example_is_generated_from_the_declarations() -> None:
    assert EXAMPLE.read_text() == example_config(), (
        "systemd/gossipd.toml is stale: run `make docs` (gossipd --print-config-example > systemd/gossipd.toml)")


def _documented_keys(text: str) -> set[str]:
    """Dotted keys the example sets or shows commented out (TOML has no null)."""
    keys, table = set(), ""
    for line in text.splitlines():
        if m := re.fullmatch(r"\[([a-z_.]+)\]", line):
            table = m.group(1) + "."
        elif m := re.fullmatch(r"#? ?([a-z_]+) =.*", line):
            keys.add(table + m.group(1))
    return keys


def test_every_declared_setting_is_in_the_committed_example() -> None:
    missing = set(SETTINGS) - _documented_keys(EXAMPLE.read_text())
    assert not missing, f"not in systemd/gossipd.toml: {sorted(missing)}; run `make docs`"


def test_every_key_in_the_example_has_a_comment_above_it() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+\s*=", line):
            assert lines[i - 1].startswith("#"), f"undocumented: {line}"


def test_the_example_loads_and_means_what_it_says() -> None:
    config = load_config(EXAMPLE, warn=quiet)
    with EXAMPLE.open("rb") as f:
        table = tomllib.load(f)
    values = values_of(config)
    for key, value in values.items():
        head, _, tail = key.rpartition(".")
        shown = (table.get(head, {}) if head else table).get(tail)
        if shown is not None:
            assert values[key] == (tuple(shown) if isinstance(shown, list) else shown), key


def test_example_documents_defaults_flags_and_variables() -> None:
    text = EXAMPLE.read_text()
    assert '# --gossip-interval, $GOSSIPD_GOSSIP_INTERVAL; default 5.0' in text
    assert '# $GOSSIPD_ADMIN_ALLOW; default ["127.0.0.1", "::1"]' in text
    assert "# $GOSSIPD_PEER_SAMPLING_RESEED_INTERVAL; default unset" in text  # = 5 shuffle intervals


def test_core_knobs_are_settings_without_being_copied() -> None:
    """GossipConfig, CyclonConfig and LearnerConfig fields become settings as they are declared."""
    from gossipd.core.node import GossipConfig
    from gossipd.core.spec import LearnerConfig
    from peer_sampling.cyclon import CyclonConfig

    for prefix, cls in (("gossip.", GossipConfig), ("peer_sampling.", CyclonConfig), ("model.", LearnerConfig)):
        for name, f in cls.__dataclass_fields__.items():
            assert SETTINGS[prefix + name].doc == f.metadata["doc"]
            assert SETTINGS[prefix + name].default == f.default


@dataclass(frozen=True)
class Undocumented:
    fine: int = knob(1, "documented")
    sneaky: int = 2


@dataclass(frozen=True)
class RootWithUndocumented:
    sub: Undocumented = section(Undocumented, "a section")


def test_a_field_without_a_declaration_is_refused() -> None:
    with pytest.raises(TypeError, match="sneaky"):
        settings_of(RootWithUndocumented)


def test_help_lists_every_flag_from_the_declarations() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    flags = [s.flag for s in SETTINGS.values() if s.flag]
    assert len(flags) >= 15
    for flag in flags:
        assert flag in result.output
    assert "GOSSIPD_GOSSIP_INTERVAL" in result.output


def test_print_config_example_is_the_example() -> None:
    result = CliRunner().invoke(main, ["--print-config-example"])
    assert result.exit_code == 0
    assert result.output == example_config()


# -- layers and types --------------------------------------------------------------------


def test_layers_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('cluster = "file"\nmax_pending = 7\n[gossip]\ninterval = 2.5\n[model]\nlr = 0.1\n')
    config = load_config(path, env={"GOSSIPD_CLUSTER": "env", "GOSSIPD_GOSSIP_INTERVAL": "1.5"},
                         overrides={"cluster": "flag"}, warn=quiet)
    assert config.cluster == "flag"
    assert config.gossip.interval == 1.5
    assert config.max_pending == 7
    assert config.model.learner.lr == 0.1
    assert config.request_timeout == NodeConfig().request_timeout


def test_env_text_becomes_typed_values() -> None:
    config = load_config(env={
        "GOSSIPD_JOIN": "http://a:1, http://b:2", "GOSSIPD_PEER_SAMPLING_RESEED_INTERVAL": "inf",
        "GOSSIPD_PEER_SAMPLING_PENDING_TIMEOUT": "3", "GOSSIPD_ADMIN_ALLOW": "10.0.0.0/8,::1"}, warn=quiet)
    assert config.join == ("http://a:1", "http://b:2")
    assert config.peer_sampling.reseed_interval == float("inf")
    assert config.peer_sampling.pending_timeout == 3.0
    assert load_config(env={"GOSSIPD_PEER_SAMPLING_PENDING_TIMEOUT": ""}, warn=quiet).peer_sampling.pending_timeout is None
    assert ip_allowed("10.77.3.4", config.admin_allow) and not ip_allowed("11.0.0.1", config.admin_allow)


@pytest.mark.parametrize(("key", "value"), [
    ("listen", "nope"), ("advertise", "ftp://x"), ("join", "not-a-url"), ("cluster", ""), ("cluster", "x" * 129),
    ("state_dir", " "), ("node_id", "a b"), ("admin_allow", "10.77.0.0/33"), ("admin_allow", "localhost"),
    ("checkpoint_interval", "0"), ("eval_interval", "-1"), ("request_timeout", "nan"), ("max_pending", "0"),
    ("max_pending", "many"), ("seed", "-2"), ("log_level", "LOUD"), ("model.spec", "cnn:x"), ("model.lr", "0"),
    ("model.batch_size", "0"), ("model.weight_decay", "-1"), ("data.share", "5/4"), ("data.split", "weird"),
    ("gossip.interval", "-1"), ("gossip.jitter", "1"), ("gossip.merge", "limited:"),
    ("peer_sampling.view_size", "0"), ("peer_sampling.shuffle_length", "30"),
    ("peer_sampling.reseed_interval", "0"), ("peer_sampling.pending_timeout", "-1"),
    ("peer_sampling.fallback_size", "-1"),
])
def test_every_bad_value_is_refused_naming_its_key_and_source(key: str, value: str) -> None:
    env = "GOSSIPD_" + key.replace(".", "_").upper()
    with pytest.raises(ConfigError) as info:
        load_config(env={env: value}, warn=quiet)
    assert info.value.field == key
    assert str(info.value).startswith(f"{key} (from ${env}): ")


def test_cross_field_errors_name_a_field() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"peer_sampling.view_size": 4}, warn=quiet)
    assert info.value.field == "peer_sampling.shuffle_length"
    assert "view_size (4)" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"listen": "0.0.0.0:7070"}, warn=quiet)
    assert info.value.field == "advertise"


def test_toml_type_errors_unknown_keys_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text("[gossip]\ninterval = \"soon\"\n")
    with pytest.raises(ConfigError, match=rf"^gossip\.interval \(from {re.escape(str(path))}\): expected a number"):
        load_config(path, warn=quiet)
    path.write_text("[gossip]\nintervall = 3\n")
    with pytest.raises(ConfigError, match=r"gossip\.intervall .*unknown setting"):
        load_config(path, warn=quiet)
    path.write_text("gossip = 3\n")
    with pytest.raises(ConfigError, match=r"expected a \[gossip\] table"):
        load_config(path, warn=quiet)
    path.write_text("max_pending = true\n")
    with pytest.raises(ConfigError, match="max_pending.*expected an integer"):
        load_config(path, warn=quiet)
    path.write_text("listen = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, warn=quiet)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", warn=quiet)


# -- deprecated spellings ----------------------------------------------------------------


def test_deprecated_toml_keys_map_to_the_new_ones_with_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[data]\nsource = "wine"\npartition = "2/3"\n')
    notices: list[str] = []
    config = load_config(path, warn=notices.append)
    assert (config.data.dataset, config.data.share) == ("wine", "2/3")
    assert len(notices) == 2
    assert any("data.source" in n and "data.dataset" in n for n in notices)
    assert any("data.partition" in n and "data.share" in n for n in notices)


def test_deprecated_env_names_map_to_the_new_ones() -> None:
    notices: list[str] = []
    config = load_config(env={"GOSSIPD_DATA_PARTITION": "3/4"}, warn=notices.append)
    assert config.data.share == "3/4"
    assert notices == ["$GOSSIPD_DATA_PARTITION is deprecated; use $GOSSIPD_DATA_SHARE"]
    # The new name wins when both are set.
    config = load_config(env={"GOSSIPD_DATA_PARTITION": "3/4", "GOSSIPD_DATA_SHARE": "1/4"}, warn=notices.append)
    assert config.data.share == "1/4"


def test_deprecated_flags_print_one_line_naming_the_new_flag(tmp_path: Path) -> None:
    # An invalid value after the alias: the daemon stops before loading anything.
    run = subprocess.run([sys.executable, "-m", "gossipd", "--data", "digits", "--partition", "9/4",
                          "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert "gossipd: --data is deprecated; use --dataset" in lines
    assert "gossipd: --partition is deprecated; use --share" in lines
    assert lines[-1].startswith("gossipd: invalid config: data.share (from command line)")
    assert len(lines) == 3


# -- [security] and [tls] ------------------------------------------------------------------


def test_a_listen_address_beyond_loopback_needs_a_keyring_or_insecure() -> None:
    public = {"listen": "0.0.0.0:7070", "advertise": "http://node1.example.org:7070"}
    with pytest.raises(ConfigError) as info:
        load_config(overrides=public, warn=quiet)
    assert info.value.field == "security.keyring"
    assert "gossip keygen" in str(info.value) and "insecure = true" in str(info.value)
    assert load_config(overrides={**public, "security.keyring": "/k"}, warn=quiet).security.keyring == "/k"
    assert load_config(overrides={**public, "security.insecure": True}, warn=quiet).security.insecure
    for loopback in ("127.0.0.1:0", "127.3.4.5:7070", "[::1]:7070", "localhost:7070"):
        assert load_config(overrides={"listen": loopback}, warn=quiet).security.keyring == ""
    with pytest.raises(ConfigError) as info:  # a host name may resolve to anything
        load_config(overrides={"listen": "gossip.example.org:7070"}, warn=quiet)
    assert info.value.field == "security.keyring"


@pytest.mark.parametrize(("overrides", "field", "needle"), [
    ({"advertise": "http://Node1:7070"}, "advertise", "lower case"),
    ({"advertise": "http://127.0.0.1:7070/"}, "advertise", "path"),
    ({"advertise": "http://127.0.0.1"}, "advertise", "port"),
    ({"join": ("http://169.254.169.254:80",)}, "join", "link-local"),
    ({"join": ("http://10.0.0.1:7070",), "security.peer_allow": ("192.168.0.0/16",)}, "join", "peer_allow"),
    ({"security.peer_allow": ()}, "security.peer_allow", '["*"]'),
    ({"security.peer_allow": ("10.0.0.0/33",)}, "security.peer_allow", "CIDR"),
    ({"security.replay_window": 0}, "security.replay_window", "> 0"),
    ({"tls.cert": "/c.pem"}, "tls.key", "both"),
    ({"tls.key": "/k.pem"}, "tls.cert", "both"),
    ({"tls.cert": "/c", "tls.key": "/k", "tls.require_client_cert": True}, "tls.require_client_cert", "tls.ca"),
    ({"tls.cert": "/c", "tls.key": "/k", "advertise": "http://127.0.0.1:7070"}, "advertise", "HTTPS"),
    ({"advertise": "https://127.0.0.1:7070"}, "advertise", "plain HTTP"),
    ({"max_connections": 8}, "max_connections", ">= 16"),
    ({"header_timeout": 0}, "header_timeout", "> 0"),
])
def test_security_settings_are_checked(overrides: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides, warn=quiet)
    assert info.value.field == field and needle in str(info.value), str(info.value)
