"""Reading rosbag2 files: open a bag and iterate its messages with one-line errors.

Shared by the main pass of :mod:`panoptic_ros.bags.process` and the depth look-ahead of
:mod:`panoptic_ros.bags.depth`.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader, ReaderError

from panoptic_ros.errors import UserError

READ_ERRORS = (ReaderError, OSError, sqlite3.Error, struct.error, EOFError, KeyError,
               ValueError, IndexError)
"""Errors the rosbags readers let through for a damaged file, besides ReaderError."""


def one_line(err: BaseException) -> str:
    """An exception's message with its line breaks and runs of spaces collapsed."""
    return " ".join(str(err).split())


def open_bag(path: Path) -> Reader:
    """Open a rosbag2 (folder with metadata.yaml, or a bare .db3 / .mcap file) for reading.

    Raises:
        UserError: it does not exist or cannot be read (one line, with the reason).
    """
    if not path.exists():
        raise UserError(f"input bag not found: {path}")
    try:
        reader = Reader(path)
        reader.open()
    except READ_ERRORS as err:
        raise UserError(f"cannot read bag {path}: {one_line(err)}") from None
    return reader


def read_messages(reader: Reader, path: Path,
                  connections: Sequence[Connection] = ()) -> Iterator[tuple[Connection, int,
                                                                             bytes]]:
    """The messages of ``connections`` (all when empty) in bag order.

    Raises:
        UserError: a damaged file (after how many messages it failed).
    """
    count = 0
    iterator = reader.messages(connections=connections)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except READ_ERRORS as err:
            raise UserError(f"cannot read bag {path} after {count} message(s): "
                            f"{one_line(err)}") from None
        count += 1
        yield item


def describe_topics(reader: Reader) -> str:
    """``"/a (sensor_msgs/msg/Image, 10 msgs), /b (...)"`` for error messages."""
    return ", ".join(f"{name} ({info.msgtype}, {info.msgcount} msgs)"
                     for name, info in sorted(reader.topics.items())) or "none"


def check_topic(reader: Reader, topic: str, types: Sequence[str], path: Path) -> str:
    """The topic's message type.

    Raises:
        UserError: the topic is not in the bag (its topics are listed) or has none of ``types``.
    """
    info = reader.topics.get(topic)
    if info is None:
        raise UserError(f"topic {topic} is not in {path}; its topics: {describe_topics(reader)}")
    if info.msgtype not in types:
        raise UserError(f"topic {topic} has type {info.msgtype}; expected "
                        f"{' or '.join(types)}")
    return str(info.msgtype)
