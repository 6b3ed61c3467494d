"""A rosbags type store that knows our messages, registered from the package's msg/*.msg.

The .msg files are found where the package lives: ``msg/`` beside ``package.xml`` in a source
checkout, else ``<prefix>/share/panoptic_ros/msg`` where rosidl installs them, for the prefix
the Python package is installed under (a venv or ``--user`` prefix through pip, a colcon
``install/panoptic_ros``), ``sys.prefix`` and every ``AMENT_PREFIX_PATH`` entry.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

import panoptic_ros
from panoptic_ros.errors import UserError

PACKAGE = "panoptic_ros"
MESSAGES: tuple[str, ...] = ("SegmentInfo", "PanopticSegmentation", "ClassCount",
                             "InstanceCounts", "Category", "CategoryArray")
"""Our message names (msg/<name>.msg), type ``panoptic_ros/msg/<name>``."""

BASE_STORE = Stores.ROS2_KILTED
"""Definitions of the standard messages (std_msgs, sensor_msgs): the ROS 2 release we build on."""


def type_name(message: str) -> str:
    """``"SegmentInfo"`` -> ``"panoptic_ros/msg/SegmentInfo"``."""
    return f"{PACKAGE}/msg/{message}"


def _complete(folder: Path) -> bool:
    return all((folder / f"{name}.msg").is_file() for name in MESSAGES)


def candidate_dirs(package_dir: Path, prefixes: Iterable[str | Path] = ()) -> list[Path]:
    """Where the msg files may be, most specific first.

    Args:
        package_dir: the folder of the ``panoptic_ros`` Python package.
        prefixes: further install prefixes (``sys.prefix``, ``AMENT_PREFIX_PATH`` entries).
    """
    dirs = []
    if (package_dir.parent / "package.xml").is_file():  # a source checkout
        dirs.append(package_dir.parent / "msg")
    # <prefix>/lib/pythonX.Y/site-packages/panoptic_ros -> <prefix>/share/panoptic_ros/msg
    if len(package_dir.parents) > 3:
        dirs.append(package_dir.parents[3] / "share" / PACKAGE / "msg")
    dirs.extend(Path(p) / "share" / PACKAGE / "msg" for p in prefixes if str(p))
    return dirs


def find_message_dir(package_dir: Path | None = None,
                     prefixes: Iterable[str | Path] | None = None) -> Path:
    """The folder holding every one of our .msg files.

    Args:
        package_dir: the Python package's folder (default: where ``panoptic_ros`` is imported
            from).
        prefixes: install prefixes to look under (default: ``sys.prefix`` and
            ``AMENT_PREFIX_PATH``).

    Raises:
        UserError: no candidate folder has all of them (the folders looked at are listed).
    """
    if package_dir is None:
        package_dir = Path(panoptic_ros.__file__).resolve().parent
    if prefixes is None:
        ament = os.environ.get("AMENT_PREFIX_PATH", "")
        prefixes = [sys.prefix, *ament.split(os.pathsep)]
    dirs = candidate_dirs(package_dir, prefixes)
    for folder in dirs:
        if _complete(folder):
            return folder
    raise UserError("cannot find panoptic_ros's message definitions (msg/*.msg) in: "
                    + ", ".join(str(d) for d in dirs))


def register_messages(store: Typestore, folder: Path) -> None:
    """Add our message types, parsed from ``folder/<name>.msg``, to ``store``."""
    types = {}
    for name in MESSAGES:
        text = (folder / f"{name}.msg").read_text(encoding="utf-8")
        types.update(get_types_from_msg(text, type_name(name)))
    store.register(types)


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """The standard ROS 2 types of :data:`BASE_STORE` plus ours (built once per process)."""
    store = get_typestore(BASE_STORE)
    register_messages(store, find_message_dir())
    return store
