"""The node's latest-frame slot: a one-place mailbox between the subscription and the worker.

Latest frame wins: the subscription callback only stores the newest frame; the worker takes
whatever is newest when it is free, and frames replaced meanwhile are counted as dropped, so
no queue ever builds up.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sensor_msgs.msg import CompressedImage, Image

from panoptic_ros.ros.conversions import compressed_image_size


@dataclass
class Frame:
    """An input message waiting for the worker, with its arrival time (monotonic, s)."""

    msg: Image | CompressedImage
    received: float
    compressed: bool


class LatestFrame:
    """A one-place mailbox: :meth:`put` replaces what the worker has not taken yet.

    :meth:`poke` wakes a worker waiting in :meth:`wait_closed` (a live rate change), so a
    pause never outlasts the setting that chose it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self._poked = False

    def put(self, frame: Frame) -> bool:
        """Store ``frame``; ``True`` when it replaced an unprocessed one (a dropped frame)."""
        with self._cond:
            replaced = self._frame is not None
            self._frame = frame
            self._cond.notify_all()
            return replaced

    def take(self, timeout: float) -> Frame | None:
        """The newest frame, waiting up to ``timeout`` s; ``None`` if none or closed."""
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            return None if self._closed else frame

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

    def close(self) -> int:
        """Wake the worker for good; returns 1 if an unprocessed frame was discarded."""
        with self._cond:
            pending = int(self._frame is not None)
            self._frame = None
            self._closed = True
            self._cond.notify_all()
            return pending


def declared_pixels(frame: Frame) -> int:
    """Pixels a frame's message declares (a compressed one: in its header)."""
    if frame.compressed:
        _, width, height = compressed_image_size(frame.msg.data)
        return width * height
    return int(frame.msg.height) * int(frame.msg.width)
