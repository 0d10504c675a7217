"""``gossip simulate`` through click's CliRunner: outputs, errors, reproducibility."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cli.main import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = ["simulate", "--nodes", "20", "--cycles", "10", "--eval-every", "5", "--quiet"]


def invoke(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_simulate_writes_json_and_png(tmp_path):
    out, png = tmp_path / "out.json", tmp_path / "out.png"
    result = invoke([*SMALL, "--baselines", "centralised,local,fedavg", "--json", str(out), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["config"]["nodes"] == 20 and data["config"]["cycles"] == 10
    assert data["config"]["baselines"] == ["centralised", "local", "fedavg"]
    assert [e["cycle"] for e in data["series"]] == [0, 5, 10]
    for key in ("mean_accuracy", "min_accuracy", "max_accuracy", "messages", "bytes", "sampling_messages",
                "sampling_bytes", "dead_link_fraction", "largest_component_fraction"):
        assert key in data["series"][-1]
    assert {"mean", "std", "max"} <= set(data["final"]["indegree"])
    assert set(data["baselines"]) == {"centralised", "local", "fedavg"}
    assert data["wall_seconds"] > 0
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 5000  # a real figure, not an empty canvas
    # the summary table names the methods
    for name in ("gossip", "centralised", "local", "fedavg"):
        assert name in result.output


def test_simulate_without_outputs_prints_a_summary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(SMALL)
    assert result.exit_code == 0
    assert "gossip (age, cyclon)" in result.output
    assert list(tmp_path.iterdir()) == []  # no --json/--plot: no files


def test_same_seed_same_series_other_seed_differs(tmp_path):
    paths = [tmp_path / f"{i}.json" for i in range(3)]
    for path, seed in zip(paths, ("5", "5", "6")):
        assert invoke([*SMALL, "--seed", seed, "--json", str(path)]).exit_code == 0
    a, b, c = (json.loads(p.read_text()) for p in paths)
    assert a["series"] == b["series"]
    assert a["series"] != c["series"]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--dataset", "nope"], "--dataset"),
        (["--split", "bad"], "--split"),
        (["--nodes", "0"], "--nodes"),
        (["--nodes", "1"], "--nodes"),
        (["--cycles", "-1"], "--cycles"),
        (["--kill", "2@5"], "--kill"),
        (["--kill", "half"], "--kill"),
        (["--sampler", "weird"], "--sampler"),
        (["--baselines", "foo"], "--baselines"),
        (["--merge", "limited:"], "--merge"),
        (["--model", "cnn:x"], "--model"),
        (["--dataset", "wine", "--model", "cnn"], "--model"),  # not image-shaped data
        (["--model", "python:missing_plugin.py:make"], "--model"),
        (["--scaling", "global"], "--scaling"),
        (["--scaling", "fixed:missing.json"], "--scaling"),
        (["--task", "ranking"], "--task"),
        (["--optimizer", "lbfgs"], "--optimizer"),
        (["--drop", "1.5"], "--drop"),
        (["--online", "0"], "--online"),
        (["--view-size", "4", "--shuffle-length", "8"], "--shuffle-length"),
        (["--nodes", "many"], "--nodes"),
        (["--dataset", "missing.csv"], "missing.csv"),
    ],
)
def test_bad_flags_exit_2_with_one_line_error(args, flag, tmp_path):
    out = tmp_path / "out.json"
    result = CliRunner().invoke(cli, ["simulate", "--nodes", "5", "--cycles", "2", "--quiet", *args,
                                      "--json", str(out)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    assert flag in errors[0]
    assert not out.exists()  # nothing half-written


def test_old_partition_flag_is_an_alias_of_split_with_one_notice(tmp_path):
    out = tmp_path / "out.json"
    result = CliRunner().invoke(cli, [*SMALL, "--nodes", "6", "--cycles", "2", "--eval-every", "2",
                                      "--partition", "labels", "--json", str(out)])
    assert result.exit_code == 0, result.output
    notices = [line for line in result.stderr.splitlines() if "deprecated" in line]
    assert notices == ["gossip simulate: --partition is deprecated; use --split"]
    config = json.loads(out.read_text())["config"]
    assert config["split"] == "labels" and "partition" not in config


def _csv(path, rows):
    path.write_text("a,b,label\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("case", ["json_dir", "plot_type", "kregular", "tiny_csv", "text_csv", "one_of_a_class"])
def test_user_mistakes_are_one_line_before_the_run(case, tmp_path):
    """No traceback, exit 2, and for output paths before the (long) run, not after it."""
    args, needles = {
        "json_dir": (["--json", str(tmp_path / "nodir" / "x.json")], ["--json", "does not exist"]),
        "plot_type": (["--plot", str(tmp_path / "out.xyz")], ["--plot", ".xyz", ".png"]),
        "kregular": (["--nodes", "10", "--sampler", "kregular:40"], ["--sampler", "K < number of nodes"]),
        "tiny_csv": (["--dataset", _csv(tmp_path / "four.csv", [(1, 2, 0), (3, 4, 1), (5, 6, 0), (7, 8, 1)])],
                     ["four.csv", "4 rows are too few", "need at least"]),
        "text_csv": (["--dataset", _csv(tmp_path / "t.csv", [(1, 2, 0), (3, "x", 1)] * 8)],
                     ["t.csv", "line 3, column 'b'", "'x' is not a number"]),
        "one_of_a_class": (["--dataset", _csv(tmp_path / "c.csv", [(1, 2, 0)] * 9 + [(1, 1, 1)])],
                           ["class '1' has only 1 example"]),
    }[case]
    result = CliRunner().invoke(cli, ["simulate", "--nodes", "5", "--cycles", "2", "--quiet", *args])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in errors[0]


def test_json_to_stdout_is_pure_json_and_csv_label_column_is_used(tmp_path):
    path = _csv(tmp_path / "d.csv", [(i, i % 3, i % 2) for i in range(40)])
    result = CliRunner().invoke(cli, [*SMALL, "--nodes", "4", "--dataset", path, "--label-column", "b",
                                      "--json", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["config"]["label_column"] == "b"
    assert "gossip (age, cyclon)" in result.stderr  # the table, out of the way of the JSON


def test_regression_reports_rmse_and_r2_in_table_json_and_plot(tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    result = invoke(["simulate", "--dataset", "diabetes", "--nodes", "10", "--cycles", "6", "--eval-every", "3",
                     "--baselines", "centralised,fedavg", "--quiet", "--json", str(out), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    for text in ("mean RMSE", "min RMSE", "max RMSE", "mean R²", "centralised", "fedavg"):
        assert text in result.output, text
    assert "acc" not in result.output.split("┃ method")[1].split("\n")[0]  # no accuracy column
    data = json.loads(out.read_text())
    assert data["task"] == "regression" and data["metrics"] == ["rmse", "r2"]
    last = data["series"][-1]
    assert last["min_rmse"] <= last["mean_rmse"] <= last["max_rmse"] and "mean_accuracy" not in last
    assert data["baselines"]["centralised"]["rmse"] > 0 and "mean_r2" in data["baselines"]["fedavg"]["final"]
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert data["config"]["lr"] is None and data["model"]["lr"] == 0.1  # the task's default step
