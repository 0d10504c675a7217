"""Named experiments: bundle axes in sweep specs, budgets, and a tiny golf-vs-fedavg run end to end."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from gossipd.sim.experiments import EXPERIMENTS, ExperimentOptions, accuracy_at, outcome_table, run_experiment
from gossipd.sim.sweep import LocalRunner, SweepError
from gossipd.sim.sweep_spec import SweepSpec


def spec(text: str) -> SweepSpec:
    return SweepSpec.from_mapping(tomllib.loads(text), source="s.toml", output=Path("out"))


def test_a_bundle_axis_sets_several_fields_per_value() -> None:
    cells = spec("""
        [sweep]
        seeds = [1]
        [base]
        nodes = 10
        [grid]
        drop = [0.0, 0.2]
        method = [{name = "gossip"}, {name = "fedavg", gossip = false, baselines = ["fedavg"], fedavg_epochs = 2}]
    """).cells()
    assert [dict(c.params) for c in cells] == [
        {"drop": 0.0, "method": "gossip"}, {"drop": 0.0, "method": "fedavg"},
        {"drop": 0.2, "method": "gossip"}, {"drop": 0.2, "method": "fedavg"}]
    fed = cells[1].config
    assert (fed.gossip, fed.baselines, fed.fedavg_epochs, fed.nodes) == (False, ("fedavg",), 2, 10)
    assert cells[0].config.gossip and cells[0].config.fedavg_epochs != 2


@pytest.mark.parametrize("grid, words", [
    ('method = [{gossip = false}]', "needs a name"),
    ('method = [{name = "a"}, {name = "a"}]', "used twice"),
    ('method = [{name = "a", colour = 1}]', "colour: not a simulation setting"),
    ('method = [{name = "a"}, 3]', "takes only tables"),
    ('drop = [0.1]\nmethod = [{name = "a", drop = 0.2}]', "drop is set by both"),
])
def test_bad_bundle_axes_name_the_axis(grid: str, words: str) -> None:
    with pytest.raises(SweepError, match=words):
        spec(f"[sweep]\nseeds = [1]\n[grid]\n{grid}\n").cells()


def test_accuracy_at_a_budget_interpolates_in_bytes() -> None:
    curve = [{"bytes": 0.0, "accuracy": 0.1}, {"bytes": 100.0, "accuracy": 0.5}, {"bytes": 300.0, "accuracy": 0.9}]
    assert accuracy_at(curve, 50.0) == pytest.approx(0.3)
    assert accuracy_at(curve, 200.0) == pytest.approx(0.7)
    assert accuracy_at(curve, 301.0) is None  # past what the run spent: no claim


def test_outcome_table_compares_at_budgets_of_the_cheaper_method() -> None:
    exp = EXPERIMENTS["golf-vs-fedavg"]
    gossip = [{"bytes": 0.0, "accuracy": 0.1}, {"bytes": 1000.0, "accuracy": 0.9}]
    fed = [{"bytes": 0.0, "accuracy": 0.1}, {"bytes": 500.0, "accuracy": 0.6}]
    rows = outcome_table(exp, {("digits", "iid", "none"): {"gossip": gossip, "fedavg": fed}})
    assert [r["budget_bytes"] for r in rows] == pytest.approx([50.0, 150.0, 500.0])
    last = rows[-1]
    assert last["gossip_accuracy"] == pytest.approx(0.5) and last["fedavg_accuracy"] == pytest.approx(0.6)
    assert last["gossip_leads_by"] == pytest.approx(-0.1)


def test_golf_vs_fedavg_runs_end_to_end_and_resumes(tmp_path: Path) -> None:
    exp = EXPERIMENTS["golf-vs-fedavg"]
    options = ExperimentOptions(nodes=8, cycles=4, eval_every=2, datasets=("wine",), splits=("iid",),
                                churn=("none",), methods=("gossip", "fedavg"))
    result = run_experiment(exp, options, tmp_path, lambda: LocalRunner(1), plot=False)
    assert result.sweep.ran == 2
    summary = json.loads((tmp_path / "experiment.json").read_text())
    methods = {c["method"]: c["points"] for c in summary["curves"]}
    assert set(methods) == {"gossip", "fedavg"}
    for points in methods.values():
        assert [p["cycle"] for p in points] == [0.0, 2.0, 4.0]
        assert points[0]["bytes"] == 0.0 < points[1]["bytes"] < points[2]["bytes"]
    assert len(result.table) == 3 and all(r["gossip_accuracy"] is not None for r in result.table)
    assert (tmp_path / "experiment.csv").read_text().startswith("dataset,split,churn,gossip_method")
    again = run_experiment(exp, options, tmp_path, lambda: LocalRunner(1), plot=False)
    assert again.sweep.ran == 0 and again.table == result.table


def test_engine_auto_runs_the_gossip_cells_batched_and_fedavg_as_before(tmp_path: Path) -> None:
    """--engine auto (for thousands of nodes): gossip runs on the batched engine, the FedAvg-only
    cells where they always ran; the default keeps the exact engine everywhere."""
    exp = EXPERIMENTS["golf-vs-fedavg"]
    engines = {}
    for engine in (None, "auto"):
        out = tmp_path / str(engine)
        options = ExperimentOptions(nodes=8, cycles=4, eval_every=2, datasets=("wine",), splits=("iid",),
                                    churn=("diurnal",), methods=("gossip-tokens", "fedavg"), engine=engine)
        run_experiment(exp, options, out, lambda: LocalRunner(1), plot=False)
        runs = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
        engines[engine] = sorted((r["config"]["gossip"], r["result"]["engine"]["name"]) for r in runs)
    assert engines[None] == [(False, "exact"), (True, "exact")]
    assert engines["auto"] == [(False, "exact"), (True, "batched")]


@pytest.mark.parametrize("args, words", [
    (["experiment", "no-such"], "unknown experiment 'no-such'"),
    (["experiment", "golf-vs-fedavg", "--methods", "gossip,bogus"], "unknown method bogus"),
    (["experiment", "golf-vs-fedavg", "--datasets", "mnist"], "dataset"),
    (["experiment"], "name an experiment"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path: Path, args: list[str], words: str) -> None:
    out = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "x")] if len(args) > 1 else args)
    assert out.exit_code == 2, out.output
    assert words in out.output and "Traceback" not in out.output


def test_cli_lists_the_experiments() -> None:
    out = CliRunner().invoke(cli, ["experiment", "--list"])
    assert out.exit_code == 0 and "golf-vs-fedavg" in out.output and "gossip-tokens" in out.output
