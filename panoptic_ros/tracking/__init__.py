"""Persistent instance ids over time for panoptic results (ROS-free).

``Tracker(TrackerConfig(...)).update(result, stamp, frame_id)`` returns the result with its
thing segments renumbered per track; :class:`TrackedPredictor` chains a Predictor and a Tracker
as the one tracking step of the frame path.
"""

from panoptic_ros.tracking.config import TrackerConfig
from panoptic_ros.tracking.step import TrackedPredictor
from panoptic_ros.tracking.tracker import Track, Tracker

__all__ = ["Track", "TrackedPredictor", "Tracker", "TrackerConfig"]
