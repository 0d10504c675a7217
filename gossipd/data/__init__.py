"""Data: bundled sets, user files and functions, splits and shares, scaling files,
a bounded store for examples that keep arriving and a reader that follows files.

Importing this package loads neither torch nor scikit-learn (the CLI reads
configuration through it); loading a bundled set imports scikit-learn then.

- examples.py  Examples (raw rows), DataError, task inference, label encoding
- bundled.py   digits, breast_cancer, wine, diabetes (scikit-learn's own copies)
- sources.py   CSV, NPZ, a directory of them, python:PATH.py:LOADER / pkg.module:LOADER
- dataset.py   Dataset (schema + 75/25 split), load_dataset, node_share
- splits.py    iid | labels | dirichlet:ALPHA splits, K/N shares
- scaling.py   the scaling a config names (network | none | fixed:PATH)
- store.py     ExampleStore: bounded, oldest out first, held-out share
- tail.py      SourceTail: rows appended to a CSV file or added to a directory
"""

from gossipd.data.bundled import BUNDLED
from gossipd.data.dataset import Dataset, dataset_of, load_dataset, node_share, schema_of
from gossipd.data.examples import DataError, Examples, encode_labels, infer_task
from gossipd.data.scaling import make_scaling
from gossipd.data.sources import load_raw
from gossipd.data.splits import DEFAULT_SPLIT_SEED, SPLITS, parse_share, parse_split, split_indices
from gossipd.data.store import ExampleStore
from gossipd.data.tail import SourceTail

__all__ = [
    "BUNDLED", "DEFAULT_SPLIT_SEED", "SPLITS", "DataError", "Dataset", "ExampleStore", "dataset_of", "Examples", "SourceTail",
    "encode_labels", "infer_task", "load_dataset", "load_raw", "make_scaling", "node_share", "parse_share",
    "parse_split", "schema_of", "split_indices",
]
