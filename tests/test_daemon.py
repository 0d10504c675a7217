"""Real gossipd processes over 127.0.0.1: bad input, restarts, failures, learning."""

from __future__ import annotations

import json
import math
import re
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import FAST, DaemonProc, admin_get, get_json, post, start_network, stop_all, wait_for  # noqa: E402

from gossipd import wire  # noqa: E402
from gossipd.core.messages import ModelMessage  # noqa: E402
from gossipd.core.scaling import FeatureStats  # noqa: E402

pytestmark = pytest.mark.timeout(240)


def model_body(status: dict[str, Any], *, age: float = 100.0, params: np.ndarray | None = None,
               cluster: str | None = None, arch: str | None = None) -> bytes:
    n = status["model"]["params"]
    p = params if params is not None else np.full(n, 0.01, dtype=np.float32)
    msg = ModelMessage("http://127.0.0.1:1", arch or status["model"]["fingerprint"], age, p, some_stats(status))
    return wire.encode(msg, cluster=cluster or status["cluster"])


def some_stats(status: dict[str, Any]) -> FeatureStats | None:
    """Scaling statistics of the size the node expects (network-learned scaling), else None."""
    k = status["model"].get("stat_columns", 0)
    return FeatureStats(1.0, np.zeros(k), np.ones(k)) if k else None


def raw_model(status: dict[str, Any], **override: Any) -> bytes:
    """A model message as a plain dict, to break one field at a time."""
    n = status["model"]["params"]
    msg: dict[str, Any] = {
        "v": 1, "type": "model", "cluster": status["cluster"], "sender": "http://127.0.0.1:1",
        "arch": status["model"]["fingerprint"], "age": 10.0,
        "params": {"dtype": "<f4", "shape": [n], "data": np.zeros(n, np.float32).tobytes()},
    }
    k = status["model"].get("stat_columns", 0)
    if k:
        msg["stats"] = {"count": 1.0, "mean": np.zeros(k, "<f4").tobytes(), "var": np.ones(k, "<f4").tobytes()}
    for key, value in override.items():
        if value is None:
            msg.pop(key)
        else:
            msg[key] = value
    return msgpack.packb(msg, use_bin_type=True)


def current_model(proc: DaemonProc) -> tuple[np.ndarray, float]:
    body = admin_get(proc, "/v1/model?format=msgpack")
    msg = wire.decode(body, cluster="default")
    assert isinstance(msg, ModelMessage)
    return np.array(msg.params), msg.age


def urlread(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


@pytest.fixture(scope="module")
def lone(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One daemon with no peers: nothing changes its model but what a test posts."""
    # Hour-long periods: it never contacts anyone by itself, so nothing races the tests.
    proc = DaemonProc(tmp_path_factory.mktemp("lone") / "node",
                      ["--share", "1/4", "--gossip-interval", "3600", "--shuffle-interval", "3600"]).start()
    proc.wait_ready()
    yield proc
    stop_all([proc])


def _bad_cases(status: dict[str, Any]) -> list[tuple[str, bytes, int, str]]:
    n = status["model"]["params"]
    good = model_body(status)
    deep = b"\x81\xa1a" * 10_000 + b"\xc0"
    nan = np.zeros(n, np.float32)
    nan[3] = np.nan
    inf = np.zeros(n, np.float32)
    inf[-1] = np.inf
    return [
        ("not msgpack", b"\xc1\xff garbage", 400, "*"),
        ("truncated", good[: len(good) // 2], 400, "truncated"),
        ("nested too deep", deep, 400, "too_deep"),
        ("missing field", raw_model(status, arch=None), 400, "missing_field"),
        ("unsupported version", raw_model(status, v=99), 400, "unsupported_version"),
        ("foreign cluster", model_body(status, cluster="other"), 409, "wrong_cluster"),
        ("other architecture", model_body(status, arch="0123456789abcdef"), 409, "wrong_arch"),
        ("dtype not allowed", raw_model(status, params={"dtype": "<f8", "shape": [n],
                                                          "data": np.zeros(n).tobytes()}), 400, "bad_dtype"),
        ("shape mismatch", raw_model(status, params={"dtype": "<f4", "shape": [n + 1],
                                                       "data": np.zeros(n + 1, np.float32).tobytes()}), 400, "bad_shape"),
        ("byte length mismatch", raw_model(status, params={"dtype": "<f4", "shape": [n],
                                                             "data": b"\0" * (4 * n - 4)}), 400, "bad_shape"),
        ("NaN", model_body(status, params=nan), 400, "non_finite"),
        ("Inf", model_body(status, params=inf), 400, "non_finite"),
        ("negative age", raw_model(status, age=-1.0), 400, "bad_age"),
        ("non-finite age", raw_model(status, age=math.inf), 400, "bad_age"),
        ("missing scaling stats", raw_model(status, stats=None), 400, "missing_field"),
        ("scaling stats of another size", raw_model(status, stats={"count": 1.0, "mean": b"\0" * 8,
                                                                   "var": b"\0" * 8}), 400, "bad_stats"),
        ("over the size limit", b"\0" * (wire.max_body_bytes(n) + 10), 413, "too_large"),
    ]


def test_malformed_input_gets_4xx_and_leaves_model_untouched(lone: DaemonProc) -> None:
    url = lone.url
    status = get_json(url + "/v1/status")
    # Give the model a non-trivial age and parameters first.
    code, body = post(url + "/v1/gossip/model", model_body(status, age=500.0))
    assert code == 200, body
    before = get_json(url + "/v1/status")
    params_before, age_before = current_model(lone)
    assert age_before >= 500
    cases = _bad_cases(status)
    for name, payload, want_status, want_code in cases:
        code, body = post(url + "/v1/gossip/model", payload)
        assert code == want_status, (name, code, body[:200])
        err = json.loads(body)
        assert err["detail"], name
        if want_code != "*":
            assert err["error"] == want_code, (name, err)
        if want_code == "unsupported_version":
            assert err["supported"] == list(wire.SUPPORTED_VERSIONS)
            assert "1" in err["detail"]
    after = get_json(url + "/v1/status")
    params_after, age_after = current_model(lone)
    assert after["model"]["age"] == before["model"]["age"] == age_after
    assert after["model"]["fingerprint"] == before["model"]["fingerprint"]
    assert np.array_equal(params_before, params_after)
    assert after["counters"]["rejected"] - before["counters"]["rejected"] == len(cases)
    assert after["counters"]["merged"] == before["counters"]["merged"]


def test_rejections_are_summarised_per_sender_and_reason(lone: DaemonProc) -> None:
    status = get_json(lone.url + "/v1/status")
    foreign = model_body(status, cluster="other")
    for _ in range(40):
        assert post(lone.url + "/v1/gossip/model", foreign)[0] == 409
    assert get_json(lone.url + "/v1/status")["counters"]["rejected"] >= 40  # every one is counted ...
    line = "rejected POST /v1/gossip/model from 127.0.0.1: wrong_cluster"
    assert lone.log().count(line) == 1  # ... and logged once a minute at most


def test_shuffle_endpoint_rejects_models_and_answers_requests(lone: DaemonProc) -> None:
    status = get_json(lone.url + "/v1/status")
    code, body = post(lone.url + "/v1/gossip/shuffle", model_body(status))
    assert code == 400 and b"wrong_endpoint" in body
    from gossipd.core.messages import PeerDescriptor, ShuffleReply, ShuffleRequest

    req = ShuffleRequest("http://127.0.0.1:9", (PeerDescriptor("http://127.0.0.1:9", 0),))
    code, body = post(lone.url + "/v1/gossip/shuffle", wire.encode(req, cluster="default"))
    assert code == 200
    assert isinstance(wire.decode(body, cluster="default"), ShuffleReply)
    peers = get_json(lone.url + "/v1/peers")["peers"]
    assert "http://127.0.0.1:9" in [p["address"] for p in peers]


def test_admin_join_validates_and_adds(lone: DaemonProc) -> None:
    token = lone.admin_token
    code, body = post(lone.url + "/v1/admin/join", b"{not json", "application/json", token=token)
    assert code == 400 and b"bad_json" in body
    code, body = post(lone.url + "/v1/admin/join", b'{"peer": "ftp://x"}', "application/json", token=token)
    assert code == 400 and b"bad_peer" in body
    code, body = post(lone.url + "/v1/admin/join", b'{"peer": "http://127.0.0.1:7"}', "application/json",
                      token=token)
    assert code == 200, body
    assert "http://127.0.0.1:7" in get_json(lone.url + "/v1/peers")["seeds"]


def test_probes_and_metrics(lone: DaemonProc) -> None:
    assert get_json(lone.url + "/healthz")["status"] == "ok"
    metrics = urlread(lone.url + "/metrics").decode()
    status = get_json(lone.url + "/v1/status")
    assert f"gossipd_model_age {float(status['model']['age'])}" in metrics or "gossipd_model_age" in metrics
    assert "gossipd_rejected_total" in metrics
    for key in ("node_id", "version", "protocol", "cluster", "advertise", "uptime_s", "model", "peers",
                "counters", "evaluation"):
        assert key in status
    assert set(status["counters"]) >= {"sent", "received", "merged", "rejected", "send_failures"}
    code, body = post(lone.url + "/v1/nope", b"")
    assert code == 404 and b'"error"' in body


def test_readyz_needs_a_peer(tmp_path: Path) -> None:
    procs = [DaemonProc(tmp_path / name, ["--share", f"{k}/4", *FAST]).start() for k, name in ((2, "a"), (3, "b"))]
    try:
        a, b = procs
        a.wait_ready()
        b.wait_ready()
        import urllib.error

        with pytest.raises(urllib.error.HTTPError) as info:
            urlread(a.url + "/readyz")
        assert info.value.code == 503
        assert json.loads(info.value.read())["ready"] is False
        assert post(a.url + "/v1/admin/join", json.dumps({"peer": b.url}).encode(), "application/json",
                    token=a.admin_token)[0] == 200
        assert get_json(a.url + "/readyz")["ready"] is True
        # The join shuffled with b at once, so b knows a without waiting for a period.
        assert wait_for(lambda: a.url in [e["address"] for e in get_json(b.url + "/v1/peers")["peers"]], 5)
    finally:
        stop_all(procs)


def test_sigterm_then_restart_restores_bit_identical_model(tmp_path: Path) -> None:
    state_dir = tmp_path / "node"
    proc = DaemonProc(state_dir, ["--share", "1/3", *FAST]).start()
    proc.wait_ready()
    status = get_json(proc.url + "/v1/status")
    for age in (50.0, 300.0):
        assert post(proc.url + "/v1/gossip/model", model_body(status, age=age))[0] == 200
    params, age = current_model(proc)
    node_id = status["node_id"]
    assert proc.terminate() == 0
    assert "checkpoint written" in proc.log()
    assert not (state_dir / "endpoint").exists()
    proc2 = DaemonProc(state_dir, ["--share", "1/3", *FAST]).start()
    try:
        proc2.wait_ready()
        params2, age2 = current_model(proc2)
        assert age2 == age
        assert params2.tobytes() == params.tobytes()
        status2 = get_json(proc2.url + "/v1/status")
        assert status2["node_id"] == node_id
        assert status2["counters"]["merged"] == 2
    finally:
        stop_all([proc2])


def test_restarted_node_rejoins_through_an_address_it_knew_once_it_is_back(tmp_path: Path) -> None:
    """a (no seeds) knows b only; a restarts while b is down, its saved view dead. b comes
    back later at its old address, fresh and knowing nobody: a's memory alone reconnects them."""
    from urllib.parse import urlsplit

    a = DaemonProc(tmp_path / "a", ["--share", "1/2", *FAST]).start()
    b = None
    try:
        a_url = a.wait_ready()
        b = DaemonProc(tmp_path / "b", ["--share", "2/2", "--join", a_url, *FAST]).start()
        b_url = b.wait_ready()
        assert wait_for(lambda: b_url in [p["address"] for p in get_json(a_url + "/v1/peers")["peers"]], 30)
    finally:
        stop_all([p for p in (a, b) if p is not None])
    a = DaemonProc(tmp_path / "a", ["--share", "1/2", *FAST]).start()
    b = None
    try:
        a_url = a.wait_ready()
        assert wait_for(lambda: get_json(a_url + "/v1/status")["peers"] == 0, 30), "the saved view should be dead"
        shutil.rmtree(tmp_path / "b")
        b = DaemonProc(tmp_path / "b", ["--share", "2/2", "--listen", f"127.0.0.1:{urlsplit(b_url).port}", *FAST])
        assert b.start().wait_ready() == b_url
        assert wait_for(lambda: b_url in [p["address"] for p in get_json(a_url + "/v1/peers")["peers"]], 30)
        assert "rejoin through" in a.log()
    finally:
        stop_all([p for p in (a, b) if p is not None])


def test_corrupt_checkpoint_is_set_aside(tmp_path: Path) -> None:
    state_dir = tmp_path / "node"
    state_dir.mkdir()
    (state_dir / "checkpoint.msgpack").write_bytes(b"\x93garbage that is not a checkpoint")
    proc = DaemonProc(state_dir, ["--share", "1/3", *FAST]).start()
    try:
        proc.wait_ready()
        assert get_json(proc.url + "/v1/status")["model"]["age"] == 0
        assert list(state_dir.glob("checkpoint.msgpack.rejected-*"))
        assert "not used" in proc.log()
    finally:
        stop_all([proc])


def test_invalid_config_stops_startup_with_one_line(tmp_path: Path) -> None:
    import subprocess

    run = subprocess.run([sys.executable, "-m", "gossipd", "--gossip-interval", "-1", "--state-dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "gossip.interval" in lines[0], run.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('listen = "127.0.0.1:0"\n[gossip]\nintervall = 3\n')
    run = subprocess.run([sys.executable, "-m", "gossipd", "--config", str(bad)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and "gossip.intervall" in run.stderr and "unknown" in run.stderr


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "gossipd", "--listen", f"127.0.0.1:{port}", "--state-dir",
                              str(tmp_path)], capture_output=True, text=True, timeout=90)
    assert run.returncode == 1
    assert "cannot bind" in run.stderr and "Traceback" not in run.stderr


def test_sd_notify_ready_and_stopping(tmp_path: Path) -> None:
    import os
    import subprocess

    sock_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(sock_path)
        sock.settimeout(90)
        env = {**os.environ, "NOTIFY_SOCKET": sock_path}
        proc = subprocess.Popen([sys.executable, "-m", "gossipd", "--listen", "127.0.0.1:0", "--state-dir",
                                 str(tmp_path / "s"), *FAST], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            # Bound first (STATUS says it is loading), READY=1 once the model is loaded.
            first = sock.recv(4096).decode()
            assert first.startswith("STATUS=listening on http://127.0.0.1:") and "loading" in first
            ready = sock.recv(4096).decode()
            assert ready.startswith("READY=1")
            url = (tmp_path / "s" / "endpoint").read_text().strip()
            assert get_json(url + "/v1/status")["model"]["age"] == 0  # serving once READY
            proc.send_signal(signal.SIGTERM)
            assert sock.recv(4096).decode().startswith("STOPPING=1")
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_five_daemons_learn_and_survive_a_lost_peer(tmp_path: Path) -> None:
    procs = start_network(tmp_path, 5)
    try:
        def mean_accuracy() -> float | None:
            accs = [get_json(p.url + "/v1/status")["evaluation"]["accuracy"] for p in procs if p.alive()]
            if None in accs:  # a node not evaluated yet (a loaded machine): keep waiting
                return None
            mean = float(np.mean(accs))
            return mean if mean > 0.85 else None

        started = time.monotonic()
        assert wait_for(mean_accuracy, 60, 0.5), "mean accuracy did not pass 0.85 within 60 s"
        print(f"mean accuracy passed 0.85 after {time.monotonic() - started:.1f} s")

        # Every node should come to know the victim before it goes.
        victim = procs[-1]
        wait_for(lambda: all(victim.url in [e["address"] for e in get_json(p.url + "/v1/peers")["peers"]]
                             for p in procs[:2]), 20)
        victim.kill()
        survivors = procs[:-1]

        def victim_dropped() -> bool:
            return all(victim.url not in [e["address"] for e in get_json(p.url + "/v1/peers")["peers"]]
                       for p in survivors)

        assert wait_for(victim_dropped, 30), "a dead peer stayed in the views"
        failures = sum(get_json(p.url + "/v1/status")["counters"]["send_failures"] for p in survivors)
        assert failures >= 1
        for p in survivors:
            assert p.alive(), p.log()[-2000:]
            assert get_json(p.url + "/healthz")["status"] == "ok"
    finally:
        stop_all(procs)
    assert all(p.proc is not None and p.proc.returncode in (0, -9) for p in procs)
    # Logs an operator can read: view changes as lines of their own, failures with their reason.
    logs = "\n".join(p.log() for p in survivors)
    assert re.search(r"INFO gossipd: view: \d+ peers?; entered http://127\.0\.0\.1:\d+", logs)
    assert f"cannot reach {victim.url}: connection refused" in logs
    assert "ssl:default" not in logs
    assert not re.search(r"\w+Error: *$", logs, re.MULTILINE), "a failure logged without its reason"


def test_onnx_from_http_scores_like_the_node(lone: DaemonProc) -> None:
    """The served ONNX file, in a fresh onnxruntime session, matches the node's own accuracy."""
    from gossipd.data import load_dataset, node_share
    from gossipd.export import read_metadata, score_onnx

    status = get_json(lone.url + "/v1/status")
    assert post(lone.url + "/v1/gossip/model", model_body(status, age=2000.0))[0] == 200
    age = get_json(lone.url + "/v1/status")["model"]["age"]
    status = wait_for(lambda: (s := get_json(lone.url + "/v1/status"))["evaluation"]["age"] == age and s, 15)
    assert status, "evaluation did not catch up with the model"
    onnx_bytes = admin_get(lone, "/v1/model?format=onnx")
    meta = read_metadata(onnx_bytes)
    assert float(meta["gossipd.age"]) == age
    assert meta["gossipd.fingerprint"] == status["model"]["fingerprint"]
    assert meta["gossipd.node_id"] == status["node_id"]
    _, _, X_test, y_test = node_share(load_dataset("digits"), "1/4", "iid")
    assert abs(score_onnx(onnx_bytes, X_test, y_test) - status["evaluation"]["accuracy"]) <= 0.005
    code, body = post(lone.url + "/v1/model?format=pickle", b"")
    assert code == 405  # GET only
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as info:
        admin_get(lone, "/v1/model?format=pickle")
    assert info.value.code == 400


async def test_requests_before_the_node_exists_get_503_starting(tmp_path: Path) -> None:
    """The socket is bound before the node is built; that window answers 503, not 500."""
    from aiohttp.test_utils import TestClient, TestServer

    from gossipd.daemon.config import load_config
    from gossipd.daemon.driver import Daemon
    from gossipd.daemon.http import Api

    daemon = Daemon(load_config(overrides={"state_dir": str(tmp_path)}))
    daemon.max_body = wire.max_body_bytes(650)
    async with TestClient(TestServer(Api(daemon).app())) as client:
        for method, path in (("GET", "/v1/status"), ("POST", "/v1/gossip/model"), ("GET", "/readyz")):
            resp = await client.request(method, path)
            assert resp.status == 503
            assert (await resp.json())["error"] == "starting"
        resp = await client.get("/healthz")  # alive: the liveness probe must not restart a loading node
        assert resp.status == 200 and (await resp.json())["status"] == "starting"
