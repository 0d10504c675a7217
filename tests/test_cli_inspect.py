"""``gossip status | peers | join | crawl | export`` against real daemons on 127.0.0.1.

Two networks, each started once for its class and stopped when the class is
done (so the 3 and the 10 daemons never compete for the CPU): three nodes for
status/peers/join/export, ten for crawl. Commands run in-process through
click's CliRunner, and once through the ``gossip`` console script.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner, Result

sys.path.insert(0, str(Path(__file__).parent))

from harness import DaemonProc, get_json, start_network, stop_all, wait_for  # noqa: E402

from cli.main import cli  # noqa: E402
from gossipd.wire import PROTOCOL_VERSION  # noqa: E402

GOSSIP = Path(sys.executable).with_name("gossip")


def invoke(*args: Any, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def ok(*args: Any, env: dict[str, str] | None = None) -> Result:
    result = invoke(*args, env=env)
    assert result.exit_code == 0, f"gossip {' '.join(map(str, args))} -> {result.exit_code}:\n{result.output}"
    return result


def ok_json(*args: Any) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def assert_one_line_error(result: Result, exit_code: int, *needles: str) -> str:
    assert result.exit_code == exit_code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert result.stdout == ""
    for needle in needles:
        assert needle in err, err
    return err


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refuses(url: str) -> bool:
    """True once nothing listens at ``url`` any more."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        pass
    return False


# -- things that are not gossipd nodes ---------------------------------------------------


class FakeHandler(BaseHTTPRequestHandler):
    mode = "html"

    def do_GET(self) -> None:  # noqa: N802
        if self.mode == "html":
            body, ctype = b"<html><body>It works!</body></html>", "text/html"
        elif self.mode == "json":
            body, ctype = json.dumps({"status": "ok", "name": "some other service"}).encode(), "application/json"
        else:  # a gossipd from the future
            body = json.dumps({"node_id": "future", "protocol": 99, "advertise": self.server_url(),
                               "model": {}, "counters": {}, "peers": 0}).encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def server_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, str]]:
    servers, urls = [], {}
    for mode in ("html", "json", "v99"):
        handler = type(f"{mode}Handler", (FakeHandler,), {"mode": mode})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        urls[mode] = f"http://127.0.0.1:{server.server_address[1]}"
    yield urls
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("command", ["status", "peers", "crawl"])
def test_unreachable_url_is_one_line(command: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    assert_one_line_error(invoke(command, url), 1, f"cannot reach {url}: connection refused")


def test_unreachable_url_console_script() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    proc = subprocess.run([str(GOSSIP), "crawl", url, "--timeout", "1"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip() == f"Error: cannot reach {url}: connection refused"


@pytest.mark.parametrize("bad", ["127.0.0.1:7070", "ftp://127.0.0.1:7070", "http://127.0.0.1:notaport",
                                 "http://127.0.0.1:7070/v1/status"])
def test_bad_url_argument_is_a_usage_error(bad: str) -> None:
    assert_one_line_error(invoke("status", bad), 2, "URL", "http(s)://HOST:PORT")


@pytest.mark.parametrize("command", ["status", "peers", "crawl", "export"])
def test_not_a_gossipd(command: str, fakes: dict[str, str], tmp_path: Path) -> None:
    extra = ["-o", tmp_path / "m.onnx"] if command == "export" else []
    for mode, why in (("html", "text/html"), ("json", "lacks")):
        url = fakes[mode]
        err = assert_one_line_error(invoke(command, url, *extra), 1, f"{url} is not a gossipd node", why)
        assert "<html>" not in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("command", ["status", "crawl"])
def test_other_protocol_version(command: str, fakes: dict[str, str]) -> None:
    url = fakes["v99"]
    assert_one_line_error(invoke(command, url), 1,
                          f"{url} speaks gossipd protocol v99; this gossip speaks {PROTOCOL_VERSION}")


def test_every_command_has_an_example() -> None:
    for command in ("status", "peers", "join", "crawl", "export", "wait"):
        assert "Example:" in ok(command, "--help").stdout, command


def test_status_table_of_a_regression_node_shows_rmse_and_r2() -> None:
    """A regressor has no accuracy: the table says RMSE (target units) and R² instead, and the
    data row says what the node follows and what arrived."""
    from rich.console import Console

    from cli.inspect_cmd import status_table

    st = {"node_id": "n1", "model": {"spec": "logreg", "params": 11, "task": "regression", "scaling": "network",
                                     "fingerprint": "f" * 16, "age": 1234.0},
          "evaluation": {"accuracy": None, "rmse": 54.06789, "r2": 0.4521, "at": None, "age": 1200.0,
                         "examples": 28},
          "data": {"dataset": "rows/", "share": "1/1", "split": "iid", "train_examples": 90, "test_examples": 28,
                   "following": "rows", "arrived": 40, "refused": 2}}
    console = Console(width=200, record=True)
    console.print(status_table("http://127.0.0.1:1", st))
    out = console.export_text()
    for text in ("rmse, r2", "RMSE 54.07, R² 0.4521 on 28 held-out examples", "regression, scaling network",
                 "90 train / 28 held out", "following rows", "40 rows arrived, 2 refused"):
        assert text in out, (text, out)
    assert "accuracy" not in out


def test_export_needs_exactly_one_source(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    assert_one_line_error(invoke("export", "http://127.0.0.1:7070", "--state-dir", tmp_path, "-o", out), 2,
                          "exactly one of URL or --state-dir", "not both")
    assert_one_line_error(invoke("export", "-o", out), 2, "exactly one of URL or --state-dir", "neither")


def test_export_offline_missing_or_corrupt_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(invoke("export", "--state-dir", empty, "-o", out), 2, str(empty), "no checkpoint")
    assert_one_line_error(invoke("export", "--state-dir", tmp_path / "nope", "-o", out), 2,
                          str(tmp_path / "nope"), "not a directory")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.msgpack").write_bytes(b"\xc1 this is not msgpack")
    assert_one_line_error(invoke("export", "--state-dir", bad, "-o", out), 2,
                          str(bad / "checkpoint.msgpack"), "not a readable checkpoint")
    assert not out.exists()


# -- three nodes: status, peers, join, export ------------------------------------------------


@pytest.fixture(scope="class")
def net3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DaemonProc]]:
    procs = start_network(tmp_path_factory.mktemp("net3"), 3)
    try:
        assert wait_for(lambda: all(get_json(p.url + "/v1/status")["peers"] >= 1 for p in procs), 30)
        # Models have travelled (age > 0) and been evaluated everywhere.
        assert wait_for(lambda: all((st := get_json(p.url + "/v1/status"))["model"]["age"] > 0
                                    and st["evaluation"]["accuracy"] is not None for p in procs), 30)
        yield procs
    finally:
        stop_all(procs)


class TestThreeNodes:
    def test_status_json_and_table(self, net3: list[DaemonProc]) -> None:
        url = net3[1].url
        st = ok_json("status", url)
        assert st["advertise"] == url
        assert st["protocol"] == PROTOCOL_VERSION and st["cluster"] == "default"
        assert st["model"]["spec"] == "logreg" and st["model"]["params"] == 650 and st["model"]["age"] > 0
        assert 0.0 <= st["evaluation"]["accuracy"] <= 1.0
        assert st["peers"] >= 1 and st["uptime_s"] > 0
        assert set(st["counters"]) >= {"sent", "received", "merged", "rejected", "send_failures"}

        out = ok("status", url).stdout
        for text in (st["node_id"], url, "default", f"protocol v{PROTOCOL_VERSION}", "logreg",
                     st["model"]["fingerprint"], "650 params", "model age", "accuracy", "peers", "uptime",
                     "merged", "send_failures"):
            assert text in out, (text, out)

    def test_status_console_script(self, net3: list[DaemonProc]) -> None:
        url = net3[0].url
        proc = subprocess.run([str(GOSSIP), "status", url], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        node_id = get_json(url + "/v1/status")["node_id"]
        assert node_id in proc.stdout and url in proc.stdout
        assert proc.stderr == ""

    def test_wait_answers_at_once_for_a_node_that_serves(self, net3: list[DaemonProc]) -> None:
        line = ok("wait", net3[1].url, "--ready", "--timeout", "30").stdout.strip()
        node_id = get_json(net3[1].url + "/v1/status")["node_id"]
        assert line.startswith(f"{net3[1].url} is ready: node {node_id}, model age ")

    def test_peers_json_and_table(self, net3: list[DaemonProc]) -> None:
        urls = {p.url for p in net3}
        url = net3[2].url
        data = ok_json("peers", url)
        assert data["advertise"] == url
        assert data["peers"], data
        for entry in data["peers"]:
            assert entry["address"] in urls - {url}
            assert isinstance(entry["age"], int) and entry["age"] >= 0
        assert data["seeds"] == [net3[0].url]

        out = ok("peers", url).stdout
        assert data["node_id"] in out and "seeds: " + net3[0].url in out
        current = {e["address"] for e in get_json(url + "/v1/peers")["peers"]}
        assert any(addr in out for addr in current)

    def test_join(self, net3: list[DaemonProc]) -> None:
        a, b = net3[1].url, net3[2].url
        token_file = net3[1].state_dir / "admin-token"
        answer = ok_json("join", a, b, "--token-file", token_file)
        assert answer["joined"] == b and isinstance(answer["peers"], int)
        assert b in get_json(a + "/v1/peers")["seeds"]
        out = ok("join", a, b, "--token-file", token_file).stdout
        assert f"{a} accepted {b} as a seed" in out

        # The daemon's own 4xx answer: one line with its detail, exit 2.
        assert_one_line_error(invoke("join", a, a, "--token-file", token_file), 2, "bad_peer", "own address",
                              "HTTP 400")
        # Without the token, or with another node's: one line saying how to give it.
        assert_one_line_error(invoke("join", a, b), 2, "HTTP 401 token_required", "--token-file")
        assert_one_line_error(invoke("join", a, b, "--token-file", net3[2].state_dir / "admin-token"), 2,
                              "HTTP 401 bad_token")
        assert_one_line_error(invoke("join", a, b, "--token-file", token_file.with_name("nope")), 2,
                              "--token-file", "cannot read")
        # A bad PEER_URL never leaves the CLI.
        assert_one_line_error(invoke("join", a, "not-a-url"), 2, "PEER_URL", "http(s)://HOST:PORT")

    def test_export_online(self, net3: list[DaemonProc], tmp_path: Path) -> None:
        from gossipd.export import read_metadata

        url = net3[0].url
        st = get_json(url + "/v1/status")
        out = tmp_path / "model.onnx"
        report = ok_json("export", url, "-o", out, "--token-file", net3[0].state_dir / "admin-token")
        assert report["path"] == str(out) and report["bytes"] == out.stat().st_size > 0
        assert report["fingerprint"] == st["model"]["fingerprint"]
        assert report["node_id"] == st["node_id"] and report["age"] >= st["model"]["age"]
        assert read_metadata(out)["gossipd.node_id"] == st["node_id"]
        assert "[batch, 64]" in report["check"] and report["task"] == "classification"
        assert [o["name"] for o in report["signature"]["outputs"]] == ["label", "probabilities"]

        table = ok("export", url, "-o", tmp_path / "again.onnx", env={"GOSSIP_ADMIN_TOKEN": net3[0].admin_token}).stdout
        for text in (str(tmp_path / "again.onnx"), "bytes", st["model"]["fingerprint"], "model age", "loads",
                     "input float32 [batch, 64]", "label int64 [batch]", "probabilities float32 [batch, 10]"):
            assert text in table, (text, table)

    def test_export_offline_matches_reported_accuracy(self, net3: list[DaemonProc], tmp_path: Path) -> None:
        """Last in the class: stops the network. The restarted node 1 has no live peer, so the
        accuracy it reports at start-up is that of the checkpoint it resumed from."""
        from gossipd.data import load_dataset, node_share
        from gossipd.export import read_metadata, score_onnx

        stop_all(net3)
        node = net3[0]
        node.start().wait_ready()
        st = wait_for(lambda: (s := get_json(node.url + "/v1/status"))["evaluation"]["accuracy"] is not None and s,
                      30)
        assert st and st["evaluation"]["age"] == st["model"]["age"]
        assert node.terminate() == 0

        out = tmp_path / "offline.onnx"
        report = ok_json("export", "--state-dir", node.state_dir, "-o", out)
        assert report["node_id"] == st["node_id"] and report["age"] == st["model"]["age"]
        assert report["fingerprint"] == st["model"]["fingerprint"]
        assert report["n_checked"] == st["data"]["test_examples"] and report["max_abs_diff"] <= 1e-5
        assert read_metadata(out)["gossipd.node_id"] == st["node_id"]

        _, _, X_te, y_te = node_share(load_dataset("digits"), "1/3", "iid")
        assert abs(score_onnx(out, X_te, y_te) - st["evaluation"]["accuracy"]) <= 0.005

        table = ok("export", "--state-dir", node.state_dir, "-o", tmp_path / "t.onnx").stdout
        assert str(tmp_path / "t.onnx") in table and "matches torch" in table


# -- ten nodes: crawl --------------------------------------------------------------------


@pytest.fixture(scope="class")
def net10(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DaemonProc]]:
    # Periods long enough that views barely change during a crawl (tens of milliseconds).
    procs = start_network(tmp_path_factory.mktemp("net10"), 10,
                          extra=["--gossip-interval", "1", "--shuffle-interval", "2"])
    try:
        mixed = wait_for(lambda: all(len(get_json(p.url + "/v1/peers")["peers"]) >= 2 for p in procs), 60)
        assert mixed, "views did not mix"
        yield procs
    finally:
        stop_all(procs)


class TestCrawl:
    def test_crawl_finds_everyone(self, net10: list[DaemonProc]) -> None:
        urls = {p.url for p in net10}
        result = ok_json("crawl", net10[4].url)
        nodes, s = result["nodes"], result["summary"]
        assert {n["url"] for n in nodes} == urls and len(nodes) == 10
        assert all(n["state"] == "ok" for n in nodes)
        assert len({n["node_id"] for n in nodes}) == 10
        assert nodes[0]["url"] == net10[4].url and nodes[0]["depth"] == 0
        assert s["nodes_reached"] == 10 and s["unreachable"] == 0 and s["complete"]
        assert s["components"] == 1 and s["component_sizes"] == [10]
        edges = result["edges"]
        assert all(a in urls and b in urls and a != b for a, b in edges)
        assert sum(n["view_size"] for n in nodes) == len(edges) == s["links"]
        assert s["indegree"]["mean"] == pytest.approx(len(edges) / 10)
        assert s["indegree"]["max"] == max(n["in_degree"] for n in nodes)
        assert s["accuracy"]["n"] == 10 and 0 < s["accuracy"]["mean"] <= 1 and s["accuracy"]["std"] >= 0
        assert s["age"]["n"] == 10 and s["age"]["mean"] > 0

    def test_crawl_table_and_dot(self, net10: list[DaemonProc], tmp_path: Path) -> None:
        dot = tmp_path / "overlay.dot"
        out = ok("crawl", net10[0].url, "--dot", dot, "--concurrency", "4").stdout
        for p in net10:
            assert p.url in out
        for text in ("10 reached, 0 unreachable", "overlay summary", "in-degree", "components", "accuracy",
                     "model age", f"wrote {dot}"):
            assert text in out, (text, out)
        text = dot.read_text()
        assert text.startswith("digraph")
        node_lines = [line for line in text.splitlines() if "[label=" in line]
        assert len(node_lines) == 10
        assert sum(1 for line in text.splitlines() if " -> " in line) >= 10
        assert "dashed" not in text

    def test_crawl_bounds(self, net10: list[DaemonProc]) -> None:
        result = ok_json("crawl", net10[0].url, "--max-nodes", "3")
        assert len(result["nodes"]) == 3 and not result["summary"]["complete"]
        assert result["summary"]["max_nodes_hit"] and result["summary"]["not_visited"] >= 1
        assert_one_line_error(invoke("crawl", net10[0].url, "--concurrency", "0"), 2, "--concurrency")

    def test_crawl_after_three_die(self, net10: list[DaemonProc], tmp_path: Path) -> None:
        """Last in the class: SIGTERM three nodes, then crawl at once, before the
        survivors have dropped them from their views (that takes seconds)."""
        dead = net10[7:]
        for p in dead:
            assert p.proc is not None
            p.proc.send_signal(signal.SIGTERM)
        # A stopping daemon closes its listening socket first, then finishes its update and
        # checkpoint: crawl as soon as all three refuse connections, not seconds later.
        assert wait_for(lambda: all(refuses(p.url) for p in dead), 20, interval=0.02)
        dead_urls = {p.url for p in dead}
        live_urls = {p.url for p in net10[:7]}
        dot = tmp_path / "after.dot"
        result = ok_json("crawl", net10[0].url, "--dot", dot, "--timeout", "2")
        table = ok("crawl", net10[0].url, "--timeout", "2").stdout
        for p in dead:  # and they shut down cleanly
            assert p.proc is not None and p.proc.wait(30) == 0

        nodes, s = result["nodes"], result["summary"]
        reached = {n["url"] for n in nodes if n["state"] == "ok"}
        unreachable = {n["url"] for n in nodes if n["state"] == "unreachable"}
        referenced = {addr for n in nodes if n["state"] == "ok" for addr in n["view"]}
        assert reached == live_urls and s["nodes_reached"] == 7
        # Every dead node still named in a live view is reported, and nothing else is.
        assert unreachable == dead_urls & referenced
        assert s["unreachable"] == len(unreachable)
        assert len(unreachable) == 3, f"dead nodes already dropped from every view: {dead_urls - referenced}"
        assert s["components"] == 1 and s["dead_links"] >= 3
        assert all(n["in_degree"] is None and n["error"] for n in nodes if n["state"] == "unreachable")
        # (The table comes from a second crawl: a dead node may have left the last view since.)
        assert "7 reached" in table and "unreachable" in table
        for line in table.splitlines():
            if any(url in line for url in dead_urls):
                assert "unreachable" in line, line
        dashed = [line for line in dot.read_text().splitlines() if "[label=" in line and "dashed" in line]
        assert len(dashed) == len(unreachable)


def test_wait_gives_up_after_its_timeout_with_the_last_reason() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    assert_one_line_error(invoke("wait", url, "--timeout", "0.5"), 1, f"{url} not up after 0.5 s",
                          "connection refused")


def test_wait_fails_at_once_on_something_that_is_not_a_gossipd(fakes: dict[str, str]) -> None:
    assert_one_line_error(invoke("wait", fakes["html"], "--timeout", "30"), 1,
                          f"{fakes['html']} is not a gossipd node")
