"""The node's latest-frame slots: one-place mailboxes between the subscriptions and the worker.

Latest frame wins, per camera: a subscription callback only stores its camera's newest frame;
the worker takes the newest frame of every camera that has one when it is free (a batch), and
frames replaced meanwhile are counted as dropped, so no queue ever builds up. With a batch
limit the cameras are served round robin, so no camera can starve another.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sensor_msgs.msg import CompressedImage, Image

from panoptic_ros.ros.conversions import compressed_image_size


@dataclass
class Frame:
    """An input message waiting for the worker, with its arrival time (monotonic, s).

    ``depth`` is its aligned depth image when depth is in use and one was paired with it.
    """

    msg: Image | CompressedImage
    received: float
    compressed: bool
    depth: Image | None = None


class LatestFrames:
    """One-place mailboxes, one per camera: :meth:`put` replaces what the worker has not taken.

    :meth:`poke` wakes a worker waiting in :meth:`wait_closed` (a live rate change), so a
    pause never outlasts the setting that chose it.

    Args:
        cameras: the camera names, in round-robin order (``[""]`` for the single camera).
    """

    def __init__(self, cameras: list[str]) -> None:
        self._cond = threading.Condition()
        self._order = list(cameras)
        self._frames: dict[str, Frame] = {}
        self._next = 0  # position in _order where the next batch starts
        self._closed = False
        self._poked = False

    def put(self, camera: str, frame: Frame) -> bool:
        """Store ``camera``'s newest frame; ``True`` when it replaced an unprocessed one."""
        with self._cond:
            replaced = camera in self._frames
            self._frames[camera] = frame
            self._cond.notify_all()
            return replaced

    def take(self, timeout: float, limit: int = 0) -> list[tuple[str, Frame]]:
        """The newest frame of each waiting camera, waiting up to ``timeout`` s for one.

        Args:
            timeout: longest wait for a first frame, seconds.
            limit: most cameras in one batch (0 = all); the cameras are then taken round robin
                from where the previous batch stopped, the others keep their frame.

        Returns:
            ``(camera, frame)`` pairs in round-robin order; empty if none came or closed.
        """
        with self._cond:
            if not self._frames and not self._closed:
                self._cond.wait(timeout)
            if self._closed:
                self._frames.clear()
                return []
            n = len(self._order)
            batch = []
            for k in range(n):
                camera = self._order[(self._next + k) % n]
                if camera in self._frames:
                    batch.append((camera, self._frames.pop(camera)))
                    if limit and len(batch) == limit:
                        self._next = (self._next + k + 1) % n
                        break
            return batch

    def pending(self) -> int:
        """Cameras with a frame waiting."""
        with self._cond:
            return len(self._frames)

    def wait_closed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for :meth:`close` or :meth:`poke`; ``True`` when closed."""
        with self._cond:
            if not self._closed and not self._poked:
                self._cond.wait_for(lambda: self._closed or self._poked, timeout)
            self._poked = False
            return self._closed

    def poke(self) -> None:
        """Wake :meth:`wait_closed` early (the worker then re-reads its settings)."""
        with self._cond:
            self._poked = True
            self._cond.notify_all()

    def close(self) -> dict[str, int]:
        """Wake the worker for good; the unprocessed frames discarded, per camera (0 or 1)."""
        with self._cond:
            pending = {camera: 1 for camera in self._frames}
            self._frames.clear()
            self._closed = True
            self._cond.notify_all()
            return pending


def declared_pixels(frame: Frame) -> int:
    """Pixels a frame's message declares (a compressed one: in its header)."""
    if frame.compressed:
        _, width, height = compressed_image_size(frame.msg.data)
        return width * height
    return int(frame.msg.height) * int(frame.msg.width)
