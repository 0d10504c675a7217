"""Issue 9 against real gossipd processes on 127.0.0.1: keys, forgeries, rotation, hostile clients.

One keyed daemon with hour-long periods (nothing changes its model or view
but what a test sends) takes every forged, replayed, re-addressed or stale
peer message, bad addresses, browsers and slow clients. Small clusters show
that sealing costs no convergence, that keys rotate without a rejected
message, that a daemon with 1024 file descriptors stays reachable under 1,500
slow connections, and that mutual TLS works. Messages are sealed here with the
library the daemons use (``gossipd.envelope``), as a key holder would.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import DaemonProc, admin_get, get_json, post, stop_all, wait_for  # noqa: E402

from gossipd import envelope, wire  # noqa: E402
from gossipd.core.messages import Message, ModelMessage, PeerDescriptor, ShuffleReply, ShuffleRequest  # noqa: E402
from gossipd.core.scaling import FeatureStats  # noqa: E402
from gossipd.security import Keyring, ReplayGuard  # noqa: E402

pytestmark = pytest.mark.timeout(300)

CLUSTER = "default"
ATTACKER = "http://127.0.0.1:1"  # a sender address; nothing listens there
ELSEWHERE = "http://127.0.0.1:2"  # another node a message could have been meant for
HOUR = ["--gossip-interval", "3600", "--shuffle-interval", "3600"]
FAST = ["--gossip-interval", "0.3", "--shuffle-interval", "0.5"]


def key_line(i: int) -> str:
    return base64.b64encode(bytes([i]) * 32).decode()


@dataclass(frozen=True)
class Keys:
    dir: Path
    ring: Keyring  # the cluster's
    other: Keyring  # a key nobody in the cluster holds

    @property
    def path(self) -> Path:
        return self.dir / "keyring"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("keys")
    (d / "keyring").write_text(key_line(1) + "\n")
    (d / "keyring").chmod(0o600)
    return Keys(d, Keyring.parse(key_line(1)), Keyring.parse(key_line(99)))


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def start_all(procs: list[DaemonProc]) -> list[DaemonProc]:
    """Start every daemon at once (their torch imports overlap), then wait for each."""
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.wait_ready()
    except BaseException:
        stop_all(procs)
        raise
    return procs


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[DaemonProc]:
    """One keyed daemon that never gossips by itself; short header and body timeouts."""
    base = tmp_path_factory.mktemp("keyed")
    cfg = write_config(base / "node.toml", "header_timeout = 2.0\nbody_timeout = 2.0\n")
    proc = DaemonProc(base / "node", ["--share", "1/4", *HOUR, "--keyring", str(keys.path), "--config", str(cfg)])
    start_all([proc])
    yield proc
    stop_all([proc])


def status(proc: DaemonProc) -> dict[str, Any]:
    return get_json(proc.url + "/v1/status")


def view(proc: DaemonProc) -> list[str]:
    return sorted(e["address"] for e in get_json(proc.url + "/v1/peers")["peers"])


def snapshot(proc: DaemonProc) -> tuple[float, str, list[str]]:
    """What a refused message must not change: model age, fingerprint, peer view."""
    st = status(proc)
    return st["model"]["age"], st["model"]["fingerprint"], view(proc)


def rejections(proc: DaemonProc) -> dict[str, int]:
    return status(proc)["security"]["rejections"]


def seal(message: Message, ring: Keyring, to: str, now: float | None = None) -> bytes:
    return bytes(envelope.seal_message(message, cluster=CLUSTER, keyring=ring, to=to,
                                       now=time.time() if now is None else now))


def a_model(proc: DaemonProc, age: float = 100.0, sender: str = ATTACKER) -> ModelMessage:
    """A model this node would merge (its architecture, size and scaling statistics)."""
    st = status(proc)
    n, k = st["model"]["params"], st["model"].get("stat_columns", 0)
    stats = FeatureStats(1.0, np.zeros(k), np.ones(k)) if k else None
    return ModelMessage(sender, st["model"]["fingerprint"], age, np.full(n, 0.01, np.float32), stats)


class Poster:
    """POSTs over one keep-alive connection (thousands of forgeries in a few seconds)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def post(self, path: str, body: bytes, content_type: str = "application/x-msgpack") -> tuple[int, dict[str, Any]]:
        self.conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        resp = self.conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if resp.headers.get_content_type() == "application/json" else {}

    def close(self) -> None:
        self.conn.close()


def flip_positions(body: bytes) -> tuple[list[int], int]:
    """Every byte of the envelope's clear part, a spread of ciphertext bytes, the whole tag; and ct's start."""
    ct_len = len(msgpack.unpackb(body, raw=False)["ct"])
    ct_start = len(body) - ct_len
    tail = range(len(body) - 16, len(body))
    return sorted({*range(ct_start), *range(ct_start, len(body), 97), *tail}), ct_start


# -- forgeries ----------------------------------------------------------------------------


KINDS = {
    "model": "/v1/gossip/model",
    "shuffle_request": "/v1/gossip/shuffle",
    "shuffle_reply": "/v1/gossip/shuffle",  # nobody should POST a reply: it still has to pass the seal first
}


def make(kind: str, proc: DaemonProc) -> Message:
    if kind == "model":
        return a_model(proc, age=100.0)
    entries = (PeerDescriptor("http://127.0.0.1:3", 0),)
    return ShuffleRequest(ATTACKER, entries) if kind == "shuffle_request" else ShuffleReply(ATTACKER, entries)


@pytest.mark.parametrize("kind", list(KINDS))
def test_forged_replayed_readdressed_and_stale_messages_get_401_and_change_nothing(
        keyed: DaemonProc, keys: Keys, kind: str) -> None:
    path, msg = KINDS[kind], make(kind, keyed)
    poster = Poster(keyed.url)
    try:
        before, counts = snapshot(keyed), rejections(keyed)
        cases = [
            ("unsealed", wire.encode(msg, cluster=CLUSTER), "unauthenticated"),
            ("sealed with an unknown key", seal(msg, keys.other, keyed.url), "unauthenticated"),
            ("re-addressed to another node", seal(msg, keys.ring, ELSEWHERE), "unauthenticated"),
            ("2 minutes old", seal(msg, keys.ring, keyed.url, now=time.time() - 120), "stale"),
        ]
        for name, body, code in cases:
            got, err = poster.post(path, body)
            assert (got, err.get("error")) == (401, code), (kind, name, err)
            assert err["detail"], name
        good = seal(msg, keys.ring, keyed.url)
        positions, ct_start = flip_positions(good)
        for pos in positions:
            flipped = bytearray(good)
            flipped[pos] ^= 0x01
            got, err = poster.post(path, bytes(flipped))
            assert got in (400, 401) and err["error"], (kind, pos, got, err)
            if pos >= ct_start:  # inside the ciphertext or its tag: only the seal can tell
                assert (got, err["error"]) == (401, "unauthenticated"), (kind, pos, err)
        assert snapshot(keyed) == before, f"{kind}: a refused message changed the node"
        after = rejections(keyed)
        assert after.get("stale", 0) - counts.get("stale", 0) >= 1  # flips in `ts` can make more
        assert after.get("unauthenticated", 0) - counts.get("unauthenticated", 0) >= \
            3 + sum(pos >= ct_start for pos in positions)

        # Replayed: the genuine message is taken once (a reply on this endpoint is refused after its
        # seal opened: a reply only answers a request this node made), then never again.
        got, err = poster.post(path, good)
        assert got == (400 if kind == "shuffle_reply" else 200), (kind, got, err)
        if kind == "shuffle_reply":
            assert err["error"] == "wrong_endpoint"
        taken = snapshot(keyed)
        got, err = poster.post(path, good)
        assert (got, err.get("error")) == (401, "replayed"), (kind, err)
        assert snapshot(keyed) == taken
        assert rejections(keyed).get("replayed", 0) - counts.get("replayed", 0) == 1
    finally:
        poster.close()


class FakePeer:
    """An HTTP server that answers each shuffle request with the next queued body."""

    def __init__(self) -> None:
        replies: list[bytes] = []
        self.replies = replies
        self.requests = 0

        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests += 1
                body = replies.pop(0) if replies else b""
                self.send_response(200)
                self.send_header("Content-Type", "application/x-msgpack")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_bad_shuffle_replies_are_refused_and_change_nothing(keyed: DaemonProc, keys: Keys) -> None:
    """The daemon asks a fake peer (an admin join shuffles at once); each bad answer is counted by
    its code, the fake peer leaves the view, and the addresses it offered never enter it."""
    fake = FakePeer()
    offered = "http://127.0.0.1:4"
    reply = ShuffleReply(fake.url, (PeerDescriptor(offered, 0),))
    genuine = seal(ShuffleReply(fake.url, ()), keys.ring, keyed.url)
    flipped = bytearray(seal(reply, keys.ring, keyed.url))
    flipped[-20] ^= 0x01
    cases = [
        ("unsealed", wire.encode(reply, cluster=CLUSTER), "unauthenticated"),
        ("sealed with an unknown key", seal(reply, keys.other, keyed.url), "unauthenticated"),
        ("a flipped byte", bytes(flipped), "unauthenticated"),
        ("re-addressed to another node", seal(reply, keys.ring, ELSEWHERE), "unauthenticated"),
        ("2 minutes old", seal(reply, keys.ring, keyed.url, now=time.time() - 120), "stale"),
        ("from someone else", seal(ShuffleReply("http://127.0.0.1:5", (PeerDescriptor(offered, 0),)),
                                   keys.ring, keyed.url), "wrong_sender"),
        ("genuine", genuine, None),
        ("replayed", genuine, "replayed"),
    ]
    token = keyed.admin_token
    try:
        for name, body, code in cases:
            before, counts, asked = snapshot(keyed), rejections(keyed), fake.requests
            fake.replies.append(body)
            got, answer = post(keyed.url + "/v1/admin/join", json.dumps({"peer": fake.url}).encode(),
                               "application/json", token=token)
            assert got == 200, answer
            assert wait_for(lambda: fake.requests > asked, 10), name
            if code is None:
                assert wait_for(lambda: fake.url in view(keyed), 10), name
                continue
            assert wait_for(lambda: rejections(keyed).get(code, 0) == counts.get(code, 0) + 1, 10), (name, code)
            age, fingerprint, peers = snapshot(keyed)
            assert (age, fingerprint) == before[:2], name
            assert offered not in peers and fake.url not in peers, (name, peers)
            assert set(peers) <= set(before[2]), name
    finally:
        fake.close()


def test_addresses_from_the_network_are_screened(keyed: DaemonProc, keys: Keys) -> None:
    """Bad schemes, link-local and metadata hosts, paths, user info: dropped and counted, never in the view."""
    good = "http://127.0.0.1:9"
    bad = ["ftp://127.0.0.1:21", "file:///etc/passwd", "http://169.254.169.254:80", "http://[fe80::1]:80",
           "http://[fd00:ec2::254]:80", "http://user@127.0.0.1:7", "http://127.0.0.1:7/admin",
           "http://127.0.0.1", "gopher://127.0.0.1:70", "http://0.0.0.0:7070"]
    request = ShuffleRequest(ATTACKER, tuple(PeerDescriptor(a, 0) for a in [*bad, good]))
    dropped = status(keyed)["security"]["dropped_addresses"]
    code, body = post(keyed.url + "/v1/gossip/shuffle", seal(request, keys.ring, keyed.url))
    assert code == 200, body
    reply = envelope.open_message(body, cluster=CLUSTER, address=ATTACKER, keyring=keys.ring,
                                  guard=ReplayGuard(), now=time.time())
    assert isinstance(reply, ShuffleReply) and reply.sender == keyed.url  # the answer is sealed for the asker
    peers = view(keyed)
    assert good in peers and not set(bad) & set(peers)
    assert status(keyed)["security"]["dropped_addresses"] - dropped == len(bad)
    metrics = urllib.request.urlopen(keyed.url + "/metrics", timeout=5).read().decode()
    assert "gossipd_dropped_addresses_total" in metrics and 'gossipd_rejections_total{code="stale"}' in metrics

    # A sender the policy refuses refuses the whole message.
    before = snapshot(keyed)
    for sender, want in (("http://169.254.169.254:80", (403, "peer_not_allowed")),
                         ("http://127.0.0.1:7/x", (400, "bad_sender"))):
        code, body = post(keyed.url + "/v1/gossip/model", seal(a_model(keyed, sender=sender), keys.ring, keyed.url))
        assert (code, json.loads(body)["error"]) == want, body
    assert snapshot(keyed) == before


# -- browsers, admin token, HTTP hygiene ---------------------------------------------------------


def request(url: str, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_peer_endpoints_take_only_msgpack_and_nothing_answers_cors(keyed: DaemonProc) -> None:
    before, counts = snapshot(keyed), rejections(keyed)
    for path in ("/v1/gossip/model", "/v1/gossip/shuffle"):
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            code, body = post(keyed.url + path, b"\x80", ctype)
            assert (code, json.loads(body)["error"]) == (415, "unsupported_media_type"), (path, ctype)
    assert rejections(keyed)["unsupported_media_type"] - counts.get("unsupported_media_type", 0) == 6
    code, body = post(keyed.url + "/v1/admin/join", b'{"peer": "http://127.0.0.1:8"}', "text/plain",
                      token=keyed.admin_token)
    assert code == 415, body
    assert snapshot(keyed) == before
    origin = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
              "Access-Control-Request-Headers": "content-type, authorization"}
    for path in ("/v1/gossip/model", "/v1/gossip/shuffle", "/v1/admin/join", "/v1/model", "/v1/status"):
        code, headers, body = request(keyed.url + path, "OPTIONS", headers=origin)
        assert code == 403 and json.loads(body)["error"] == "cross_origin_refused", path
        assert not any(h.lower().startswith("access-control-allow") for h in headers), headers
    code, headers, _ = request(keyed.url + "/v1/status", headers={"Origin": "http://evil.example"})
    assert code == 200 and not any(h.lower().startswith("access-control-") for h in headers)


def test_admin_endpoints_need_the_token(keyed: DaemonProc) -> None:
    join = json.dumps({"peer": "http://127.0.0.1:8"}).encode()
    for method, path, body, ctype in (("GET", "/v1/model", None, None),
                                      ("GET", "/v1/model?format=onnx", None, None),
                                      ("POST", "/v1/admin/join", join, "application/json")):
        base = {"Content-Type": ctype} if ctype else {}
        for auth, code in ((None, "token_required"), ("Bearer not-the-token-at-all", "bad_token"),
                           ("Basic " + keyed.admin_token, "token_required"),
                           (f"Bearer {keyed.admin_token}x", "bad_token")):
            headers = {**base, **({"Authorization": auth} if auth else {})}
            status_code, resp_headers, answer = request(keyed.url + path, method, body, headers)
            assert (status_code, json.loads(answer)["error"]) == (401, code), (path, auth)
            assert resp_headers["WWW-Authenticate"].startswith("Bearer")
    assert "http://127.0.0.1:8" not in get_json(keyed.url + "/v1/peers")["seeds"]
    assert isinstance(wire.decode(admin_get(keyed, "/v1/model"), cluster=CLUSTER), ModelMessage)


def test_every_route_but_the_public_ones_is_locked() -> None:
    """A control endpoint added later cannot forget the token: it is not in Api.PUBLIC, so it must be locked."""
    from gossipd.daemon.http import Api

    class Service:
        max_body = 1 << 20

    app = Api(Service()).app()  # type: ignore[arg-type]
    seen = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        seen.add(path)
        if path not in Api.PUBLIC:
            assert getattr(route.handler, "locked", False), f"{route.method} {path} is not behind the admin token"
    assert {"/v1/admin/join", "/v1/model"} <= seen


def test_http_errors_are_json_and_slow_clients_are_cut_off(keyed: DaemonProc) -> None:
    host, port = keyed.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        head, _, body = s.recv(65536).partition(b"\r\n\r\n")
        assert head.split()[1] == b"400" and b"application/json" in head
        assert json.loads(body)["error"] == "bad_request"
    timed_out = status(keyed)["connections"]["timed_out"]
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the rest (header_timeout = 2 s)
        assert s.recv(1024) == b"", "a client that never finished its headers was not cut off"
    assert status(keyed)["connections"]["timed_out"] == timed_out + 1
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/gossip/model HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-msgpack\r\n"
                  b"Content-Length: 1000\r\n\r\n" + b"\x00" * 10)  # and never the rest (body_timeout = 2 s)
        head, _, body = s.recv(65536).partition(b"\r\n\r\n")
        assert head.split()[1] == b"408" and json.loads(body)["error"] == "body_timeout"


async def test_a_model_that_cannot_be_exported_is_409_never_500(tmp_path: Path, monkeypatch: Any) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    import gossipd.export
    from gossipd.daemon.config import load_config
    from gossipd.daemon.driver import Daemon
    from gossipd.daemon.http import Api, NotExportable

    daemon = Daemon(load_config(overrides={"state_dir": str(tmp_path)}))

    def broken(*args: Any, **kw: Any) -> bytes:
        raise RuntimeError("torch.onnx.export failed: unsupported operator")

    monkeypatch.setattr(gossipd.export, "export_onnx_bytes", broken)
    daemon.learner = object()
    daemon.node = types.SimpleNamespace(model=(None, None))  # type: ignore[assignment]
    held_out = (np.zeros((0, 1)), np.zeros(0))
    daemon.feed = types.SimpleNamespace(store=types.SimpleNamespace(held_out=lambda: held_out))  # type: ignore
    daemon.node_id = "n1"
    with pytest.raises(NotExportable, match="unsupported operator"):
        daemon.model_onnx()

    class Service:
        max_body = 1 << 20

        def is_starting(self) -> bool:
            return False

        def admin_denied(self, remote: str | None) -> None:
            return None

        def admin_token(self) -> str:
            return "t" * 32

        def model_onnx(self) -> tuple[bytes, str]:
            raise NotExportable("the parameters are not finite")

    async with TestClient(TestServer(Api(Service()).app())) as client:  # type: ignore[arg-type]
        resp = await client.get("/v1/model?format=onnx", headers={"Authorization": "Bearer " + "t" * 32})
        assert resp.status == 409
        assert (await resp.json())["error"] == "not_exportable"


# -- start-up --------------------------------------------------------------------------------


def gossipd(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gossipd", *args], capture_output=True, text=True, timeout=timeout)


def test_no_keyring_no_public_listen(tmp_path: Path, keys: Keys) -> None:
    run = gossipd("--listen", "0.0.0.0:0", "--advertise", "http://127.0.0.1:7070", "--state-dir", str(tmp_path))
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "security.keyring" in lines[0] and "gossip keygen" in lines[0], run.stderr
    assert "insecure" in lines[0]
    # A keyring that is not there, or not a keyring: one line naming the file, before anything binds.
    for path, why in ((tmp_path / "nope", "cannot read"), (keys.dir / "bad", "not base64")):
        if path.name == "bad":
            path.write_text("this-is-not-a-key\n")
        run = gossipd("--listen", "127.0.0.1:0", "--keyring", str(path), "--state-dir", str(tmp_path / "s"))
        assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
        assert str(path) in run.stderr and why in run.stderr
    # An advertised URL in another spelling than the canonical one: peers could not seal for it.
    run = gossipd("--advertise", "http://LOCALHOST:7070", "--state-dir", str(tmp_path))
    assert run.returncode == 2 and "advertise" in run.stderr and "lower case" in run.stderr


# -- clusters ------------------------------------------------------------------------------------


def join_all(procs: list[DaemonProc]) -> None:
    """Everyone joins the first (admin calls): gossip starts now, for the whole cluster at once."""
    for p in procs[1:]:
        code, body = post(p.url + "/v1/admin/join", json.dumps({"peer": procs[0].url}).encode(), "application/json",
                          token=p.admin_token)
        assert code == 200, body


@pytest.mark.slow
def test_a_keyed_cluster_converges_as_fast_as_an_unkeyed_one(tmp_path: Path, keys: Keys) -> None:
    """Five keyed and five unkeyed daemons start together and are joined at the same moment; the
    models each cluster merges before its mean accuracy passes 0.85 are compared. Sealing changes no
    byte the learner sees, so only refused, lost or late messages could make the keyed one slower.

    A small MLP with a small constant step: about 175 merges to 0.85, within a few percent from run
    to run (the default logistic regression gets there in ~20, too few to compare: noise decides)."""
    cfg = write_config(tmp_path / "node.toml", 'eval_interval = 0.1\n[model]\nspec = "mlp:16"\nlr = 0.02\n'
                                               "lr_decay = 1e9\n")
    clusters: dict[str, list[DaemonProc]] = {}
    for name, extra in (("plain", []), ("keyed", ["--keyring", str(keys.path)])):
        clusters[name] = [DaemonProc(tmp_path / name / f"n{k}", ["--share", f"{k}/5", "--seed", str(k), *FAST,
                                                                  "--config", str(cfg), *extra]) for k in range(1, 6)]
    start_all([p for procs in clusters.values() for p in procs])
    try:
        for procs in clusters.values():
            join_all(procs)
        reached: dict[str, dict[str, float]] = {}
        deadline = time.monotonic() + 120
        while len(reached) < 2 and time.monotonic() < deadline:
            for name, procs in clusters.items():
                sts = [status(p) for p in procs]
                accs = [s["evaluation"]["accuracy"] for s in sts]
                if name in reached or None in accs or float(np.mean(accs)) < 0.85:
                    continue
                reached[name] = {"merged": sum(s["counters"]["merged"] for s in sts),
                                 "mean_age": float(np.mean([s["evaluation"]["age"] for s in sts]))}
            time.sleep(0.05)
        print(f"models merged (and mean model age) when the mean accuracy passed 0.85: {reached}")
        assert set(reached) == {"plain", "keyed"}, f"did not converge within 120 s: {reached}"
        ratio = reached["keyed"]["merged"] / reached["plain"]["merged"]
        print(f"keyed / plain: {ratio:.3f} of the messages")
        assert ratio <= 1.2, reached
        for p in clusters["keyed"]:
            sec = status(p)["security"]
            assert sec["sealed"] and sec["rejections"] == {}, sec
    finally:
        stop_all([p for procs in clusters.values() for p in procs])


def mean_accuracy(procs: list[DaemonProc]) -> float | None:
    accs = [status(p)["evaluation"]["accuracy"] for p in procs]
    return None if None in accs else float(np.mean(accs))


def install_keyring(path: Path, *lines: str) -> None:
    """As an operator should: a complete new file renamed over the old one, never half of one."""
    tmp = path.with_suffix(".new")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.chmod(0o600)
    os.replace(tmp, path)


@pytest.mark.slow
def test_keys_rotate_on_sighup_without_a_rejected_message(tmp_path: Path) -> None:
    """Install the new key second everywhere, reload; move it first, reload; remove the old one, reload.
    Gossip goes on at every step, accuracy keeps rising, and nothing is refused until someone uses
    the removed key."""
    old, new = key_line(11), key_line(12)
    old_id, new_id = (Keyring.parse(k).primary.hex_id for k in (old, new))
    cfg = write_config(tmp_path / "node.toml", 'eval_interval = 0.1\n[model]\nspec = "mlp:16"\nlr = 0.02\n'
                                               "lr_decay = 1e9\n")
    rings = [tmp_path / f"n{k}.keyring" for k in range(1, 4)]
    for ring in rings:
        install_keyring(ring, old)
    procs = start_all([DaemonProc(tmp_path / f"n{k}", ["--share", f"{k}/3", "--seed", str(k), *FAST, "--config",
                                                       str(cfg), "--keyring", str(rings[k - 1])]) for k in range(1, 4)])
    try:
        join_all(procs)
        assert wait_for(lambda: all(status(p)["counters"]["merged"] >= 2 for p in procs), 30)
        history = [(mean_accuracy(procs), [status(p)["counters"]["merged"] for p in procs])]
        for step, (lines, ids) in enumerate((((old, new), [old_id, new_id]),  # 1: install the new key second
                                             ((new, old), [new_id, old_id]),  # 2: seal with it
                                             ((new,), [new_id])), start=1):    # 3: drop the old one
            for proc, ring in zip(procs, rings):
                install_keyring(ring, *lines)
                assert proc.proc is not None
                proc.proc.send_signal(signal.SIGHUP)
                assert wait_for(lambda: status(proc)["security"]["key_ids"] == ids, 10), (step, proc.url)
            time.sleep(2.5)  # gossip with the new keyring everywhere
            history.append((mean_accuracy(procs), [status(p)["counters"]["merged"] for p in procs]))
            for p in procs:
                assert status(p)["security"]["rejections"] == {}, (step, p.url, p.log()[-2000:])
        print("mean accuracy and models merged per node: start, after each step:", history)
        accuracies = [acc for acc, _ in history]
        assert None not in accuracies, history
        # Rising at every step, within the noise of scoring on ~150 examples a node, and clearly overall.
        assert all(b > a - 0.02 for a, b in zip(accuracies, accuracies[1:])), history
        assert accuracies[-1] > accuracies[0] + 0.1, history
        for (_, before), (_, after) in zip(history, history[1:]):
            assert all(b > a for a, b in zip(before, after)), history  # every node keeps merging

        # Only what is sealed with the removed key is refused now.
        victim = procs[0]
        code, body = post(victim.url + "/v1/gossip/model",
                          seal(a_model(victim, sender=procs[1].url), Keyring.parse(old), victim.url))
        assert (code, json.loads(body)["error"]) == (401, "unauthenticated") and old_id in json.loads(body)["detail"]
        assert status(victim)["security"]["rejections"] == {"unauthenticated": 1}

        # A broken keyring on reload: logged, the node keeps its keys and its peers. The same SIGHUP
        # re-reads the admin token: the old one stops working at once.
        old_token = victim.admin_token
        rings[0].write_text("not a key\n")
        (victim.state_dir / "admin-token").write_text("a-new-admin-token-for-this-node\n")
        victim.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        assert wait_for(lambda: "reload: keyring not changed" in victim.log(), 10), victim.log()[-2000:]
        merged = status(victim)["counters"]["merged"]
        assert status(victim)["security"]["key_ids"] == [new_id]
        assert wait_for(lambda: status(victim)["counters"]["merged"] > merged, 10)
        join = json.dumps({"peer": procs[1].url}).encode()
        assert post(victim.url + "/v1/admin/join", join, "application/json", token=old_token)[0] == 401
        assert post(victim.url + "/v1/admin/join", join, "application/json",
                    token="a-new-admin-token-for-this-node")[0] == 200
    finally:
        stop_all(procs)


@pytest.mark.slow
def test_1500_slow_connections_against_1024_file_descriptors(tmp_path: Path, keys: Keys) -> None:
    """/healthz answers every probe within 1 s and honest pushes still land while 1,500 slow clients
    hammer a daemon limited to 1024 file descriptors (ulimit -n 1024)."""

    def ulimit_1024() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    victim = DaemonProc(tmp_path / "victim", ["--share", "1/2", *FAST, "--keyring", str(keys.path)],
                        preexec_fn=ulimit_1024)
    honest = DaemonProc(tmp_path / "honest", ["--share", "2/2", *FAST, "--keyring", str(keys.path)])
    start_all([victim, honest])
    try:
        join_all([victim, honest])
        assert wait_for(lambda: status(victim)["counters"]["merged"] >= 2, 30)
        assert status(victim)["connections"]["max"] == 1024 - 256
        assert "does not fit the file descriptor limit" in victim.log()
        merged_before = status(victim)["counters"]["merged"]
        latencies, pushes = [], 0
        attack = subprocess.Popen([sys.executable, str(Path(__file__).with_name("slowloris.py")), victim.url, "1500",
                                   "10"], stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(0.5)
            deadline = time.monotonic() + 9
            next_push = time.monotonic() + 1
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                with urllib.request.urlopen(victim.url + "/healthz", timeout=1.0) as resp:  # must never time out
                    assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
                latencies.append(time.monotonic() - t0)
                if time.monotonic() >= next_push:  # an honest push from the test, sealed like a peer's
                    code, body = post(victim.url + "/v1/gossip/model",
                                      seal(a_model(victim, sender=honest.url), keys.ring, victim.url), timeout=5)
                    assert code == 200, body
                    pushes += 1
                    next_push += 1
                time.sleep(0.1)
            under_attack = status(victim)
            out, _ = attack.communicate(timeout=30)
        finally:
            attack.kill()
        slow = json.loads(out)
        conns = under_attack["connections"]
        print(f"{len(latencies)} /healthz probes: median {np.median(latencies) * 1000:.0f} ms, slowest "
              f"{max(latencies) * 1000:.0f} ms; {pushes} test pushes; slow clients: {slow}; victim: {conns}, "
              f"merged {under_attack['counters']['merged'] - merged_before} models during the attack")
        assert slow["opened"] >= 1500 and conns["evicted"] > 0  # the pressure was real
        assert conns["open"] <= conns["max"]
        # The honest peer's pushes landed too, not only the test's own.
        assert under_attack["counters"]["merged"] - merged_before > pushes
        assert victim.alive() and "Too many open files" not in victim.log()
    finally:
        stop_all([victim, honest])


@pytest.mark.slow
def test_mutual_tls(tmp_path: Path, keys: Keys) -> None:
    """Two keyed daemons over HTTPS with client certificates from a throw-away CA: they gossip; a client
    without a certificate does not get past the handshake."""
    from certs import make_ca

    ca = make_ca(tmp_path / "ca")
    client = ca.issue(tmp_path / "ca", "operator")
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    ctx.load_cert_chain(str(client.cert), str(client.key))
    procs = []
    for k in (1, 2):
        issued = ca.issue(tmp_path / "ca", f"node{k}")
        cfg = write_config(tmp_path / f"n{k}.toml", f'[tls]\ncert = "{issued.cert}"\nkey = "{issued.key}"\n'
                                                    f'ca = "{ca.cert}"\nrequire_client_cert = true\n')
        procs.append(DaemonProc(tmp_path / f"n{k}", ["--share", f"{k}/2", *FAST, "--keyring", str(keys.path),
                                                      "--config", str(cfg)], ssl_context=ctx))
    start_all(procs)

    def tls_json(url: str, ctx: ssl.SSLContext = ctx) -> Any:
        with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:
            return json.loads(resp.read())

    try:
        a, b = procs
        assert a.url.startswith("https://127.0.0.1:") and b.url.startswith("https://")
        req = urllib.request.Request(b.url + "/v1/admin/join", data=json.dumps({"peer": a.url}).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {b.admin_token}"})
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            assert resp.status == 200
        assert wait_for(lambda: all(tls_json(p.url + "/v1/status")["counters"]["merged"] >= 2 for p in procs), 30)
        for p in procs:
            st = tls_json(p.url + "/v1/status")
            assert st["security"]["tls"] and st["security"]["client_cert_required"]
            assert st["security"]["rejections"] == {} and st["counters"]["send_failures"] == 0
        anonymous = ssl.create_default_context(cafile=str(ca.cert))  # trusts the CA, shows no certificate
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            tls_json(a.url + "/healthz", anonymous)
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            get_json(a.url.replace("https://", "http://") + "/healthz")  # plain HTTP to the TLS port
    finally:
        stop_all(procs)
