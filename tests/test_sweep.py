"""Sweeps: the TOML spec, grid expansion, keys, aggregation, `gossip sweep --local`, then on a real Ray.

The Ray test runs the command as its own process, as a user runs it: it starts
a private Ray (2 CPUs, no dashboard, session and logs in a temp dir), runs 2
cells x 2 seeds of tiny simulations as Ray tasks, shuts Ray down and exits.
Ray is installed by `make setup` (the `ray` extra); nothing here skips without it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from gossipd.sim.config import SimulationConfig
from gossipd.sim.simulation import simulate
from gossipd.sim.sweep import RunCache, final_metrics, mean_std
from gossipd.sim.sweep_spec import SweepError, SweepSpec, coerce, config_dict, run_key

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# 2 cells x 2 seeds of 20 nodes x 10 cycles: a second or so per run.
TINY = """
[sweep]
name = "tiny"
seeds = [1, 2]
[base]
nodes = 20
cycles = 10
eval_every = 5
baselines = ["fedavg"]
[grid]
merge = ["age", "average"]
"""


def spec(text: str, source: str = "grid.toml") -> SweepSpec:
    import tomllib

    return SweepSpec.from_mapping(tomllib.loads(text), source=source, output=Path("out"))


def invoke(args: list[str]):
    return CliRunner().invoke(cli, args)


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    return errors[0]


# -- the spec and the grid --------------------------------------------------------------


def test_grid_is_the_cartesian_product_last_axis_fastest():
    cells = spec("""
        [sweep]
        seeds = [3, 4, 5]
        [base]
        nodes = 30
        drop = 0.5
        [grid]
        merge = ["age", "average"]
        drop = [0, 0.2, 0.4]
    """).cells()
    assert [c.index for c in cells] == list(range(6))
    assert [(c.config.merge, c.config.drop) for c in cells] == [
        ("age", 0.0), ("age", 0.2), ("age", 0.4), ("average", 0.0), ("average", 0.2), ("average", 0.4)]
    assert all(c.config.nodes == 30 for c in cells)  # base applies, grid overrides base (drop)
    assert cells[1].label == "merge=age, drop=0.2"
    assert isinstance(cells[0].config.drop, float)  # TOML's integer 0 became the field's float
    assert [r.seed for r in cells[4].runs()] == [3, 4, 5]
    assert {r.drop for r in cells[4].runs()} == {0.2}


def test_no_grid_is_one_cell_of_the_base():
    (cell,) = spec("[base]\nnodes = 7\n").cells()
    assert cell.config == SimulationConfig(nodes=7, seed=1)
    assert cell.label == "base"


def test_values_take_the_type_the_field_declares():
    assert coerce(tuple[str, ...], ["local", "fedavg"]) == ("local", "fedavg")
    assert coerce(tuple[str, ...], "local, fedavg") == ("local", "fedavg")  # as the CLI writes it
    assert coerce(str | None, "none") is None
    assert coerce(str | None, "0.5@3") == "0.5@3"
    assert coerce(float, 2) == 2.0
    for hint, value in ((int, 2.5), (int, True), (float, "0.1"), (str, 3), (tuple[str, ...], 3), (bool, 1)):
        with pytest.raises(TypeError):
            coerce(hint, value)


def test_every_config_field_can_be_swept():
    """The grid is built from the dataclass's own fields: nothing here lists them."""
    for cell in spec('[grid]\nkill = ["none", "0.5@5"]\nview_size = [10, 12]\nbaselines = [[], ["local"]]').cells():
        assert cell.config.kill in (None, "0.5@5")
        assert cell.config.baselines in ((), ("local",))
    assert len(spec('[grid]\nkill = ["none", "0.5@5"]\nview_size = [10, 12]').cells()) == 4


@pytest.mark.parametrize(("text", "words"), [
    ("[base]\nnodez = 5", ["grid.toml", "[base] nodez", "'nodes'"]),
    ("[grid]\nmerje = ['age']", ["grid.toml", "[grid] merje", "'merge'"]),
    ("[sweep]\nseed = [1]", ["grid.toml", "[sweep] seed", "'seeds'"]),
    ("[extra]\na = 1", ["grid.toml", "[extra]"]),
    ("[base]\nseed = 4", ["grid.toml", "[sweep] seeds"]),
    ("[grid]\nnodes = 5", ["grid.toml", "nodes", "non-empty list"]),
    ("[grid]\nnodes = []", ["grid.toml", "nodes", "non-empty list"]),
    ("[sweep]\nseeds = [1, 1]", ["grid.toml", "duplicates"]),
    ("[sweep]\nseeds = 3", ["grid.toml", "seeds"]),
])
def test_bad_spec_names_the_file_and_the_key(text, words):
    with pytest.raises(SweepError) as info:
        spec(text).cells()
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(("text", "words"), [
    ("[grid]\ndrop = [0.1, 1.5]", ["cell 1 (drop=1.5)", "--drop"]),
    ("[grid]\nnodes = [10, 'many']", ["cell 1 (nodes=many)", "nodes", "expected int"]),
    ("[grid]\nsplit = ['iid', 'dirichlet:x']\nmerge = ['age', 'average']", ["cell 2", "split=dirichlet:x",
                                                                               "--split"]),
    ("[base]\nnodes = 'many'", ["[base]", "nodes", "expected int"]),
])
def test_bad_value_names_the_cell(text, words):
    with pytest.raises(SweepError) as info:
        spec(text).cells()
    assert str(info.value).startswith("grid.toml: ")
    for word in words:
        assert word in str(info.value)


# -- keys, cache, aggregation --------------------------------------------------------------


def test_run_key_follows_every_field_and_the_seed():
    base = SimulationConfig(nodes=20)
    assert run_key(base) == run_key(SimulationConfig(nodes=20))
    others = [SimulationConfig(nodes=21), SimulationConfig(nodes=20, seed=2), SimulationConfig(nodes=20, lr=0.3),
              SimulationConfig(nodes=20, baselines=("local",))]
    assert len({run_key(c) for c in [base, *others]}) == 5


def test_cache_ignores_corrupt_files_and_other_configs(tmp_path):
    cache = RunCache(tmp_path)
    config = SimulationConfig(nodes=20)
    assert cache.get(config) is None
    result = {"config": {"anything": "simulate reports"}, "final": {"mean_accuracy": 0.5}}
    cache.put(config, result)
    assert cache.get(config) == result
    assert cache.get(SimulationConfig(nodes=20, seed=2)) is None
    entry = json.loads(cache.path(config).read_text())
    cache.path(config).write_text("{not json")  # e.g. a disk filled mid-write
    assert cache.get(config) is None
    entry["config"]["nodes"] = 99  # a file that is not for this config (edited, or a hash collision)
    cache.path(config).write_text(json.dumps(entry))
    assert cache.get(config) is None
    entry["config"] = config_dict(config)
    cache.path(config).write_text(json.dumps(entry))
    assert cache.get(config) == result


def test_final_metrics_flatten_gossip_and_baselines():
    result = {
        "final": {"cycle": 10, "mean_accuracy": 0.9, "indegree": {"mean": 4.0, "max": 7}, "note": "x", "ok": True},
        "baselines": {"centralised": {"accuracy": 0.95, "series": [{"epoch": 1, "accuracy": 0.5}]},
                      "fedavg": {"final": {"mean_accuracy": 0.93, "bytes": 100}, "series": []}},
        "wall_seconds": 1.5,
    }
    assert final_metrics(result) == {
        "cycle": 10.0, "mean_accuracy": 0.9, "indegree.mean": 4.0, "indegree.max": 7.0,
        "centralised.accuracy": 0.95, "fedavg.mean_accuracy": 0.93, "fedavg.bytes": 100.0, "wall_seconds": 1.5}


def test_mean_std_is_the_sample_std():
    values = [0.91, 0.93, 0.97, 0.90]
    mean, std = mean_std(values)
    assert mean == pytest.approx(np.mean(values))
    assert std == pytest.approx(np.std(values, ddof=1))
    assert mean_std([0.5]) == (0.5, 0.0)


# -- gossip sweep --local ------------------------------------------------------------------


def check_outputs(out: Path, n_cells: int, seeds: list[int]) -> dict:
    """sweep.json/csv/png exist, and each cell's mean and std are those of its runs on disk."""
    summary = json.loads((out / "sweep.json").read_text())
    assert len(summary["cells"]) == n_cells
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [int(r["cell"]) for r in rows] == list(range(n_cells))
    for cell, row in zip(summary["cells"], rows):
        assert [r["seed"] for r in cell["runs"]] == seeds
        per_seed = [json.loads((out / "runs" / f"{r['key']}.json").read_text())["result"] for r in cell["runs"]]
        assert [p["config"]["seed"] for p in per_seed] == seeds
        for metric, pick in (("mean_accuracy", lambda p: p["final"]["mean_accuracy"]),
                             ("bytes", lambda p: p["final"]["bytes"]),
                             ("fedavg.mean_accuracy", lambda p: p["baselines"]["fedavg"]["final"]["mean_accuracy"])):
            values = [pick(p) for p in per_seed]
            assert cell["mean"][metric] == pytest.approx(np.mean(values))
            assert cell["std"][metric] == pytest.approx(np.std(values, ddof=1))
            assert float(row[f"{metric}_mean"]) == pytest.approx(np.mean(values))
            assert float(row[f"{metric}_std"]) == pytest.approx(np.std(values, ddof=1))
        assert row["merge"] == cell["params"]["merge"] == cell["config"]["merge"]
    assert summary["cells"][0]["mean"]["mean_accuracy"] != summary["cells"][1]["mean"]["mean_accuracy"]
    png = (out / "sweep.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 5000
    return summary


def without_wall(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k != "wall_seconds"}


def test_local_sweep_aggregates_caches_and_resumes(tmp_path):
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY)
    out = tmp_path / "out"
    # A process pool of two first (the pool path of --local) ...
    first = invoke(["sweep", str(toml), "--local", "--workers", "2", "--out", str(out), "--quiet"])
    assert first.exit_code == 0, first.output
    assert "ran 4 runs, 0 cached" in first.output
    summary = check_outputs(out, 2, [1, 2])
    assert "merge=age" in first.output and "±" in first.output
    # ... then an interrupted sweep: one run lost. The re-run (in this process) redoes only that one.
    runs = sorted((out / "runs").glob("*.json"))
    assert len(runs) == 4
    lost = out / "runs" / f"{summary['cells'][1]['runs'][0]['key']}.json"
    before = json.loads(lost.read_text())["result"]
    lost.unlink()
    kept = {p: p.stat().st_mtime_ns for p in runs if p != lost}
    second = invoke(["sweep", str(toml), "--local", "--out", str(out), "--quiet"])
    assert second.exit_code == 0, second.output
    assert "ran 1 runs, 3 cached" in second.output
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished runs were not redone
    again = json.loads(lost.read_text())["result"]
    assert again["series"] == before["series"]  # a process-pool run and an in-process run agree
    resumed = json.loads((out / "sweep.json").read_text())["cells"]
    for stat in ("mean", "std"):  # the same figures (wall time aside) whichever way each run was made
        assert [without_wall(c[stat]) for c in resumed] == [without_wall(c[stat]) for c in summary["cells"]]
    third = invoke(["sweep", str(toml), "--local", "--out", str(out), "--quiet"])
    assert "ran 0 runs, 4 cached" in third.output


def test_output_directory_from_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.toml").write_text('[sweep]\noutput = "results/g"\n[base]\nnodes = 5\ncycles = 2\neval_every = 1')
    result = invoke(["sweep", "g.toml", "--local", "--quiet"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "results" / "g").iterdir()} == {"runs", "sweep.json", "sweep.csv", "sweep.png"}


@pytest.mark.parametrize(("text", "words"), [
    ("[base]\nnodez = 5", ["bad.toml", "[base] nodez", "not a simulation setting"]),
    ("[grid]\ndrop = [0.0, 2.0]", ["bad.toml", "cell 1 (drop=2.0)", "--drop"]),
    ("[base]\nnodes = ", ["bad.toml", "not valid TOML"]),
    ("[base]\nnodes = 5\ncycles = 2\n[grid]\ndataset = ['digits', 'missing.csv']",
     ["bad.toml", "cell 1 (dataset=missing.csv)", "missing.csv"]),
])
def test_bad_input_is_one_line_exit_2(tmp_path, text, words):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    error = one_error_line(invoke(["sweep", str(bad), "--local", "--out", str(tmp_path / "out"), "--quiet"]))
    for word in words:
        assert word in error
    assert not (tmp_path / "out" / "sweep.json").exists()


def test_conflicting_flags_are_refused(tmp_path):
    toml = tmp_path / "t.toml"
    toml.write_text(TINY)
    assert "--local" in one_error_line(invoke(["sweep", str(toml), "--local", "--address", "auto"]))
    assert "--workers" in one_error_line(invoke(["sweep", str(toml), "--workers", "2"]))
    assert "nope.toml" in one_error_line(invoke(["sweep", str(tmp_path / "nope.toml"), "--local"]))


def test_the_cli_imports_ray_only_to_run_a_sweep():
    code = "import sys, cli.main, gossipd.sim.sweep_ray; print('ray' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_without_ray_the_command_says_how_to_get_it(tmp_path, monkeypatch):
    toml = tmp_path / "t.toml"
    toml.write_text(TINY)
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    error = one_error_line(invoke(["sweep", str(toml), "--out", str(tmp_path / "out")]))
    assert "pip install 'gossipd[ray]'" in error and "--local" in error
    assert not (tmp_path / "out").exists()


def test_plot_metric_falls_back_to_one_that_varies():
    from gossipd.sim.sweep_plot import chosen_metric

    def cell(acc: float) -> dict:
        final = {"cycle": 10.0, "mean_accuracy": acc}
        return {"mean": final, "runs": [{"final": final}]}

    summary = {"metric": "mean_mse", "cells": [cell(0.5), cell(0.7)]}
    assert chosen_metric(summary) == "mean_accuracy"  # not the constant "cycle"
    assert chosen_metric({**summary, "metric": "cycle"}) == "cycle"  # what the spec asks, if present


# -- gossip sweep on Ray ----------------------------------------------------------------------


@pytest.fixture
def ray_dir():
    # Short and under /tmp: Ray puts unix sockets in it (at most 107 bytes a path).
    path = Path(tempfile.mkdtemp(prefix="gossip-ray-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline[:120]}")
    return found


def gossip_sweep(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    # HOME in the temp dir: Ray writes its auth token under ~/.ray.
    env = {**os.environ, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", "cli.main", "sweep", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def test_sweep_on_a_local_ray(tmp_path, ray_dir):
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY)
    out = tmp_path / "out"
    args = [str(toml), "--num-cpus", "2", "--ray-temp-dir", str(ray_dir), "--out", str(out), "--quiet"]
    first = gossip_sweep(args, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "on Ray (local)" in first.stderr
    assert "ran 4 runs, 0 cached" in first.stderr
    sessions = sorted(p.name for p in ray_dir.glob("session_2*"))
    assert len(sessions) == 1, "one Ray session, in --ray-temp-dir"
    assert any((ray_dir / sessions[0]).rglob("*.log"))
    assert processes_mentioning(str(ray_dir)) == []  # Ray was shut down with the command
    summary = check_outputs(out, 2, [1, 2])
    # A Ray task runs the same code as this process: the same seed gives the same series.
    run = summary["cells"][1]["runs"][1]
    from_ray = json.loads((out / "runs" / f"{run['key']}.json").read_text())["result"]
    here = simulate(SimulationConfig(**{**summary["cells"][1]["config"], "baselines": ("fedavg",), "seed": 2}))
    assert from_ray["series"] == here["series"]
    # A re-run finds every cell finished: nothing runs, and no Ray is started for nothing.
    second = gossip_sweep(args, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "ran 0 runs, 4 cached" in second.stderr
    assert sorted(p.name for p in ray_dir.glob("session_2*")) == sessions
    assert json.loads((out / "sweep.json").read_text())["cells"] == summary["cells"]

