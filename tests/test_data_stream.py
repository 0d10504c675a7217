"""Data that keeps arriving: the bounded example store and the file follower, and how
a node takes in new examples (data and scaling statistics)."""

from __future__ import annotations

import numpy as np
import pytest

from gossipd.core.learner import LearnerConfig, make_learner
from gossipd.core.local_data import LocalData
from gossipd.core.node import GossipConfig, GossipNode
from gossipd.core.scaling import FeatureStats, Scaling
from gossipd.core.spec import Schema
from gossipd.data import DataError, ExampleStore, SourceTail, encode_labels
from peer_sampling.topology import StaticSampler

SCHEMA = Schema.classification(2, 3, feature_names=["t", "h"], class_names=["a", "b", "c"])


def rows(start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Examples whose first feature is their arrival number."""
    ids = np.arange(start, start + n, dtype=np.float32)
    return np.column_stack([ids, ids * 0.5]), (np.arange(start, start + n) % 3).astype(np.int64)


# ------------------------------------------------------------------ the store


def test_store_is_bounded_and_drops_the_oldest_first():
    store = ExampleStore(SCHEMA, max_examples=100, test_share=0.2, rng=np.random.default_rng(0))
    assert (store.train_capacity, store.test_capacity) == (80, 20)
    total = 0
    for start in range(0, 1000, 37):
        X, y = rows(start, 37)
        added = store.append(X, y)
        total += added.train + added.held_out
        assert len(store) <= 100
    assert total == 37 * len(range(0, 1000, 37))
    train, (X_te, y_te) = store.train_data(), store.held_out()
    assert len(train) == 80 and len(y_te) == 20
    ids = np.concatenate([train.X[:, 0], X_te[:, 0]])
    assert ids.min() > 1036 - 200  # only recent examples are left
    assert np.all(np.diff(train.X[:, 0]) > 0)  # oldest first
    np.testing.assert_array_equal(train.y, train.X[:, 0].astype(int) % 3)  # labels stay with their rows


def test_store_sends_about_the_held_out_share_aside_reproducibly():
    a = ExampleStore(SCHEMA, 10_000, 0.25, np.random.default_rng(5))
    b = ExampleStore(SCHEMA, 10_000, 0.25, np.random.default_rng(5))
    X, y = rows(0, 4000)
    ra, rb = a.append(X, y), b.append(X, y)
    assert (ra.train, ra.held_out, ra.evicted) == (rb.train, rb.held_out, rb.evicted)
    assert 0.22 < ra.held_out / 4000 < 0.28
    np.testing.assert_array_equal(a.held_out()[0], b.held_out()[0])
    # Held-out rows never train; the rows reported as new training rows are the training part.
    assert not set(a.held_out()[0][:, 0]) & set(a.train_data().X[:, 0])
    np.testing.assert_array_equal(ra.new_train.X, a.train_data().X)
    assert len(ra.new_train) == ra.train == a.n_train and ra.held_out == a.n_held_out


def test_store_takes_data_that_comes_already_split():
    store = ExampleStore(SCHEMA, 100, 0.25, np.random.default_rng(0))
    r1 = store.append(*rows(0, 30), held_out=False)
    r2 = store.append(*rows(30, 10), held_out=True)
    assert (r1.train, r1.held_out, r2.train, r2.held_out) == (30, 0, 0, 10)
    np.testing.assert_array_equal(store.held_out()[0], rows(30, 10)[0])
    assert len(r2.new_train) == 0 and store.n_train == 30
    # The held-out part is bounded too (ceil(100 * 0.25) = 25): the oldest leave first.
    store.append(*rows(40, 20), held_out=True)
    assert store.n_held_out == 25 and store.held_out()[0][0, 0] == 35


def test_store_version_and_cached_local_data():
    store = ExampleStore(SCHEMA, 50, 0.0, np.random.default_rng(0))
    first = store.train_data()
    assert len(first) == 0 and store.version == 0
    store.append(*rows(0, 5))
    second = store.train_data()
    assert store.version == 1 and len(second) == 5 and store.train_data() is second
    assert store.append(np.zeros((0, 2)), np.zeros(0, np.int64)).train == 0 and store.version == 1


@pytest.mark.parametrize(("X", "y", "fragment"), [
    (np.zeros((2, 3)), np.zeros(2, np.int64), "shape"),
    (np.zeros((2, 2)), np.array([0, 3]), "class indices"),
    (np.array([[np.nan, 0.0]]), np.array([0]), "NaN"),
])
def test_store_rejects_bad_examples_and_keeps_what_it_had(X, y, fragment):
    store = ExampleStore(SCHEMA, 50, 0.0, np.random.default_rng(0))
    store.append(*rows(0, 5))
    with pytest.raises(DataError, match=fragment):
        store.append(X, y)
    assert len(store) == 5 and store.version == 1


def test_store_settings_are_checked():
    for kw in (dict(max_examples=0, test_share=0.1), dict(max_examples=10, test_share=1.0),
               dict(max_examples=1, test_share=0.5)):
        with pytest.raises(DataError):
            ExampleStore(SCHEMA, rng=np.random.default_rng(0), **kw)


def test_store_for_regression_keeps_float_targets():
    store = ExampleStore(Schema.regression(2), 20, 0.0, np.random.default_rng(0))
    store.append(np.ones((3, 2)), np.array([1.5, 2.5, np.float32(3)]))
    assert store.train_data().y.dtype == np.float32
    with pytest.raises(DataError, match="NaN"):
        store.append(np.ones((1, 2)), np.array([np.nan]))


# ------------------------------------------------------------------ following files


def test_tail_follows_a_growing_csv_file(tmp_path):
    path = tmp_path / "sensor.csv"
    path.write_text("t,h,label\n1,2,a\n3,4,b\n")
    tail = SourceTail(path)
    first = tail.poll()
    assert first is not None and first.X.tolist() == [[1, 2], [3, 4]] and list(first.y) == ["a", "b"]
    assert first.feature_names == ("t", "h")
    assert tail.poll() is None  # nothing new
    with path.open("a") as fh:
        fh.write("5,6,c\n7,8")  # the writer is half-way through the last line
    second = tail.poll()
    assert second is not None and second.X.tolist() == [[5, 6]]
    with path.open("a") as fh:
        fh.write(",a\n")
    assert tail.poll().X.tolist() == [[7, 8]]
    np.testing.assert_array_equal(encode_labels(first.y, SCHEMA), [0, 1])
    path.write_text("t,h,label\n9,9,c\n")  # rewritten from scratch: read again from its header
    assert tail.poll().X.tolist() == [[9, 9]]


def test_tail_follows_a_directory(tmp_path):
    d = tmp_path / "drop"
    d.mkdir()
    (d / "001.csv").write_text("t,h,label\n1,1,a\n")
    tail = SourceTail(d)
    assert len(tail.poll()) == 1
    (d / "002.csv").write_text("t,h,label\n2,2,b\n3,3,c\n")
    np.savez(d / "003.npz", X=np.array([[4.0, 4.0]]), y=np.array(["a"]))
    (d / ".004.csv.part").write_text("t,h,label\n99,99,a\n")
    got = tail.poll()
    assert got.X[:, 0].tolist() == [2, 3, 4]
    with (d / "001.csv").open("a") as fh:
        fh.write("5,5,b\n")
    assert tail.poll().X[:, 0].tolist() == [5]
    assert tail.poll() is None  # the NPZ file is read once
    (d / "005.csv").write_text("t,humidity,label\n6,6,a\n")
    with pytest.raises(DataError, match="005.csv: columns t, humidity differ from t, h"):
        tail.poll()


def test_tail_reports_bad_rows_by_line(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("t,h,label\n1,2,a\n")
    tail = SourceTail(path)
    tail.poll()
    with path.open("a") as fh:
        fh.write("3,4,b\n5,oops,c\n")
    with pytest.raises(DataError, match="line 4, column 'h': 'oops' is not a number"):
        tail.poll()
    with pytest.raises(DataError, match="can follow a .csv file or a directory"):
        SourceTail(tmp_path / "x.npz")


# ------------------------------------------------------------------ a node taking new data


def node_on_ten_rows() -> tuple[GossipNode, ExampleStore]:
    """A node with network scaling whose store holds 10 rows of 3 classes."""
    schema = Schema.classification(2, 3)
    learner = make_learner("logreg", schema, LearnerConfig(), scaling=Scaling.network())
    store = ExampleStore(schema, 1000, 0.0, np.random.default_rng(0))
    store.append(*rows(0, 10))
    node = GossipNode("n0", learner, store.train_data(), StaticSampler("n0", [], np.random.default_rng(0)),
                      GossipConfig(), np.random.default_rng(1))
    return node, store


def test_node_takes_new_examples_into_its_data_and_its_scaling():
    node, store = node_on_ten_rows()
    assert node.stats.count == 10
    before = store.train_data()
    X, y = rows(10, 30)
    store.append(X, y)
    added = store.train_data()
    node.use_data(added, LocalData.from_numpy(X, y, 3))
    assert node.data is added and len(node.data) == 40 and len(before) == 10
    exact = FeatureStats.of(added.X)
    assert node.stats.count == 40
    np.testing.assert_allclose(node.stats.mean, exact.mean, rtol=1e-6)
    np.testing.assert_allclose(node.stats.var, exact.var, rtol=1e-6)
    assert node.state.age == 0  # no training unless asked


def test_node_can_take_a_pass_over_new_examples_at_once():
    """The daemon trains on arriving rows when they arrive: the age rises by their number,
    with the statistics that include them; the older examples are not revisited."""
    node, store = node_on_ten_rows()
    twin, _ = node_on_ten_rows()  # the same seeds: its training stream is node's
    before = node.state
    got = store.append(*rows(10, 7))
    node.use_data(store.train_data(), got.new_train, train=True)
    assert node.state.age == before.age + 7
    assert not np.array_equal(node.state.params, before.params)
    assert node.stats.count == 17
    # The same pass, by hand: one update on the 7 new rows under the pooled statistics.
    expected = twin.learner.update(before, got.new_train, twin._learn_rng, node.stats)
    np.testing.assert_allclose(node.state.params, expected.params, rtol=1e-6)
