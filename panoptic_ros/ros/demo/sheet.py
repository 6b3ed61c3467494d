"""The demo's contact sheet: which frames it shows, and its panels (ROS-free).

:class:`SheetSampler` keeps evenly spaced frames of a stream of unknown length in bounded
memory; :func:`sheet_image` lays each out as ``input | node overlay | ground truth`` through
:func:`panoptic_ros.viz.contact_sheet`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from panoptic_ros.categories import LabelSet
from panoptic_ros.result import PanopticResult
from panoptic_ros.ros.demo.pairing import FrameKey, KeyedBuffer, stamp_ns
from panoptic_ros.viz import contact_sheet, overlay


@dataclass
class SheetRow:
    """One contact-sheet row: the input frame, the node's overlay and the ground truth.

    Attributes:
        key: the frame's header key.
        truth: the ground truth.
        pq: the frame's own PQ (All), or ``None`` when not scored.
        image: ndarray[H, W, 3] uint8 RGB camera frame, once it arrived.
        overlay: ndarray[H, W, 3] uint8 RGB from the node's ``~/overlay``, once it arrived.
    """

    key: FrameKey
    truth: PanopticResult
    pq: float | None
    image: np.ndarray | None = None
    overlay: np.ndarray | None = None


class SheetSampler:
    """Evenly spaced frames of a stream of unknown length, in bounded memory.

    Keeps every ``stride``-th offered frame; when more than ``capacity`` are held, every other
    one is dropped and the stride doubles, so the kept frames stay evenly spread over the
    whole run. Images and overlays arrive on their own topics, after or before the frame is
    offered (a frame offered before its image gets it through :meth:`add_image`).

    Args:
        rows: rows wanted on the sheet.
        capacity: most frames held (default ``4 * rows``).
    """

    def __init__(self, rows: int, capacity: int | None = None) -> None:
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        self.rows = rows
        self.capacity = max(capacity or 4 * rows, rows, 2)
        self._held: list[SheetRow] = []
        self._stride = 1
        self._offered = 0
        self._early: KeyedBuffer[np.ndarray] = KeyedBuffer(4)  # overlays before their frame

    def offer(self, key: FrameKey, make_row: Callable[[], SheetRow]) -> bool:
        """Offer the next frame; ``make_row`` is called only when the frame is kept."""
        keep = self._offered % self._stride == 0
        self._offered += 1
        if not keep:
            return False
        row = make_row()
        row.overlay = self._early.pop(key, row.overlay)
        self._held.append(row)
        if len(self._held) > self.capacity:
            self._held = self._held[::2]
            self._stride *= 2
        return True

    def _row(self, key: FrameKey) -> SheetRow | None:
        for row in reversed(self._held):
            if row.key == key:
                return row
        return None

    def add_image(self, key: FrameKey, image: np.ndarray) -> None:
        """Attach the camera image to a frame offered without it (if that frame is kept)."""
        row = self._row(key)
        if row is not None:
            row.image = image

    def add_overlay(self, key: FrameKey, image: np.ndarray) -> None:
        """Attach the node's overlay to its frame (held back briefly if it came first)."""
        row = self._row(key)
        if row is not None:
            row.overlay = image
            return
        self._early.put(key, image)  # its frame not offered yet (or not kept: falls out soon)

    def pick(self) -> list[SheetRow]:
        """Up to ``rows`` complete frames (image and overlay), evenly spaced, oldest first."""
        ready = [r for r in self._held if r.overlay is not None and r.image is not None]
        if len(ready) <= self.rows:
            return ready
        index = np.linspace(0, len(ready) - 1, self.rows).round().astype(int)
        return [ready[i] for i in index]


def sheet_image(rows: Iterable[SheetRow], label_set: LabelSet, t0_ns: int = 0) -> np.ndarray:
    """Render rows of ``input | node overlay | ground truth`` panels, captioned.

    Args:
        rows: frames with their image and overlay (all of one size H x W).
        label_set: categories of the ground truth (its colours,
            :func:`~panoptic_ros.viz.overlay` at full opacity with segment borders).
        t0_ns: stamp shown as time 0 in the captions, nanoseconds.

    Returns:
        ndarray[len(rows) * H, 3 * W, 3] uint8 RGB.

    Raises:
        ValueError: no rows, a row without its image or overlay, or rows of different sizes.
    """
    rows = list(rows)
    for row in rows:
        if row.overlay is None or row.image is None:
            raise ValueError(f"row {row.key} has no image or no overlay")
    panels = [[row.image, row.overlay, overlay(row.image, row.truth, label_set, alpha=1.0)]
              for row in rows]
    captions = [[f"input t={(stamp_ns(row.key) - t0_ns) / 1e9:.1f}s", "node ~/overlay",
                 "ground truth" + ("" if row.pq is None else f" PQ {row.pq:.2f}")]
                for row in rows]
    return contact_sheet(panels, captions)
