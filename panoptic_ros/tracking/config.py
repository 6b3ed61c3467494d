"""Settings of the :class:`~panoptic_ros.tracking.Tracker`, every one changeable between frames."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class TrackerConfig:
    """Association thresholds and track lifetime.

    Detection scores split the thing segments of a frame as ByteTrack does: ``score >=
    high_score`` are associated first and may start tracks; ``low_score <= score < high_score``
    are associated only to the tracks left over, with a stricter overlap, and never start a track
    (a weak detection that matches nothing is most often a false positive); ``score <
    low_score`` are not associated at all. Segments that end up without a track keep
    ``track_id`` 0 (see :class:`~panoptic_ros.tracking.Tracker`).

    Attributes:
        high_score: score at or above which a detection is "high" (stage 1, may start tracks).
        low_score: score at or above which a detection takes part in association at all
            (``<= high_score``).
        min_iou_high: least mask IoU between a track's motion-predicted mask and a high-score
            detection for a match in stage 1, in ``(0, 1]``.
        min_iou_low: least mask IoU for a low-score detection in stage 2, in ``(0, 1]``.
        center_gate: stage 3 (fast movers, new tracks without a velocity yet): a high-score
            detection left over may still take a track left over when the distance of its box
            centre from the track's predicted centre is below ``center_gate`` times the track's
            size (square root of its last box area), the box areas within a factor 2; in object
            sizes, ``>= 0``; 0 turns stage 3 off.
        center_gate_growth: the stage 3 gate widens by this fraction per second the track has
            been unseen (``center_gate * size * (1 + center_gate_growth * unseen)``): the error
            of a predicted position grows with the time it is extrapolated over (a velocity
            error, a turn), so a track back from an occlusion is looked for in a wider circle;
            ``>= 0`` per second; 0 = a fixed gate.
        max_age: seconds (header stamps) a track survives unseen (occlusion, dropped frames)
            before it dies and its instance number is freed, ``> 0``. Objects of the synthetic
            sequences stay hidden behind others for 1-2 s; a track kept that long is found
            again by the widened gate.
        stride: mask overlaps are counted on every ``stride``-th pixel in both directions (1 =
            every pixel); IoUs of objects a few pixels wide get coarse at large strides.
    """

    high_score: float = 0.5
    low_score: float = 0.1
    min_iou_high: float = 0.2
    min_iou_low: float = 0.4
    center_gate: float = 1.5
    center_gate_growth: float = 1.0
    max_age: float = 2.0
    stride: int = 2

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            kind = int if f.name == "stride" else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise TypeError(f"TrackerConfig.{f.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"TrackerConfig.{f.name} must be finite, got {value!r}")
        if not 0.0 <= self.low_score <= self.high_score <= 1.0:
            raise ValueError(
                "TrackerConfig needs 0 <= low_score <= high_score <= 1, got low_score "
                f"{self.low_score} and high_score {self.high_score}"
            )
        for name in ("min_iou_high", "min_iou_low"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(
                    f"TrackerConfig.{name} must be in (0, 1], got {getattr(self, name)}"
                )
        for name in ("center_gate", "center_gate_growth"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrackerConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_age <= 0:
            raise ValueError(f"TrackerConfig.max_age must be > 0 seconds, got {self.max_age}")
        if not 1 <= self.stride <= 16:
            raise ValueError(f"TrackerConfig.stride must be in 1..16, got {self.stride}")
