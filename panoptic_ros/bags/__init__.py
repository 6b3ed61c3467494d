"""rosbag2 files without ROS: our messages for the ``rosbags`` library, and ``panoptic-ros bag``.

Modules here import ``rosbags`` (the optional extra ``panoptic_ros[bag]``); call
:func:`require_rosbags` first for a clear error when it is missing. Nothing here imports
rclpy or ROS message packages.
"""

from __future__ import annotations

from panoptic_ros.errors import UserError

INSTALL_HINT = "pip install 'panoptic_ros[bag]' (or: pip install rosbags)"


def require_rosbags() -> None:
    """Raise :class:`UserError` saying how to install ``rosbags`` when it is not importable."""
    try:
        import rosbags  # noqa: F401
    except ModuleNotFoundError:
        raise UserError(f"reading and writing bags needs the rosbags library: {INSTALL_HINT}"
                        ) from None
