"""The frame path's tracking step: Predictor, then Tracker (one place for node, infer, demo)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from panoptic_ros.result import PanopticResult
from panoptic_ros.tracking.tracker import Tracker


class TrackedPredictor:
    """Segment a frame, then give its things persistent ids.

    Args:
        predictor: image -> :class:`PanopticResult` (a :class:`panoptic_ros.inference.Predictor`
            or any callable of one image).
        tracker: the tracker the results go through; None = tracking off (results unchanged).

    Both attributes may be replaced between frames (tracking switched on or off live).
    """

    def __init__(self, predictor: Callable[[Any], PanopticResult],
                 tracker: Tracker | None = None) -> None:
        self.predictor = predictor
        self.tracker = tracker

    def __call__(self, image: Any, stamp: float, frame_id: str = "") -> PanopticResult:
        """One frame: ``image`` ndarray[H, W, 3] uint8 RGB, ``stamp`` seconds (header stamp).

        Returns:
            The predictor's result, relabelled by the tracker when tracking is on.
        """
        result = self.predictor(image)
        return self.track(result, stamp, frame_id)

    def track(self, result: PanopticResult, stamp: float, frame_id: str = "") -> PanopticResult:
        """The tracking step alone, for a result made elsewhere (e.g. category-filtered)."""
        if self.tracker is None:
            return result
        return self.tracker.update(result, stamp, frame_id)

    @property
    def reset_reason(self) -> str | None:
        """Why the latest frame reset the tracker (log it once), else None."""
        return None if self.tracker is None else self.tracker.reset_reason
