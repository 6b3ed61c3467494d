"""Colour frames paired with depth images by header stamp (ROS-free ApproximateTime for two).

``message_filters.ApproximateTimeSynchronizer`` is not installable from pip; this is the small
equivalent the node needs, shaped for latest-frame-wins:

- Depth images wait in a buffer sorted by stamp, at most ``capacity`` of them (the oldest
  beyond are dropped and counted).
- At most one colour frame waits: a newer one resolves the waiting one first.
- A colour frame's partner is the buffered depth image nearest in stamp, if within ``slop``
  (an equal stamp is always taken). The choice is *final* once a depth image stamped at or after
  the colour frame has arrived: depth later than that can only be farther. Until then the
  colour frame waits; it is resolved (partner or none) when its partner is certain, or when a
  newer colour frame or :meth:`StampPairer.flush` comes.
- A colour frame without a depth image within ``slop`` is released unpaired and counted: the
  node gives it 2D outputs only.
- A depth image that was paired, or is older than a resolved colour frame by more than
  ``slop``, can pair with no later colour frame and leaves the buffer.

Stamps are integer nanoseconds (``sec * 10**9 + nanosec``), so "the same stamp" is exact.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C")
D = TypeVar("D")


@dataclass(frozen=True)
class Paired(Generic[C, D]):
    """A resolved colour frame.

    Attributes:
        stamp_ns: the colour frame's stamp.
        colour: the colour item.
        depth: its depth partner, None when there was none within the slop.
        depth_stamp_ns: the partner's stamp (equal to ``stamp_ns`` for an exact pair), or None.
    """

    stamp_ns: int
    colour: C
    depth: D | None
    depth_stamp_ns: int | None

    @property
    def offset_s(self) -> float | None:
        """Partner stamp - colour stamp, seconds (None without a partner)."""
        if self.depth_stamp_ns is None:
            return None
        return (self.depth_stamp_ns - self.stamp_ns) * 1e-9


class StampPairer(Generic[C, D]):
    """Pairs each colour frame with the depth image of the same or the nearest stamp.

    Args:
        slop_s: largest stamp difference of a pair, seconds (>= 0; 0 = exact stamps only).
        capacity: most depth images held (>= 1).
    """

    def __init__(self, slop_s: float = 0.0, capacity: int = 10) -> None:
        if not slop_s >= 0:
            raise ValueError(f"slop must be >= 0 seconds, got {slop_s}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.slop_ns = int(round(slop_s * 1e9))
        self.capacity = capacity
        self._stamps: list[int] = []  # depth stamps, ascending
        self._depth: list[D] = []
        self._newest_depth: int | None = None
        self._waiting: tuple[int, C] | None = None
        self.paired = 0
        """Colour frames released with a depth partner."""
        self.unpaired = 0
        """Colour frames released without one (2D outputs only)."""
        self.depth_dropped = 0
        """Depth images pushed out of the full buffer before any colour frame used them."""
        self.depth_unused = 0
        """Depth images discarded because no later colour frame can pair with them."""

    @property
    def pending_depth(self) -> int:
        """Depth images held."""
        return len(self._stamps)

    @property
    def waiting(self) -> bool:
        """Whether a colour frame waits for its partner."""
        return self._waiting is not None

    def add_depth(self, stamp_ns: int, depth: D) -> list[Paired[C, D]]:
        """Hold a depth image; returns the colour frame it resolves, if any (0 or 1 items)."""
        stamp_ns = int(stamp_ns)
        pos = bisect.bisect_right(self._stamps, stamp_ns)
        self._stamps.insert(pos, stamp_ns)
        self._depth.insert(pos, depth)
        while len(self._stamps) > self.capacity:
            del self._stamps[0], self._depth[0]
            self.depth_dropped += 1
        if self._newest_depth is None or stamp_ns > self._newest_depth:
            self._newest_depth = stamp_ns
        if self._waiting is not None and self._final(self._waiting[0]):
            return [self._resolve()]
        return []

    def add_colour(self, stamp_ns: int, colour: C) -> list[Paired[C, D]]:
        """Take a colour frame; returns the frames resolved now (0, 1 or 2 items, in order).

        A colour frame still waiting is resolved first with the best partner it has (latest
        frame wins: the node would replace it anyway). The new frame is returned at once when
        its partner is certain, else it waits.
        """
        out = [self._resolve()] if self._waiting is not None else []
        self._waiting = (int(stamp_ns), colour)
        if self._final(int(stamp_ns)):
            out.append(self._resolve())
        return out

    def flush(self) -> list[Paired[C, D]]:
        """Resolve the waiting colour frame, if any, with the best partner it has."""
        return [self._resolve()] if self._waiting is not None else []

    def clear(self) -> None:
        """Forget every held item (e.g. the stamps went back: another recording); counters stay."""
        self._stamps.clear()
        self._depth.clear()
        self._newest_depth = None
        self._waiting = None

    # -- internals ----------------------------------------------------------------------------
    def _final(self, stamp_ns: int) -> bool:
        """Whether no depth image yet to come can be a better partner for ``stamp_ns``."""
        return self._newest_depth is not None and self._newest_depth >= stamp_ns

    def _resolve(self) -> Paired[C, D]:
        assert self._waiting is not None
        stamp, colour = self._waiting
        self._waiting = None
        best = self._nearest(stamp)
        if best is None:
            self.unpaired += 1
            result = Paired(stamp, colour, None, None)
        else:
            depth_stamp = self._stamps.pop(best)
            result = Paired(stamp, colour, self._depth.pop(best), depth_stamp)
            self.paired += 1
        # Depth older than this frame's window can pair with no later colour frame.
        stale = bisect.bisect_left(self._stamps, stamp - self.slop_ns)
        if stale:
            del self._stamps[:stale], self._depth[:stale]
            self.depth_unused += stale
        return result

    def _nearest(self, stamp: int) -> int | None:
        """Index of the held depth nearest to ``stamp`` within the slop (earlier wins ties)."""
        pos = bisect.bisect_left(self._stamps, stamp)
        best, best_gap = None, None
        for i in (pos - 1, pos):
            if 0 <= i < len(self._stamps):
                gap = abs(self._stamps[i] - stamp)
                if gap <= self.slop_ns and (best_gap is None or gap < best_gap):
                    best, best_gap = i, gap
        return best
