"""Data: bundled sets, the stratified split, raw features, splits, user files
(CSV, NPZ, directories, loader functions), task inference and node shares.
The store and the file follower are in test_data_stream.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gossipd.core.spec import Schema
from gossipd.data import (
    Dataset,
    DataError,
    encode_labels,
    infer_task,
    load_dataset,
    load_raw,
    node_share,
    parse_split,
    parse_share,
    split_indices,
)

BUNDLED_SHAPES = {"digits": (1797, 64, 10), "breast_cancer": (569, 30, 2), "wine": (178, 13, 3)}


def raw(source, **kw):
    ex = load_raw(source, **kw)
    return ex.name, ex.X, ex.y


def class_counts(y: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(y, minlength=n_classes)


# ------------------------------------------------------------------ bundled sets and split


@pytest.mark.parametrize("name", sorted(BUNDLED_SHAPES))
def test_bundled_sets_load_with_right_shapes(name):
    n, d, c = BUNDLED_SHAPES[name]
    ds = load_dataset(name)
    assert ds.name == name
    assert ds.n_features == d and ds.n_classes == c
    assert ds.X_train.shape[1] == ds.X_test.shape[1] == d
    assert len(ds.X_train) == len(ds.y_train) and len(ds.X_test) == len(ds.y_test)
    assert len(ds.y_train) + len(ds.y_test) == n
    assert len(ds.y_test) == math.ceil(0.25 * n)
    assert ds.X_train.dtype == np.float32 and ds.X_test.dtype == np.float32
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert set(np.unique(ds.y_train)) == set(range(c)) == set(np.unique(ds.y_test))
    assert np.isfinite(ds.X_train).all() and np.isfinite(ds.X_test).all()


@pytest.mark.parametrize("name", sorted(BUNDLED_SHAPES))
def test_split_is_stratified(name):
    ds = load_dataset(name)
    y_all = load_raw(name).y
    overall = np.bincount(np.unique(y_all, return_inverse=True)[1]) / len(y_all)
    p_train = class_counts(ds.y_train, ds.n_classes) / len(ds.y_train)
    p_test = class_counts(ds.y_test, ds.n_classes) / len(ds.y_test)
    # Stratification: each class within about one test example of its overall share.
    assert np.abs(p_test - overall).max() <= 1.5 / len(ds.y_test)
    assert np.abs(p_train - overall).max() <= 1.5 / len(ds.y_train) + 1e-9


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "wine", "diabetes"])
def test_bundled_sets_equal_scikit_learns_loaders(name):
    """The files are read without importing scikit-learn; what they hold, the names and
    diabetes' scaling are exactly what sklearn.datasets.load_* gives."""
    from sklearn import datasets

    ours = load_raw(name)
    theirs = getattr(datasets, f"load_{name}")()
    assert np.array_equal(ours.X, theirs.data)
    assert np.array_equal(ours.y, theirs.target)
    assert ours.feature_names == tuple(theirs.feature_names)


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "wine", "diabetes"])
@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("test_size", [0.25, 0.4])
def test_train_test_split_equals_scikit_learns(name, seed, test_size):
    """The 75/25 split (stratified for classes) is scikit-learn's train_test_split, index for
    index, so results stay comparable with everything measured before it was reimplemented."""
    from sklearn.model_selection import train_test_split

    ds = load_dataset(name, seed=seed, test_size=test_size)
    ex = load_raw(name)
    y = encode_labels(ex.y, ds.schema)
    X_tr, X_te, y_tr, y_te = train_test_split(ex.X, y, test_size=test_size, random_state=seed,
                                              stratify=y if ds.task == "classification" else None)
    assert np.array_equal(ds.X_train, X_tr.astype(np.float32)) and np.array_equal(ds.y_train, y_tr)
    assert np.array_equal(ds.X_test, X_te.astype(np.float32)) and np.array_equal(ds.y_test, y_te)


def test_features_stay_raw(digits):
    """Scaling is the model's job now: the data set keeps the pixels as they are (0..16)."""
    X_all = load_raw("digits").X
    assert digits.X_train.min() == 0 and digits.X_train.max() == 16
    assert set(np.unique(digits.X_train)) <= set(np.unique(X_all))
    assert digits.schema.feature_names[:2] == ("pixel_0_0", "pixel_0_1")
    assert digits.schema.input_shape == (1, 8, 8)


def test_diabetes_is_a_regression_set():
    ds = load_dataset("diabetes")
    assert ds.task == "regression" and ds.schema.n_outputs == 1 and ds.n_classes == 0
    assert ds.y_train.dtype == np.float32 and len(ds.y_train) + len(ds.y_test) == 442
    assert ds.schema.feature_names[:3] == ("age", "sex", "bmi")
    with pytest.raises(DataError, match="regression data set, not classification"):
        load_dataset("diabetes", task="classification")


def test_same_seed_same_split_other_seed_other_split():
    a, b, c = load_dataset("wine", seed=5), load_dataset("wine", seed=5), load_dataset("wine", seed=6)
    for field in ("X_train", "y_train", "X_test", "y_test"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.X_test, c.X_test)


@pytest.mark.parametrize("size", [0.1, 0.5])
def test_test_size(size):
    ds = load_dataset("wine", test_size=size)
    assert len(ds.y_test) == math.ceil(size * 178)


# ------------------------------------------------------------------ splits


@pytest.mark.parametrize("spec", ["iid", "labels", "dirichlet:0.5", "dirichlet:100"])
@pytest.mark.parametrize("n_parts", [1, 7, 100])
def test_splits_cover_all_indices_disjointly(digits, spec, n_parts):
    y = digits.y_train
    parts = split_indices(y, n_parts, spec, np.random.default_rng(4))
    assert len(parts) == n_parts
    joined = np.concatenate(parts)
    assert len(joined) == len(y)
    assert np.array_equal(np.sort(joined), np.arange(len(y)))
    for p in parts:
        assert np.array_equal(p, np.sort(p))


@pytest.mark.parametrize("spec", ["iid", "labels"])
def test_iid_and_labels_parts_are_balanced(digits, spec):
    sizes = [len(p) for p in split_indices(digits.y_train, 100, spec, np.random.default_rng(0))]
    assert max(sizes) - min(sizes) <= 1


def test_split_is_deterministic_by_rng(digits):
    for spec in ("iid", "labels", "dirichlet:0.5"):
        a = split_indices(digits.y_train, 20, spec, np.random.default_rng(8))
        b = split_indices(digits.y_train, 20, spec, np.random.default_rng(8))
        c = split_indices(digits.y_train, 20, spec, np.random.default_rng(9))
        assert all(np.array_equal(x, z) for x, z in zip(a, b))
        assert not all(np.array_equal(x, z) for x, z in zip(a, c))


def test_labels_split_gives_one_or_two_classes_per_part(digits):
    parts = split_indices(digits.y_train, 100, "labels", np.random.default_rng(0))
    n_classes = [len(np.unique(digits.y_train[p])) for p in parts]
    assert np.mean(np.array(n_classes) <= 2) >= 0.8
    # ...whereas iid parts of the same size mix many classes.
    iid = split_indices(digits.y_train, 100, "iid", np.random.default_rng(0))
    assert np.mean([len(np.unique(digits.y_train[p])) for p in iid]) > 6


def skew(y: np.ndarray, parts: list[np.ndarray], n_classes: int) -> float:
    """Size-weighted total-variation distance of each part's label mix from the global mix."""
    overall = class_counts(y, n_classes) / len(y)
    tv = [0.5 * np.abs(class_counts(y[p], n_classes) / len(p) - overall).sum() * len(p) for p in parts if len(p)]
    return float(np.sum(tv) / len(y))


def test_dirichlet_small_alpha_is_more_skewed(digits):
    y, c = digits.y_train, digits.n_classes
    rng = np.random.default_rng(0)
    small = np.mean([skew(y, split_indices(y, 20, "dirichlet:0.1", rng), c) for _ in range(3)])
    large = np.mean([skew(y, split_indices(y, 20, "dirichlet:100", rng), c) for _ in range(3)])
    assert small > 0.5
    assert large < 0.25
    assert small > large + 0.3


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [("iid", ("iid", None)), ("labels", ("labels", None)), ("dirichlet:0.5", ("dirichlet", 0.5)),
     (" dirichlet:2 ", ("dirichlet", 2.0))],
)
def test_parse_split_accepts(spec, parsed):
    assert parse_split(spec) == parsed


@pytest.mark.parametrize(
    "spec", ["dirichlet:", "dirichlet:-1", "dirichlet:0", "dirichlet:nan", "dirichlet:inf", "dirichlet:x",
             "dirichlet", "foo", "iid:3", "labels:2", ""],
)
def test_parse_split_rejects(spec):
    with pytest.raises(DataError):
        parse_split(spec)
    with pytest.raises(DataError):
        split_indices(np.arange(10) % 2, 2, spec, np.random.default_rng(0))


def test_split_rejects_zero_parts():
    with pytest.raises(DataError):
        split_indices(np.arange(10) % 2, 0, "iid", np.random.default_rng(0))


# ------------------------------------------------------------------ user files


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def test_csv_loader_with_label_column(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    feats = rng.standard_normal((n, 3)).round(4)
    labels = np.array(["cat", "dog", "emu", "dog"] * 10)
    path = tmp_path / "animals.csv"
    # the label column in the middle: it must be found by name, not position
    write_csv(path, ["f1", "label", "f2", "f3"], [[f[0], lab, f[1], f[2]] for f, lab in zip(feats, labels)])

    name, X, y = raw(str(path))
    assert name == "animals"
    np.testing.assert_allclose(X, feats)
    assert list(y) == list(labels)

    ds = load_dataset(str(path))
    assert ds.n_features == 3 and ds.n_classes == 3
    assert ds.schema.class_names == ("cat", "dog", "emu") and ds.schema.feature_names == ("f1", "f2", "f3")
    assert len(ds.y_train) + len(ds.y_test) == n == 30 + 10
    # labels map to 0..k-1 in sorted order: dog is the middle one and the most common
    counts = class_counts(np.concatenate([ds.y_train, ds.y_test]), 3)
    assert list(counts) == [10, 20, 10]


def test_csv_loader_label_column_override_and_fallback(tmp_path):
    path = tmp_path / "t.csv"
    write_csv(path, ["a", "b", "c"], [[i, i % 2, i % 3] for i in range(12)])
    _, X, y = raw(str(path))  # no known label name: the last column
    assert X.shape == (12, 2) and list(y) == [str(i % 3) for i in range(12)]
    _, X, y = raw(str(path), label_column="b")
    assert X.shape == (12, 2) and list(y) == [str(i % 2) for i in range(12)]
    np.testing.assert_array_equal(X[:, 1], [i % 3 for i in range(12)])


def test_npz_loader(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 5))
    y = np.repeat([3, 7, 9], 20)
    path = tmp_path / "data.npz"
    np.savez(path, X=X, y=y)
    name, X2, y2 = raw(str(path))
    assert name == "data"
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(y2, y)
    ds = load_dataset(str(path))
    assert ds.n_features == 5 and ds.n_classes == 3
    assert ds.schema.class_names == ("3", "7", "9")
    assert set(np.unique(ds.y_train)) == {0, 1, 2}
    assert len(ds.y_test) == 15


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_missing_file_names_the_path(tmp_path, suffix):
    path = tmp_path / f"nowhere{suffix}"
    with pytest.raises(DataError, match="nowhere"):
        load_dataset(str(path))


def test_missing_label_column_names_the_path(tmp_path):
    path = tmp_path / "cols.csv"
    write_csv(path, ["a", "b"], [[1, 0], [2, 1]])
    with pytest.raises(DataError) as exc:
        load_raw(str(path), label_column="target")
    assert str(path) in str(exc.value) and "target" in str(exc.value)


def test_npz_missing_arrays_names_the_path(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, X=np.zeros((4, 2)))
    with pytest.raises(DataError) as exc:
        load_dataset(str(path))
    assert str(path) in str(exc.value) and "y" in str(exc.value)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("a,label\n", "header"),
        ("a,label\nx,1\n1,0\n", "line 2, column 'a': 'x' is not a number"),
        ("a,b,label\n1,2,0\n3,,1\n", "line 3, column 'b': '' is not a number"),
        ("a,b,label\n1,2,0\n3,nan,1\n", "line 3, column 'b': 'nan' is not a finite number"),
        ("a,b,label\n1,2,0\n3,4,1,9\n", ""),  # a row too long
        ("a,b,label\n1,2,0\n3,1\n", ""),  # a row too short (the label cell is missing)
    ],
    ids=["header-only", "non-numeric", "empty-cell", "nan", "long-row", "short-row"],
)
def test_malformed_csv_raises_data_error_with_path(tmp_path, content, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError) as exc:
        load_raw(str(path))
    assert str(path) in str(exc.value) and fragment in str(exc.value)


def test_csv_with_trailing_blank_line_loads(tmp_path):
    """Editors often leave an empty last line; it is not a data row."""
    path = tmp_path / "blank.csv"
    path.write_text("a,label\n1,0\n2,1\n3,0\n4,1\n\n")
    _, X, y = raw(str(path))
    assert X.shape == (4, 1) and list(y) == ["0", "1", "0", "1"]


def test_mismatched_npz_shapes(tmp_path):
    path = tmp_path / "shape.npz"
    np.savez(path, X=np.zeros((4, 2)), y=np.zeros(5))
    with pytest.raises(DataError, match="shape"):
        load_raw(str(path))


def test_single_class_and_non_finite_rejected(tmp_path):
    one = tmp_path / "one.npz"
    np.savez(one, X=np.zeros((8, 2)), y=np.zeros(8))
    with pytest.raises(DataError, match="two classes"):
        load_dataset(str(one))
    nan = tmp_path / "nan.npz"
    np.savez(nan, X=np.array([[np.nan, 1.0]] * 8), y=np.arange(8) % 2)
    with pytest.raises(DataError, match="NaN"):
        load_dataset(str(nan))


def test_npz_images_keep_their_shape_and_names(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.integers(0, 16, (40, 1, 4, 4)).astype(np.float64)
    path = tmp_path / "imgs.npz"
    np.savez(path, X=X, y=np.repeat(["no", "yes"], 20), class_names=np.array(["no", "yes"]),
             feature_names=np.array([f"p{i}" for i in range(16)]))
    ds = load_dataset(str(path))
    assert ds.schema.input_shape == (1, 4, 4) and ds.n_features == 16
    assert ds.schema.class_names == ("no", "yes") and ds.schema.feature_names[0] == "p0"
    flat = load_dataset(str(path), input_shape=(16,))
    assert flat.schema.input_shape == (16,)
    with pytest.raises(DataError, match="input shape 3x3 holds 9 values"):
        load_dataset(str(path), input_shape=(3, 3))


def test_a_directory_of_files_is_one_dataset(tmp_path):
    d = tmp_path / "incoming"
    d.mkdir()
    write_csv(d / "a.csv", ["t", "h", "label"], [[i, i * 2, i % 2] for i in range(10)])
    write_csv(d / "b.csv", ["t", "h", "label"], [[i, i * 2, i % 2] for i in range(10, 16)])
    (d / ".c.csv.part").write_text("half a file")  # hidden: a writer's file in progress
    (d / "notes.txt").write_text("not data")
    ex = load_raw(str(d))
    assert ex.name == "incoming" and ex.X.shape == (16, 2) and ex.feature_names == ("t", "h")
    np.testing.assert_array_equal(ex.X[:, 0], np.arange(16))  # files in name order
    write_csv(d / "c.csv", ["t", "humidity", "label"], [[1, 2, 0]])
    with pytest.raises(DataError, match="c has other columns"):
        load_raw(str(d))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .csv or .npz files"):
        load_raw(str(empty))


LOADER = """
import numpy as np

def tabular():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 3))
    return X, (X[:, 0] > 0).astype(int)

def described():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 4))
    return {"X": X, "y": X @ [1.0, 2.0, 0.0, -1.0] + 0.5, "feature_names": ["a", "b", "c", "d"],
            "task": "regression"}

def wrong():
    return [1, 2, 3]

def broken():
    raise OSError("sensor offline")
"""


def test_python_loaders(tmp_path, monkeypatch):
    path = tmp_path / "loaders.py"
    path.write_text(LOADER)
    ds = load_dataset(f"python:{path}:tabular")
    assert ds.task == "classification" and ds.n_features == 3 and ds.schema.class_names == ("0", "1")
    assert ds.schema.feature_names == ("x0", "x1", "x2")
    reg = load_dataset(f"python:{path}:described")
    assert reg.task == "regression" and reg.schema.feature_names == ("a", "b", "c", "d")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_raw("loaders:tabular").X.shape == (50, 3)
    for attr, fragment in (("wrong", r"must return \(X, y\)"), ("broken", "OSError: sensor offline"),
                           ("absent", "no function 'absent'")):
        with pytest.raises(DataError, match=fragment):
            load_raw(f"python:{path}:{attr}")


@pytest.mark.parametrize(("y", "declared", "task"), [
    (np.array(["a", "b", "a"]), None, "classification"),
    (np.array(["1", "2", "2"]), None, "classification"),
    (np.array([0.5, 1.25, 3.0]), None, "regression"),
    (np.array(["0.5", "1", "2"]), None, "regression"),
    (np.arange(30) % 20, None, "classification"),
    (np.arange(100), "regression", "regression"),
    (np.arange(100), "classification", "classification"),
    (np.array([0.5, 1.5]), "classification", "classification"),
])
def test_task_inference(y, declared, task):
    assert infer_task(y, declared, "d") == task


def test_ambiguous_or_impossible_tasks_say_what_to_do():
    with pytest.raises(DataError, match="100 distinct whole numbers.*task = classification | regression"):
        infer_task(np.arange(100), None, "d")
    with pytest.raises(DataError, match="regression needs numeric targets"):
        infer_task(np.array(["a", "b"]), "regression", "d")


def test_encode_labels_maps_names_to_the_schemas_classes():
    schema = Schema.classification(1, 3, class_names=["1", "2", "10"])
    np.testing.assert_array_equal(encode_labels(np.array(["10", "1", "2"]), schema), [2, 0, 1])
    np.testing.assert_array_equal(encode_labels(np.array([10.0, 2.0]), schema), [2, 1])  # numbers by value
    with pytest.raises(DataError, match="label '7' is not one of the model's classes"):
        encode_labels(np.array(["7"]), schema)
    reg = encode_labels(np.array(["1.5", "2"]), Schema.regression(1))
    assert reg.dtype == np.float32 and list(reg) == [1.5, 2.0]


def test_regression_splits_cut_by_value():
    y = np.random.default_rng(3).standard_normal(200).astype(np.float32)
    rng = np.random.default_rng(4)
    parts = split_indices(y, 5, "labels", rng)
    means = [y[p].mean() for p in parts]
    assert means == sorted(means)  # contiguous in value: the most skewed split
    dparts = split_indices(y, 5, "dirichlet:0.1", rng)
    assert np.array_equal(np.sort(np.concatenate(dparts)), np.arange(200))


@pytest.mark.parametrize("source", ["nope", "data.txt", "digits.json"])
def test_unknown_source(source):
    with pytest.raises(DataError, match="unknown dataset"):
        load_raw(source)


# ------------------------------------------------------------------ node shares


@pytest.fixture(scope="module")
def id_dataset() -> Dataset:
    """A data set whose first feature is a unique row id, so shares can be compared by id."""
    rng = np.random.default_rng(0)
    n_train, n_test = 300, 100
    y_train, y_test = rng.integers(0, 4, n_train), rng.integers(0, 4, n_test)
    X_train = np.column_stack([np.arange(n_train), rng.standard_normal(n_train)]).astype(np.float32)
    X_test = np.column_stack([np.arange(n_test) + 10_000, rng.standard_normal(n_test)]).astype(np.float32)
    return Dataset("ids", X_train, y_train.astype(np.int64), X_test, y_test.astype(np.int64),
                   Schema.classification(2, 4))


@pytest.mark.parametrize("split", ["iid", "labels", "dirichlet:0.5"])
def test_node_shares_are_disjoint_and_cover(id_dataset, split):
    n = 7
    shares = [node_share(id_dataset, f"{k}/{n}", split) for k in range(1, n + 1)]
    train_ids = np.concatenate([s[0][:, 0] for s in shares])
    test_ids = np.concatenate([s[2][:, 0] for s in shares])
    assert np.array_equal(np.sort(train_ids), np.arange(300))
    assert np.array_equal(np.sort(test_ids), np.arange(100) + 10_000)
    for X_tr, y_tr, X_te, y_te in shares:
        assert len(X_tr) == len(y_tr) and len(X_te) == len(y_te)
        np.testing.assert_array_equal(y_tr, id_dataset.y_train[X_tr[:, 0].astype(int)])  # labels stay with rows
    # test shares are cut iid whatever the training split: near-equal sizes
    test_sizes = [len(s[3]) for s in shares]
    assert max(test_sizes) - min(test_sizes) <= 1


def test_node_share_is_reproducible_without_coordination(id_dataset):
    """Two daemons computing their shares independently (same seed) agree."""
    a = node_share(id_dataset, "2/5", "labels", seed=4)
    b = node_share(id_dataset, "2/5", "labels", seed=4)
    c = node_share(id_dataset, "2/5", "labels", seed=5)
    assert all(np.array_equal(x, z) for x, z in zip(a, b))
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("share", ["0/3", "4/3", "x", "1/0", "-1/3", "1/2/3", "", "1/", "/3", "a/b"])
def test_bad_shares_rejected(id_dataset, share):
    with pytest.raises(DataError):
        parse_share(share)
    with pytest.raises(DataError):
        node_share(id_dataset, share, "iid")


@pytest.mark.parametrize(("share", "parsed"), [("1/1", (1, 1)), ("3/10", (3, 10)), ("10/10", (10, 10))])
def test_good_shares(share, parsed):
    assert parse_share(share) == parsed
