"""Real daemons and their data: a followed CSV file that grows, regression in status and
metrics. One lone daemon per kind, shared by the tests of this module (no peers, so its
model changes only through the data it is given)."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from harness import FAST, DaemonProc, admin_get, get_json, post, start_network, stop_all, wait_for  # noqa: E402

from gossipd import wire  # noqa: E402
from gossipd.core.learner import make_learner  # noqa: E402
from gossipd.core.messages import ModelMessage  # noqa: E402
from gossipd.core.scaling import Scaling  # noqa: E402
from gossipd.core.spec import Schema  # noqa: E402
from gossipd.core.state import ModelState  # noqa: E402
from gossipd.data import load_raw  # noqa: E402

pytestmark = pytest.mark.timeout(180)

WINES = ("barolo", "grignolino", "barbera")  # wine's three cultivars, as a user's CSV would name them
START_ROWS = 120


def wine_lines(idx: np.ndarray) -> str:
    ex = load_raw("wine")
    return "".join(",".join(f"{v:g}" for v in ex.X[i]) + f",{WINES[int(ex.y[i])]}\n" for i in idx)


@pytest.fixture(scope="module")
def wine_csv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProc, Path, np.ndarray]]:
    """A daemon following wine.csv, which starts with 120 of the 178 rows; the rest is for appending."""
    base = tmp_path_factory.mktemp("wine")
    ex = load_raw("wine")
    order = np.random.default_rng(3).permutation(len(ex.y))
    path = base / "wine.csv"
    path.write_text(",".join(name.replace("/", "_") for name in ex.feature_names) + ",cultivar\n"
                    + wine_lines(order[:START_ROWS]))
    proc = DaemonProc(base / "node", ["--dataset", str(path), *FAST, "--seed", "4"]).start()
    try:
        proc.wait_ready()
        yield proc, path, order[START_ROWS:]
    finally:
        stop_all([proc])


def status(proc: DaemonProc) -> dict[str, Any]:
    return get_json(proc.url + "/v1/status")


def urlread(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read()


def test_rows_appended_to_a_followed_csv_are_trained_on_at_once(wine_csv) -> None:
    """Complete lines are taken (a half-written last line waits for its newline) and trained on
    as they arrive: the model's age rises by the number that joined the training part."""
    proc, path, rest = wine_csv
    before = status(proc)
    assert before["model"]["task"] == "classification" and before["data"]["following"] == str(path)
    assert before["data"]["arrived"] == 0 and before["counters"]["merged"] == 0
    lines = wine_lines(rest[:40]) + wine_lines(rest[40:41])[:-1]  # 40 lines and most of a 41st
    with path.open("a") as fh:
        fh.write(lines)
    after = wait_for(lambda: (st := status(proc))["data"]["arrived"] >= 40 and st, 20)
    assert after["data"]["arrived"] == 40
    trained = after["data"]["train_examples"] - before["data"]["train_examples"]
    held = after["data"]["test_examples"] - before["data"]["test_examples"]
    assert trained + held == 40 and 20 <= trained <= 40
    assert after["model"]["age"] == before["model"]["age"] + trained  # no peers: only the new rows trained it
    with path.open("a") as fh:
        fh.write("\n")  # the 41st line completes
    assert wait_for(lambda: status(proc)["data"]["arrived"] == 41, 20)


def test_a_row_with_an_unknown_label_is_refused_and_nothing_else_changes(wine_csv) -> None:
    proc, path, rest = wine_csv
    before = status(proc)
    bad = wine_lines(rest[41:43]).replace("barolo", "merlot").replace("grignolino", "merlot")
    bad = bad.replace("barbera", "merlot")
    with path.open("a") as fh:
        fh.write(bad)
    after = wait_for(lambda: (st := status(proc))["data"]["refused"] >= 2 and st, 20)
    assert after["data"]["refused"] == 2
    assert after["data"]["arrived"] == before["data"]["arrived"]
    assert after["model"]["age"] == before["model"]["age"]
    assert wait_for(lambda: "merlot" in proc.log() and "not one of the model's classes" in proc.log(), 10)
    assert proc.alive()


def test_a_regression_daemon_reports_rmse_and_r2_in_status_and_metrics(tmp_path: Path) -> None:
    """diabetes: the task's step size (0.1) by default, RMSE and R² where a classifier has
    accuracy, in /v1/status and as Prometheus gauges."""

    procs = start_network(tmp_path, 2, extra=["--dataset", "diabetes", "--seed", "3"])
    try:
        st = wait_for(lambda: (s := status(procs[0]))["evaluation"].get("rmse") is not None
                      and s["counters"]["merged"] > 3 and s, 60)
        assert st["model"]["task"] == "regression" and st["model"]["stat_columns"] == 11
        ev = st["evaluation"]
        assert ev["accuracy"] is None and 30 < ev["rmse"] < 120 and -1 < ev["r2"] < 1
        metrics = (urlread(procs[0].url + "/metrics")).decode()
        rmse_line = next(line for line in metrics.splitlines() if line.startswith("gossipd_rmse "))
        assert 30 < float(rmse_line.split()[1]) < 120
        assert "gossipd_r2 " in metrics and "gossipd_accuracy" not in metrics
        assert "gossipd_train_examples " in metrics and "gossipd_test_examples " in metrics
        # Predictions are values in the target's units.
        ex = load_raw("diabetes")

        def same_model() -> tuple[dict[str, Any], ModelMessage] | None:
            """A prediction and the model it came from (the two nodes keep gossiping meanwhile)."""
            code, got = post_json(procs[0], "/v1/predict", {"rows": ex.X[:20].tolist()})
            assert code == 200 and "labels" not in got, got
            model = wire.decode(admin_get(procs[0], "/v1/model?format=msgpack"), cluster="default")
            return (got, model) if model.age == got["model_age"] else None

        got, model = wait_for(same_model, 30, interval=0.05)
        schema = Schema.regression(10, feature_names=ex.feature_names)
        learner = make_learner("logreg", schema, scaling=Scaling.network())
        want = learner.predict(ModelState(model.params, model.age), ex.X[:20], model.stats)
        np.testing.assert_allclose(got["values"], want, rtol=1e-5)
        assert 25 < np.mean(got["values"]) < 350  # disease progression is 25..346
    finally:
        stop_all(procs)


def rows_of_wine(idx: np.ndarray) -> tuple[list[list[float]], list[str]]:
    ex = load_raw("wine")
    return ex.X[idx].tolist(), [WINES[int(ex.y[i])] for i in idx]


def post_json(proc: DaemonProc, path: str, doc: Any, token: bool = True) -> tuple[int, Any]:
    code, body = post(proc.url + path, json.dumps(doc).encode(), "application/json",
                      token=proc.admin_token if token else None)
    return code, json.loads(body)


def test_post_data_takes_rows_as_json_or_msgpack_and_trains_on_them(wine_csv) -> None:
    proc, _, rest = wine_csv
    before = status(proc)
    X, labels = rows_of_wine(rest[43:53])
    code, got = post_json(proc, "/v1/data", {"rows": X, "labels": labels})
    assert code == 200, got
    assert got["added"] == 10 and got["train"] + got["held_out"] == 10
    assert got["age"] == before["model"]["age"] + got["train"]
    X, labels = rows_of_wine(rest[53:58])  # the last 5 of the 58 rows not in the file at start
    code, body = post(proc.url + "/v1/data", msgpack.packb({"rows": X, "labels": labels}), "application/x-msgpack",
                      token=proc.admin_token)
    assert code == 200, body
    after = status(proc)
    assert after["data"]["arrived"] == before["data"]["arrived"] + 15, (before["data"], got, body, after["data"])


@pytest.mark.parametrize(("doc", "code", "error", "fragment"), [
    ({"rows": [[1.0] * 13], "labels": ["merlot"]}, 400, "bad_rows", "'merlot' is not one of the model's classes"),
    ({"rows": [[1.0] * 12], "labels": ["barolo"]}, 400, "bad_rows", "row 0: expected a list of 13 numbers"),
    ({"rows": [[1.0] * 12 + ["x"]], "labels": ["barolo"]}, 400, "bad_rows", "row 0, feature 12"),
    ({"rows": [[1.0] * 13]}, 400, "bad_rows", '"labels" must be a list of 1 labels'),
    ({"rows": []}, 400, "bad_rows", "non-empty"),
    ([1, 2], 400, "bad_rows", "expected an object"),
])
def test_post_data_refuses_bad_rows_and_changes_nothing(wine_csv, doc, code, error, fragment) -> None:
    proc, _, _ = wine_csv
    before = status(proc)
    got_code, got = post_json(proc, "/v1/data", doc)
    assert (got_code, got["error"]) == (code, error) and fragment in got["detail"], got
    after = status(proc)
    assert after["model"]["age"] == before["model"]["age"]
    assert after["data"]["train_examples"] == before["data"]["train_examples"]


def test_data_and_predict_need_the_admin_token_and_a_body_they_can_read(wine_csv) -> None:
    proc, _, _ = wine_csv
    for path in ("/v1/data", "/v1/predict"):
        code, got = post_json(proc, path, {"rows": [[1.0] * 13]}, token=False)
        assert (code, got["error"]) == (401, "token_required")
        code, body = post(proc.url + path, b"rows=1", "application/x-www-form-urlencoded", token=proc.admin_token)
        assert (code, json.loads(body)["error"]) == (415, "unsupported_media_type")
        code, body = post(proc.url + path, b"{not json", "application/json", token=proc.admin_token)
        assert (code, json.loads(body)["error"]) == (400, "bad_body")
    code, body = post(proc.url + "/v1/predict", msgpack.packb({"rows": [[1.0] * 13]}), "application/x-msgpack",
                      token=proc.admin_token)
    assert code == 415  # predictions are asked for in JSON


def test_predict_answers_class_names_and_probabilities_of_the_current_model(wine_csv) -> None:
    """The answer is the model /v1/model hands out, applied to raw rows by the learner."""
    proc, _, _ = wine_csv
    ex = load_raw("wine")
    X = ex.X[:100]
    code, got = post_json(proc, "/v1/predict", {"rows": X.tolist()})
    assert code == 200, got
    model = wire.decode(admin_get(proc, "/v1/model?format=msgpack"), cluster="default")
    assert isinstance(model, ModelMessage) and got["model_age"] == model.age
    assert got["classes"] == sorted(WINES)  # class names are sorted text
    schema = Schema.classification(13, 3, class_names=got["classes"],
                                   feature_names=[n.replace("/", "_") for n in ex.feature_names])
    learner = make_learner("logreg", schema, scaling=Scaling.network())
    assert learner.fingerprint == got["fingerprint"]
    probs = learner.outputs(ModelState(model.params, model.age), X, model.stats)
    np.testing.assert_allclose(got["probabilities"], probs, atol=2e-6)
    assert got["labels"] == [got["classes"][i] for i in probs.argmax(axis=1)]
    accuracy = np.mean([label == WINES[int(t)] for label, t in zip(got["labels"], ex.y[:100])])
    assert accuracy > 0.8


@pytest.mark.slow
def test_a_user_conv_module_trains_in_three_daemons(tmp_path: Path, user_conv_spec: str) -> None:
    """Issue 11 acceptance: the user's conv + linear module file (not part of the package),
    three daemons on digits images, mean held-out accuracy >= 0.90."""

    procs = start_network(tmp_path, 3, extra=["--model", user_conv_spec, "--seed", "2"])
    try:
        def mean_accuracy() -> float | None:
            accs = [status(p)["evaluation"]["accuracy"] for p in procs]
            return None if None in accs else float(np.mean(accs))

        reached = wait_for(lambda: (m := mean_accuracy()) is not None and m >= 0.90 and m, 120, interval=0.5)
        sts = [status(p) for p in procs]
        assert reached, [st["evaluation"] for st in sts]
        assert all(st["model"]["spec"] == user_conv_spec and st["model"]["params"] == 1370 for st in sts)
        assert all(st["counters"]["merged"] > 0 for st in sts)
    finally:
        stop_all(procs)
