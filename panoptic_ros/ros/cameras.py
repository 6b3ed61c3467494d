"""One camera of the panoptic node: topic names, subscription state, counters, and its steps.

A node serves one camera (``cameras: []``: input ``image``, outputs ``~/panoptic`` ...) or
several with one model (``cameras: [front, left]``: inputs ``front/image``, ``left/image``;
outputs ``~/front/panoptic``, ``~/left/panoptic`` ...). Every per-camera thing lives here, so
that the node's frame path is the same for one camera and for many: depth pairing, the tracking
step and the 3D step after the model, and the camera's diagnostics values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from panoptic_ros.geometry import (
    DepthError,
    Intrinsics,
    StampPairer,
    depth_and_intrinsics,
    segment_geometry,
)
from panoptic_ros.geometry.pairing import Paired
from panoptic_ros.result import PanopticResult
from panoptic_ros.ros.diagnostics import FrameStats
from panoptic_ros.ros.latest_frame import Frame
from panoptic_ros.ros.qos import ReliabilityDecision
from panoptic_ros.tracking import Tracker, TrackerConfig

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
    camera_info_topic: str = ""

    # -- depth pairing (executor thread) --------------------------------------------------
    def pair_colour(self, frame: Frame) -> list[Frame]:
        """A colour frame in; the frames ready for the worker out (with their depth if any).

        Without depth in use the frame itself; with depth, what the stamp pairer resolved (a
        frame waits for its partner until a depth image at or after its stamp, or a newer
        frame, arrives).
        """
        if self.pairer is None:
            return [frame]
        ready = self._resolved(self.pairer.add_colour(stamp_ns(frame.msg.header), frame))
        self.waiting_since = frame.received if self.pairer.waiting else None
        return ready

    def pair_depth(self, msg: Any) -> list[Frame]:
        """A depth image in; the frames it resolved out."""
        if self.pairer is None:
            return []
        ready = self._resolved(self.pairer.add_depth(stamp_ns(msg.header), msg))
        if not self.pairer.waiting:
            self.waiting_since = None
        return ready

    def release_stale(self, now: float, after_s: float = 0.5) -> list[Frame]:
        """A frame waiting over ``after_s`` for its depth (depth stopped), released without it.

        Its 2D outputs then go out; ``now`` is monotonic time, seconds.
        """
        waiting = self.waiting_since
        if self.pairer is None or waiting is None or now - waiting <= after_s:
            return []
        self.waiting_since = None
        return self._resolved(self.pairer.flush())

    def _resolved(self, pairs: list[Paired]) -> list[Frame]:
        frames = []
        for pair in pairs:
            frame = pair.colour
            frame.depth = pair.depth
            if pair.depth is None:
                self.depth_unpaired += 1
                self.last_depth_problem = "no depth image within depth_slop of the frame"
            frames.append(frame)
        return frames

    # -- the frame's steps after the model (worker thread) --------------------------------
    def track(self, result: PanopticResult, header: Any, enabled: bool,
              config: TrackerConfig, log: Any) -> PanopticResult:
        """The tracking step: persistent ids (this camera's tracker), or the result as it is.

        Time is the header stamp; a stamp going backwards or a frame_id change resets the
        tracker, logged once (``log``: the node's logger).
        """
        if not enabled:
            self.tracker = None
            return result
        tracker = self.tracker
        if tracker is None:
            tracker = self.tracker = Tracker(config)
        elif tracker.config is not config:
            tracker.config = config  # a live change applies from this frame on
        stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
        result = tracker.update(result, stamp, header.frame_id)
        if tracker.reset_reason is not None:
            self.tracker_resets += 1
            log.info(f"{self.label}tracker reset: {tracker.reset_reason}")
        return result

    def add_3d(self, frame: Frame, result: PanopticResult,
               log: Any) -> tuple[PanopticResult, tuple[np.ndarray, Intrinsics] | None]:
        """The 3D step: ``(result with Segment.geometry, (depth_m, intrinsics))``.

        Without a depth partner the result unchanged and None. A refused depth image or
        calibration (another encoding, a size that cannot be scaled, no camera_info yet, a
        zero focal length): the same, counted and logged (throttled); 2D outputs go out.
        """
        depth, info = frame.depth, self.camera_info
        if depth is None:
            return result, None
        try:
            depth_m, intrinsics, scaled = depth_and_intrinsics(
                depth, info, result.ids.shape, self.camera_info_topic)
        except DepthError as err:
            self.depth_errors += 1
            self.last_depth_problem = str(err)
            log.warning(f"{self.label}no 3D for frame ({where(depth.header)}): {err}",
                        throttle_duration_sec=5.0)
            return result, None
        self.depth_frames += 1
        self.depth_scaled += int(scaled)
        return segment_geometry(result, depth_m, intrinsics), (depth_m, intrinsics)

    # -- diagnostics ----------------------------------------------------------------------
    def tracking_summary(self, enabled: bool) -> str:
        """Its tracker in a diagnostics value."""
        if not enabled:
            return "off"
        if self.tracker is None:
            return f"on (no frame yet; resets {self.tracker_resets})"
        return (f"on ({len(self.tracker.tracks)} live tracks, {self.tracker.last_track_id} "
                f"since the last reset; resets {self.tracker_resets})")

    def depth_summary(self, use_depth: bool) -> dict[str, str]:
        """Its depth counters as diagnostics values."""
        if self.pairer is None and not self.depth_frames:
            return {"depth": "not active" if use_depth else "off"}
        return {"depth": "on", "depth_frames": str(self.depth_frames),
                "depth_unpaired": str(self.depth_unpaired),
                "depth_errors": str(self.depth_errors),
                "depth_scaled": str(self.depth_scaled),
                "camera_info": "received" if self.camera_info is not None else "none yet",
                "last_depth_problem": self.last_depth_problem}

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


def stamp_ns(header: Any) -> int:
    """A header's stamp in integer nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def where(header: Any) -> str:
    """A frame in a log line: its frame_id and stamp."""
    return f"frame_id '{header.frame_id}' stamp {header.stamp.sec}.{header.stamp.nanosec:09d}"
