"""Seeded hold-out splits for code-free data sources that ship no validation or test split of their own.

One place decides the rule (a share of the training samples, at least one each, disjoint, from the run's seed),
so an .npz file and an image folder without `val`/`test` are split the same way and the same seed gives the
same split on every run (resume and the dense cache rely on that).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from hwprune.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holdout:
    """Which splits to cut from the training samples, how large, and from which seed."""

    seed: int
    val: bool  # cut a validation split (none was given)
    test: bool  # cut a test split (none was given)
    share: float = 0.1  # of the training samples, per cut split (rounded down, at least 1)


def split(n: int, holdout: Holdout, where: str, labels: np.ndarray | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted (train, val, test) indices into `n` training samples; a split not cut is empty.

    With `labels` the cut is stratified: every class gives its share in proportion to its size.
    """
    cut_val = max(1, int(n * holdout.share)) if holdout.val else 0
    cut_test = max(1, int(n * holdout.share)) if holdout.test else 0
    if n - cut_val - cut_test < 1:
        missing = " and ".join(name for name, cut in (("validation", cut_val), ("test", cut_test)) if cut)
        raise DataError(f"{where}: {n} training sample(s) are too few to hold out a {missing} split "
                        f"(need at least {cut_val + cut_test + 1})",
                        hint="add training samples, or give the validation and test splits yourself")
    rng = np.random.default_rng(holdout.seed)
    order = rng.permutation(n)
    if labels is not None:
        # Rank each sample within its class (in the seeded order) as a jittered fraction of the class size:
        # taking the lowest fractions first takes every class in proportion to its size.
        key = np.empty(n)
        for label in np.unique(labels):
            members = order[labels[order] == label]
            key[members] = (np.arange(len(members)) + rng.random(len(members))) / len(members)
        order = np.argsort(key, kind="stable")
    val, test, train = np.split(order, [cut_val, cut_val + cut_test])
    if holdout.test:
        log.warning("%s: no test split given; testing on a seeded %d %% of the training samples (%d, never "
                    "trained on): the test score then comes from the training data's held-out part, not from "
                    "independent test data", where, round(holdout.share * 100), cut_test)
    return np.sort(train), np.sort(val), np.sort(test)
