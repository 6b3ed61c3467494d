"""One camera of the panoptic node: its topic names, subscription state, counters and tracker.

A node serves one camera (``cameras: []``: input ``image``, outputs ``~/panoptic`` ...) or
several with one model (``cameras: [front, left]``: inputs ``front/image``, ``left/image``;
outputs ``~/front/panoptic``, ``~/left/panoptic`` ...). Every per-camera thing lives here, so
that the node's frame path is the same for one camera and for many.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from panoptic_ros.geometry import StampPairer
from panoptic_ros.ros.diagnostics import FrameStats
from panoptic_ros.ros.qos import ReliabilityDecision
from panoptic_ros.tracking import Tracker

SINGLE = ""
"""The name of the one camera of a node without ``cameras``."""

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def check_camera_names(names: Any) -> str | None:
    """Why ``names`` is not a valid ``cameras`` list, or None.

    Each name is one ROS name token (letters, digits, underscores; starting with a letter),
    and names are unique.
    """
    if not isinstance(names, (list, tuple)):
        return f"cameras must be a list of names, got {names!r}"
    for name in names:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            return (f"cameras: {name!r} is not a valid name (letters, digits and underscores, "
                    "starting with a letter)")
    if len(set(names)) != len(names):
        return f"cameras: names repeat in {list(names)}"
    return None


def camera_names(value: Any) -> list[str]:
    """The node's cameras from the ``cameras`` parameter (unset or empty: one, unnamed)."""
    return list(value) if value else [SINGLE]


@dataclass(eq=False)
class Camera:
    """One camera's state in the node.

    Attributes:
        name: the camera's name, :data:`SINGLE` for a node without ``cameras``.
        stats: its frame counters (received, dropped, bad, processed, latency).
        subscription: its image subscription while active.
        reliability: the reliability chosen for that subscription.
        last_frame: monotonic time of its last frame (or of subscribing), seconds.
        last_frame_bytes: payload size of its last frame.
        input_warning: why its input looks silent, "" if not.
        tracker: its tracker (worker thread only; made on its first frame with tracking on).
        tracker_resets: resets of its tracker since start.
        pubs: its output publishers by key (panoptic, counts, categories, overlay, ...).
        depth_subscriptions: its depth and camera_info subscriptions (depth in use).
        pairer: pairs its colour frames with depth images by stamp (executor thread only).
        camera_info: its newest ``sensor_msgs/CameraInfo``.
        depth_frames: frames given 3D; depth_unpaired: frames without a depth partner;
        depth_errors: frames whose depth or camera_info was refused (2D outputs only);
        depth_scaled: frames whose depth had another size (nearest-neighbour scaled).
        last_depth_problem: the latest reason a frame got no 3D.
        marker_ids: ids of the markers shown last (deleted when their object is gone).
        waiting_since: monotonic time since a colour frame waits for its depth partner.
    """

    name: str
    stats: FrameStats = field(default_factory=FrameStats)
    subscription: Any = None
    reliability: ReliabilityDecision | None = None
    last_frame: float = 0.0
    last_frame_bytes: int | None = None
    input_warning: str = ""
    tracker: Tracker | None = None
    tracker_resets: int = 0
    pubs: dict[str, Any] = field(default_factory=dict)
    depth_subscriptions: list[Any] = field(default_factory=list)
    pairer: StampPairer | None = None
    camera_info: Any = None
    depth_frames: int = 0
    depth_unpaired: int = 0
    depth_errors: int = 0
    depth_scaled: int = 0
    last_depth_problem: str = ""
    marker_ids: set[int] = field(default_factory=set)
    waiting_since: float | None = None

    def input_topic(self, relative: str) -> str:
        """Its input topic: ``image`` -> ``image`` (single) or ``<name>/image``."""
        return f"{self.name}/{relative}" if self.name else relative

    def output_topic(self, relative: str) -> str:
        """Its output topic: ``panoptic`` -> ``~/panoptic`` (single) or ``~/<name>/panoptic``."""
        return f"~/{self.name}/{relative}" if self.name else f"~/{relative}"

    @property
    def label(self) -> str:
        """How log lines name it: "" for the single camera, else ``"camera 'front': "``."""
        return f"camera '{self.name}': " if self.name else ""
