"""A daemon with a built-in model runs without torch and scikit-learn (issue 13, item 4).

Two real daemons (the driver, aiohttp, sockets on 127.0.0.1) run in a fresh
interpreter, gossip until each has merged the other's model, score it, hand
out their model as msgpack and as ONNX (built without torch, checked by
onnxruntime); then the interpreter reports which heavy modules it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = textwrap.dedent("""
    import asyncio, json, sys

    from gossipd.daemon.config import load_config
    from gossipd.daemon.driver import Daemon

    BASE = sys.argv[1]
    FAST = {"listen": "127.0.0.1:0", "gossip.interval": 0.1, "peer_sampling.interval": 0.1,
            "eval_interval": 0.1, "checkpoint_interval": 0.2, "model.spec": "logreg", "data.dataset": "digits"}

    async def main():
        first = Daemon(load_config(overrides={**FAST, "state_dir": BASE + "/a", "data.share": "1/2"}))
        await first.start()
        second = Daemon(load_config(overrides={**FAST, "state_dir": BASE + "/b", "data.share": "2/2",
                                               "join": (first.address,)}))
        await second.start()
        daemons = (first, second)
        for _ in range(300):
            if all(d.node.counters.merged >= 3 and d.evaluation.get("age") for d in daemons):
                break
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        onnx_bytes, _ = await loop.run_in_executor(None, first.model_onnx)
        report = {"merged": [d.node.counters.merged for d in daemons],
                  "accuracy": [d.evaluation.get("accuracy") for d in daemons],
                  "model_bytes": len(second.model_msgpack()), "onnx_bytes": len(onnx_bytes),
                  "loaded": sorted(m for m in ("torch", "sklearn", "scipy", "matplotlib") if m in sys.modules)}
        for d in daemons:
            d.request_stop()
            await d.stop()
        print(json.dumps(report))

    asyncio.run(main())
""")


@pytest.mark.timeout(120)
def test_a_builtin_model_daemon_gossips_scores_and_exports_without_torch_or_sklearn(tmp_path):
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=110)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert min(report["merged"]) >= 3, report  # both trained on each other's models
    assert all(a is not None and a > 0.5 for a in report["accuracy"]), report
    assert report["model_bytes"] > 2600 and report["onnx_bytes"] > 2600  # 650 float32 parameters each
    assert report["loaded"] == [], report
