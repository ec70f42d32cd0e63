"""Data: imbalance profiles (and, with the training issue, sources and splits)."""

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
    "Groups",
    "Profile",
    "explicit_counts",
    "groups",
    "imbalance_ratio",
    "longtail_counts",
    "parse_profile",
    "step_counts",
    "step_groups",
]
