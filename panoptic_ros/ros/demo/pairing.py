"""Frames of several topics matched by header (ROS-free).

A camera frame reaches the monitor as several messages on their own topics (ground truth,
image, the node's prediction and overlay), in any order. They are matched by :data:`FrameKey`
(the header's stamp and ``frame_id``), and whatever waits for its partner is held in bounded
memory: :class:`KeyedBuffer` for any one kind of item, :class:`StampPairer` for ground truth
and predictions, which also knows when a frame will never get its prediction.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

FrameKey = tuple[int, int, str]
"""A message header as a key: ``(stamp.sec, stamp.nanosec, frame_id)``."""

T = TypeVar("T")
P = TypeVar("P")


def sequence_frame_id(frame_id: str, video: str) -> str:
    """The header ``frame_id`` of a video's frames: ``<frame_id>_<video>``.

    The demo camera gives every video a frame id of its own, so that a cut to the next video
    looks like another camera (trackers reset) and a monitor sees where a sequence starts.

    Args:
        frame_id: the camera's frame (e.g. ``camera_optical_frame``).
        video: the video's name, :func:`~panoptic_ros.data.sequences.video_name`
            (``<seed>_<index>``, one underscore).
    """
    return f"{frame_id}_{video}"


def video_of_frame_id(frame_id: str) -> str:
    """The video's name in a :func:`sequence_frame_id` (its last two ``_`` fields).

    ``"camera_optical_frame_2026_0003"`` -> ``"2026_0003"``; a frame id with fewer fields is
    returned whole.
    """
    parts = frame_id.rsplit("_", 2)
    return "_".join(parts[-2:]) if len(parts) == 3 else frame_id


def stamp_ns(key: FrameKey) -> int:
    """The key's stamp in nanoseconds."""
    return int(key[0]) * 1_000_000_000 + int(key[1])


class KeyedBuffer(Generic[T]):
    """Items waiting for their frame's other messages, by key, oldest first.

    At most ``capacity`` are held: adding beyond it lets the oldest fall out, so memory stays
    bounded even when the partner never comes.

    Args:
        capacity: most items held.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[FrameKey, T] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[FrameKey]:
        return iter(list(self._items))

    def get(self, key: FrameKey) -> T | None:
        """The item of ``key``, if held (it stays held)."""
        return self._items.get(key)

    def put(self, key: FrameKey, item: T) -> int:
        """Hold ``item`` (replacing one of the same key in its place); how many fell out."""
        self._items[key] = item
        evicted = 0
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
            evicted += 1
        return evicted

    def pop(self, key: FrameKey, default: T | None = None) -> T | None:
        """Take the item of ``key`` out, or ``default`` when none is held."""
        return self._items.pop(key, default)

    def clear(self) -> int:
        """Drop everything; how many items were held."""
        n = len(self._items)
        self._items.clear()
        return n


class StampPairer(Generic[T, P]):
    """Pairs ground-truth frames with predictions carrying the same header.

    The node answers frames in the order it received them (one worker, latest frame wins), so
    once a prediction for stamp ``s`` has arrived, ground truth older than ``s`` that is still
    unpaired will never get one: it is a dropped frame and is released at once. A prediction
    whose ground truth has not arrived yet waits for it. At most ``max_pending`` items of each
    side are held (the oldest beyond are counted as unmatched), so memory stays bounded even
    when one side stops.

    Args:
        max_pending: most unpaired items held per side.
    """

    def __init__(self, max_pending: int = 32) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self._truth: KeyedBuffer[T] = KeyedBuffer(max_pending)
        self._pred: KeyedBuffer[P] = KeyedBuffer(max_pending)
        self.truth_without_prediction = 0
        """Ground-truth frames released without a prediction (dropped camera frames)."""
        self.prediction_without_truth = 0
        """Predictions released without ground truth (lost or foreign frames)."""

    @property
    def pending_truth(self) -> int:
        """Ground-truth frames waiting for their prediction."""
        return len(self._truth)

    @property
    def pending_predictions(self) -> int:
        """Predictions waiting for their ground truth."""
        return len(self._pred)

    def truth(self, key: FrameKey) -> T | None:
        """The pending ground truth of ``key``, if any."""
        return self._truth.get(key)

    def add_truth(self, key: FrameKey, item: T) -> tuple[T, P] | None:
        """Add a ground-truth frame; returns ``(truth, prediction)`` when it completes a pair."""
        if key in self._pred:
            return item, self._pred.pop(key)
        self.truth_without_prediction += self._truth.put(key, item)
        return None

    def add_prediction(self, key: FrameKey, item: P) -> tuple[T, P] | None:
        """Add a prediction; returns ``(truth, prediction)`` when it completes a pair.

        Pending ground truth older than ``key`` is released as dropped.
        """
        now = stamp_ns(key)
        for old in [k for k in self._truth if stamp_ns(k) < now]:
            self._truth.pop(old)
            self.truth_without_prediction += 1
        if key in self._truth:
            return self._truth.pop(key), item
        self.prediction_without_truth += self._pred.put(key, item)
        return None

    def flush(self) -> None:
        """End of stream: everything still pending is unmatched."""
        self.truth_without_prediction += self._truth.clear()
        self.prediction_without_truth += self._pred.clear()
