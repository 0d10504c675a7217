"""The data sets bundled with scikit-learn (nothing is downloaded).

scikit-learn ships them as CSV files (some gzipped) in ``sklearn/datasets/data``;
they are read here directly, without importing scikit-learn (its ``datasets``
module alone costs ~1 s and ~60 MB, more than a light daemon's whole budget).
The package is located with ``importlib.util.find_spec``, which for a
top-level name does not import it. What ``sklearn.datasets.load_*`` adds to
the raw files (feature names, diabetes' feature scaling) is repeated here, and
``tests/test_data.py`` checks every set against ``sklearn.datasets.load_*``.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
from pathlib import Path

import numpy as np

from gossipd.data.examples import DataError, Examples

BUNDLED = ("digits", "breast_cancer", "wine", "diabetes")
#: What each bundled set is: (task, input shape or () for flat rows).
_KIND: dict[str, tuple[str, tuple[int, ...]]] = {
    "digits": ("classification", (1, 8, 8)),  # 8x8 grey images, one channel
    "breast_cancer": ("classification", ()),
    "wine": ("classification", ()),
    "diabetes": ("regression", ()),
}

# The feature names scikit-learn's loaders give (they are in its code, not in the files).
_DIGITS_FEATURES = tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8))
_WINE_FEATURES = (
    "alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols", "flavanoids",
    "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue", "od280/od315_of_diluted_wines", "proline",
)
_CANCER_MEASURES = ("radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity",
                    "concave points", "symmetry", "fractal dimension")
_CANCER_FEATURES = (tuple(f"mean {m}" for m in _CANCER_MEASURES) + tuple(f"{m} error" for m in _CANCER_MEASURES)
                    + tuple(f"worst {m}" for m in _CANCER_MEASURES))
_DIABETES_FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


def data_dir() -> Path:
    """``sklearn/datasets/data`` of the installed scikit-learn (not imported)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the bundled data sets come with scikit-learn, which is not installed "
                        "(pip install scikit-learn)")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def _header_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``load_csv_data`` format: a header ``n_samples,n_features,names...``,
    then rows of features with the integer class last."""
    with path.open(newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows)
        n, d = int(header[0]), int(header[1])
        data = np.array([r for r in rows], dtype=np.float64)
    if data.shape != (n, d + 1):
        raise DataError(f"{path}: expected {n} rows of {d + 1} values, found shape {data.shape}")
    return data[:, :-1], data[:, -1].astype(int)


def _gzip_txt(path: Path, delimiter: str | None = None) -> np.ndarray:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return np.loadtxt(fh, delimiter=delimiter)


def _diabetes(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """``load_diabetes(scaled=True)``: each feature centred, divided by its standard deviation
    and by sqrt(n) (so each column has unit norm)."""
    X = _gzip_txt(folder / "diabetes_data_raw.csv.gz")
    y = _gzip_txt(folder / "diabetes_target.csv.gz")
    std = np.nanstd(X, axis=0)  # of the raw columns, in this order, as sklearn.preprocessing.scale does
    X -= np.nanmean(X, axis=0)
    X /= np.where(std == 0.0, 1.0, std)
    X /= X.shape[0] ** 0.5
    return X, y


def load_bundled(name: str) -> Examples:
    folder = data_dir()
    try:
        if name == "digits":
            data = _gzip_txt(folder / "digits.csv.gz", delimiter=",")
            X, y, names = data[:, :-1], data[:, -1].astype(int), _DIGITS_FEATURES
        elif name == "breast_cancer":
            (X, y), names = _header_csv(folder / "breast_cancer.csv"), _CANCER_FEATURES
        elif name == "wine":
            (X, y), names = _header_csv(folder / "wine_data.csv"), _WINE_FEATURES
        elif name == "diabetes":
            (X, y), names = _diabetes(folder), _DIABETES_FEATURES
        else:
            raise DataError(f"unknown bundled data set {name!r}; expected one of {', '.join(BUNDLED)}")
    except OSError as exc:
        raise DataError(f"bundled data set {name}: cannot read scikit-learn's copy: {exc}") from None
    task, shape = _KIND[name]
    return Examples(name=name, X=np.asarray(X, dtype=np.float64), y=np.asarray(y), feature_names=names,
                    input_shape=shape, task=task)
