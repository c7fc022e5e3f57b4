"""Channel masks in the dense model's coordinates: the source of truth across IMP rounds."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Masks:
    """For every prunable group (named by its root layer, in module order), the sorted dense channel
    indices kept."""

    dense_widths: tuple[tuple[str, int], ...]
    kept: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def full(cls, dense_widths: dict[str, int]) -> Masks:
        items = tuple(dense_widths.items())
        return cls(items, tuple((g, tuple(range(w))) for g, w in items))

    @classmethod
    def from_kept(cls, dense_widths: dict[str, int], kept: dict[str, list[int] | tuple[int, ...]]) -> Masks:
        return cls(tuple(dense_widths.items()), tuple((g, tuple(sorted(kept[g]))) for g in dense_widths))

    def kept_of(self, group: str) -> tuple[int, ...]:
        return dict(self.kept)[group]

    def widths(self) -> dict[str, int]:
        return {g: len(idx) for g, idx in self.kept}

    def prune_rates(self) -> dict[str, float]:
        dense = dict(self.dense_widths)
        return {g: 1.0 - len(idx) / dense[g] for g, idx in self.kept}

    def is_within(self, other: Masks) -> bool:
        """True when every channel kept here is also kept in `other` (masks only shrink)."""
        mine, theirs = dict(self.kept), dict(other.kept)
        return mine.keys() == theirs.keys() and all(set(mine[g]) <= set(theirs[g]) for g in mine)

    def to_json(self) -> dict[str, list[int]]:
        return {g: list(idx) for g, idx in self.kept}


def keep_count(dense_width: int, prune_rate: float, channel_multiple: int, upper: int) -> int:
    """Channels kept for `prune_rate`, rounded to the runtime's channel multiple, never more than `upper`
    (the previous round's count, so masks only shrink). Below one multiple the step halves: a layer of
    one block can still shrink (latency keeps falling below the block size, see the alignment sweep),
    while a layer narrower than a block is left alone."""
    if dense_width < channel_multiple:
        return min(dense_width, upper)
    target = dense_width * (1.0 - prune_rate)
    step = channel_multiple if target >= channel_multiple or channel_multiple < 2 else channel_multiple // 2
    keep = min(dense_width, max(step, step * round(target / step)))
    return min(keep, upper)


def geometric_targets(dense_ms: float, budget_ms: float, rounds: int) -> list[float]:
    """Round latency targets stepping geometrically from the dense latency down to the budget."""
    ratio = budget_ms / dense_ms
    return [dense_ms * math.pow(ratio, r / rounds) for r in range(1, rounds + 1)]
