"""Shared fixtures: the digits data set (loaded once), small learners and data.

Every torch computation in the tests runs on one thread: the models are tiny,
threads only add overhead (and noise) on the 2-core CI machine, and the CLI and
the simulator do the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gossipd.data import Dataset, load_dataset
from gossipd.core.learner import Learner, LearnerConfig, LocalData, make_learner
from gossipd.core.spec import Schema
from gossipd.threads import one_compute_thread

torch.set_num_threads(1)
one_compute_thread()  # and numpy's BLAS


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: an expensive acceptance run (still part of `make test`; deselect with -m 'not slow')"
    )


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """sklearn's digits, split 75/25, raw pixels 0..16 (1347 train, 450 test, 64 features, 10 classes)."""
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_data(digits: Dataset) -> LocalData:
    """The whole digits training split as one node's LocalData."""
    return LocalData.from_numpy(digits.X_train, digits.y_train, digits.n_classes)


@pytest.fixture(scope="session")
def digits_scaled(digits: Dataset) -> Dataset:
    """digits standardised by its training statistics: for tests of the learner's maths
    that do not involve the scaling machinery."""
    mean, std = digits.X_train.mean(axis=0), digits.X_train.std(axis=0)
    std[std < 1e-6] = 1.0

    def z(X):
        return ((X - mean) / std).astype(np.float32)

    return Dataset(digits.name, z(digits.X_train), digits.y_train, z(digits.X_test), digits.y_test, digits.schema)


@pytest.fixture
def small_learner() -> Learner:
    """Logistic regression on 4 features and 3 classes (15 parameters), no scaling."""
    return make_learner("logreg", Schema.classification(4, 3), LearnerConfig(lr=0.5, batch_size=32, init_seed=0))


def random_local_data(n: int, n_features: int, n_classes: int, seed: int) -> LocalData:
    """``n`` random examples with labels drawn uniformly (every class is possible)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features)).astype(np.float32)
    y = rng.integers(0, n_classes, size=n)
    return LocalData.from_numpy(X, y, n_classes)


@pytest.fixture
def make_local_data():
    """``make_local_data(n, n_features, n_classes, seed)`` -> seeded random LocalData."""
    return random_local_data


@pytest.fixture
def small_data() -> LocalData:
    """10 random examples matching ``small_learner`` (fewer than one batch)."""
    return random_local_data(10, 4, 3, seed=123)


@pytest.fixture(scope="session")
def user_conv_spec() -> str:
    """``python:PATH.py:make`` of a conv + linear module file that is not part of the package."""
    return f"python:{Path(__file__).parent / 'plugins' / 'user_conv.py'}:make"
