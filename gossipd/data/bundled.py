"""The data sets bundled with scikit-learn (nothing is downloaded)."""

from __future__ import annotations

import numpy as np

from gossipd.data.examples import Examples

BUNDLED = ("digits", "breast_cancer", "wine", "diabetes")
#: What each bundled set is: (task, input shape or () for flat rows).
_KIND: dict[str, tuple[str, tuple[int, ...]]] = {
    "digits": ("classification", (1, 8, 8)),  # 8x8 grey images, one channel
    "breast_cancer": ("classification", ()),
    "wine": ("classification", ()),
    "diabetes": ("regression", ()),
}


def load_bundled(name: str) -> Examples:
    from sklearn import datasets  # imported lazily: scikit-learn is slow to import

    loader = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "diabetes": datasets.load_diabetes,
    }[name]
    bunch = loader()
    task, shape = _KIND[name]
    return Examples(name=name, X=np.asarray(bunch.data, dtype=np.float64), y=np.asarray(bunch.target),
                    feature_names=tuple(str(f) for f in bunch.feature_names), input_shape=shape, task=task)
