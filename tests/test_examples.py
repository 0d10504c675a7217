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
