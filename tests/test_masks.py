import pytest

from hwprune.prune.masks import Masks, geometric_targets, keep_count


def test_keep_count_rounds_to_multiple_and_never_grows():
    assert keep_count(96, 0.5, 8, 96) == 48
    assert keep_count(96, 0.49, 16, 96) == 48
    assert keep_count(96, 0.99, 8, 96) == 4  # at least half a block
    assert keep_count(16, 0.5, 16, 16) == 8  # a one-block layer still shrinks, by half blocks
    assert keep_count(96, 0.85, 16, 96) == 16
    assert keep_count(96, 0.0, 8, 40) == 40  # capped by the previous round
    assert keep_count(6, 0.5, 8, 6) == 6  # narrower than a block: untouched


def test_geometric_targets_end_at_budget():
    targets = geometric_targets(1.0, 0.25, 2)
    assert targets == pytest.approx([0.5, 0.25])
    assert all(a > b for a, b in zip([1.0, *targets], targets))


def test_mask_subset_relation():
    dense = {"a": 4, "b": 2}
    full = Masks.full(dense)
    smaller = Masks.from_kept(dense, {"a": [3, 1], "b": [0, 1]})
    assert smaller.kept_of("a") == (1, 3)
    assert smaller.is_within(full) and not full.is_within(smaller)
    assert smaller.widths() == {"a": 2, "b": 2}
    assert smaller.prune_rates() == {"a": 0.5, "b": 0.0}
