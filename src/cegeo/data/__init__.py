"""Data: sources (``NAME[:PATH]``), imbalance profiles and the splits of a run.

* :func:`load_dataset` / :func:`list_datasets` — the source registry (digits, IDX, CIFAR pickle
  batches via a restricted unpickler, npz, CSV, image folders, a Gaussian mixture).
* :func:`make_splits` — imbalanced training subset, stratified validation split, fixed test split.
* Imbalance profiles (STEP, long-tail, explicit counts) and class groups.
"""

from ._dataset import Dataset, class_index
from ._formats import RestrictedUnpickler, read_idx, safe_unpickle
from ._sources import DatasetInfo, get_dataset_info, list_datasets, load_dataset, parse_spec
from ._splits import TEST_SPLIT_SEED, Splits, make_splits
from .imbalance import (
    Groups,
    Profile,
    explicit_counts,
    groups,
    imbalance_ratio,
    longtail_counts,
    parse_profile,
    step_counts,
    step_groups,
)

__all__ = [
    "TEST_SPLIT_SEED",
    "Dataset",
    "DatasetInfo",
    "Groups",
    "Profile",
    "RestrictedUnpickler",
    "Splits",
    "class_index",
    "explicit_counts",
    "get_dataset_info",
    "groups",
    "imbalance_ratio",
    "list_datasets",
    "load_dataset",
    "longtail_counts",
    "make_splits",
    "parse_profile",
    "parse_spec",
    "read_idx",
    "safe_unpickle",
    "step_counts",
    "step_groups",
]
