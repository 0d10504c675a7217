"""Every example in examples/ runs in one command (here with small sizes) and says what it measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(script: str, *args: str, cwd: Path) -> dict:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cnn_digits_example(tmp_path):
    out = run_example("cnn_digits/run.py", "--nodes", "10", "--cycles", "20", "--out", "m.onnx", cwd=tmp_path)
    assert (tmp_path / "m.onnx").stat().st_size > 0
    assert out["gossip_mean_accuracy"] > 0.6 and out["parity"] <= 1e-4
    assert abs(out["onnx_accuracy"] - out["gossip_mean_accuracy"]) < 0.2


def test_diabetes_regression_example(tmp_path):
    out = run_example("diabetes_regression/run.py", "--nodes", "20", "--cycles", "40", "--out", "d.onnx",
                      cwd=tmp_path)
    assert (tmp_path / "d.onnx").stat().st_size > 0
    assert out["ratio"] < 1.2 and out["parity"] <= 1e-5
    assert abs(out["onnx_rmse"] - out["gossip_rmse"]) < 10


def test_growing_csv_example(tmp_path):
    """Two daemons follow growing CSV directories (lines appended, files added): every row
    written arrives, is trained on, and the nodes gossip while it happens."""
    out = run_example("growing_csv/run.py", "--workdir", str(tmp_path / "demo"), "--seconds", "6", "--rate", "30",
                      cwd=tmp_path)
    assert out["written"] == [180, 180] and out["arrived"] == out["written"]
    for (first, last), (age0, age1) in zip(out["train_examples"], out["age"]):
        assert last > first and age1 >= age0 + (last - first)
    assert min(out["merged"]) > 0
    assert all(last > first for first, last in out["accuracy"])
