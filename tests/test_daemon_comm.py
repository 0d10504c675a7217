"""Real daemons with a codec and subsampling: they learn, and a node that predates v2 refuses them cleanly."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import FAST, DaemonProc, get_json, post, start_network, stop_all, wait_for  # noqa: E402

from gossipd import testing, wire  # noqa: E402
from gossipd.core import codec  # noqa: E402
from gossipd.core.messages import ModelMessage, Parts  # noqa: E402
from gossipd.core.scaling import FeatureStats  # noqa: E402

pytestmark = pytest.mark.timeout(240)

COMM = ["--codec", "int8", "--partitions", "4", "--subsample", "0.5"]

# A gossipd that speaks only protocol version 1, as every node before v2 did: the same code with
# SUPPORTED_VERSIONS = (1,), which is exactly the check an old node runs on a v2 body.
OLD_GOSSIPD = [sys.executable, "-c",
               "import gossipd.wire as w; w.SUPPORTED_VERSIONS = (1,); "
               "from gossipd.daemon.main import main; main()"]


def test_five_int8_subsampling_daemons_learn(tmp_path: Path) -> None:
    procs = start_network(tmp_path, 5, extra=COMM)
    try:
        def mean_accuracy() -> float | None:
            accs = [get_json(p.url + "/v1/status")["evaluation"]["accuracy"] for p in procs]
            if None in accs:
                return None
            mean = float(np.mean(accs))
            return mean if mean >= 0.85 else None

        started = time.monotonic()
        reached = wait_for(mean_accuracy, 90, 0.5)
        assert reached, "mean accuracy did not reach 0.85 within 90 s"
        print(f"int8, 2 of 4 partitions a push: mean accuracy {reached:.3f} after {time.monotonic() - started:.1f} s")
        for p in procs:
            c = get_json(p.url + "/v1/status")["counters"]
            assert c["merged"] > 0 and c["rejected"] == 0, c
    finally:
        stop_all(procs)


def test_mixed_versions_a_v1_node_refuses_v2_and_the_v2_node_drops_it(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    new = DaemonProc(tmp_path / "new", ["--share", "1/2", *FAST, *COMM]).start()
    monkeypatch.setattr(testing, "GOSSIPD", OLD_GOSSIPD)
    old = DaemonProc(tmp_path / "old", ["--share", "2/2", *FAST, "--join", new.wait_listening()]).start()
    procs = [new, old]
    try:
        for p in procs:
            p.wait_ready()
        status = get_json(old.url + "/v1/status")
        n, k = status["model"]["params"], status["model"]["stat_columns"]
        layout_size = len(range(0, n, 4)) + len(range(1, n, 4))
        v2 = ModelMessage("http://127.0.0.1:1", status["model"]["fingerprint"], 10.0,
                          codec.roundtrip("int8", np.full(layout_size, 0.01, np.float32)),
                          FeatureStats(1.0, np.zeros(k), np.ones(k)), "int8", Parts(4, (0, 1), (10.0, 10.0)))
        code, body = post(old.url + "/v1/gossip/model", wire.encode(v2, cluster="default"))
        assert code == 400 and json.loads(body) == {
            "error": "unsupported_version", "supported": [1],
            "detail": "protocol version 2 is not supported; this node speaks 1"}
        # The upgraded node's own pushes get the same answer; it counts them as refused and lets the old
        # node go, while the old node's v1 pushes are merged by the new one.
        assert wait_for(lambda: get_json(old.url + "/v1/status")["counters"]["rejected"] >= 2, 30)
        assert wait_for(lambda: "unsupported_version" in new.log(), 10), new.log()[-2000:]
        assert wait_for(lambda: get_json(new.url + "/v1/status")["counters"]["merged"] >= 1, 30)
        assert get_json(old.url + "/v1/status")["counters"]["merged"] == 0
        assert get_json(old.url + "/v1/status")["model"]["age"] == 0  # untouched
    finally:
        stop_all(procs)


def test_codec_and_partition_errors_over_http(tmp_path: Path) -> None:
    proc = DaemonProc(tmp_path / "node", ["--share", "1/4", "--gossip-interval", "3600", "--shuffle-interval",
                                          "3600", "--partitions", "4"]).start()
    try:
        proc.wait_ready()
        status = get_json(proc.url + "/v1/status")
        n, k, fp = status["model"]["params"], status["model"]["stat_columns"], status["model"]["fingerprint"]
        stats = FeatureStats(1.0, np.zeros(k), np.ones(k))
        size = len(range(0, n, 5))
        cut5 = ModelMessage("http://127.0.0.1:1", fp, 1.0, np.zeros(size, np.float32), stats, "fp16",
                            Parts(5, (0,), (1.0,)))
        code, body = post(proc.url + "/v1/gossip/model", wire.encode(cut5, cluster="default"))
        assert (code, json.loads(body)["error"]) == (409, "wrong_partitions")
        bad = bytearray(wire.encode(ModelMessage("http://127.0.0.1:1", fp, 1.0, np.zeros(n, np.float32), stats,
                                                 "fp16"), cluster="default"))
        at = bad.index(b"fp16")
        bad[at:at + 4] = b"fp12"
        code, body = post(proc.url + "/v1/gossip/model", bad)
        err = json.loads(body)
        assert (code, err["error"], err["supported"]) == (400, "bad_codec", ["fp32", "fp16", "int8"])
        assert get_json(proc.url + "/v1/status")["model"]["age"] == 0  # nothing merged
        # A whole fp16 model (v2, no parts) is merged into every partition.
        whole = ModelMessage("http://127.0.0.1:1", fp, 5.0, np.zeros(n, np.float32), stats, "fp16")
        code, body = post(proc.url + "/v1/gossip/model", wire.encode(whole, cluster="default"))
        assert code == 200 and json.loads(body)["merged"] is True
    finally:
        stop_all([proc])
