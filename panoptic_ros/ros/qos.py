"""Reliability of the image subscription, and the "no frames" diagnosis that goes with it.

Why this matters for large frames under Fast DDS (the default RMW): a sample larger than the
64 KB a UDP datagram can carry is split into fragments, and between processes of one machine
those fragments travel through the *sending* participant's shared-memory segment, 512 KiB by
default. A camera frame (640x480 rgb8 = 921,600 bytes) does not fit; the writer drops the
fragments it cannot place, and a best-effort reader has no way to ask for them again, so whole
frames are lost (measured on loopback: at 1 frame/s 4 of about 230 frames arrived, most fresh
starts saw none within 20 s; at 30 frames/s about a third were lost). A reliable reader
repairs the lost fragments through the protocol, and a larger segment in the camera's process
(``fastdds_loopback.xml``) avoids the loss: the segment that counts is the publisher's, the
subscriber's profile does not help.

Hence :func:`choose_image_reliability`: with ``"auto"`` the node subscribes reliably when every
publisher on the topic is reliable, else best-effort (a best-effort reader matches both kinds of
writer; a reliable reader does not match a best-effort writer). :func:`no_frames_warning` names
the likely cause when a matched publisher sends nothing the node receives.

Both are pure functions; rclpy is imported only for its QoS enums (Humble, Jazzy and later).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rclpy.qos import ReliabilityPolicy

RELIABILITY_CHOICES = ("auto", "best_effort", "reliable")
"""Values of the node's reliability setting for the image subscription."""

FASTDDS_DEFAULT_SEGMENT_BYTES = 512 * 1024
"""Fast DDS's default shared-memory segment per participant (Humble to Kilted)."""

FRAGMENT_BYTES = 64 * 1000
"""Samples above about this size are sent as fragments (a UDP datagram carries at most 65,500
bytes); smaller frames are not the concern of :func:`no_frames_warning`."""

PROFILE_HINT = "panoptic_ros/ros/fastdds_loopback.xml"
"""The package's Fast DDS profile (32 MiB segment, UDP on 127.0.0.1 only)."""


@dataclass(frozen=True)
class ReliabilityDecision:
    """Reliability chosen for the image subscription, and why (one line for the log)."""

    reliability: ReliabilityPolicy
    reason: str

    @property
    def reliable(self) -> bool:
        """Whether the subscription is reliable."""
        return self.reliability == ReliabilityPolicy.RELIABLE


def endpoint_reliabilities(infos: Iterable[Any]) -> list[ReliabilityPolicy]:
    """Reliability policies of endpoints as rclpy's graph reports them.

    Args:
        infos: ``TopicEndpointInfo`` objects, e.g. from
            ``Node.get_publishers_info_by_topic(topic)``; only ``.qos_profile.reliability``
            is read.

    Returns:
        One policy per endpoint, in order.
    """
    return [info.qos_profile.reliability for info in infos]


def _is_reliable(policy: Any) -> bool:
    """Whether ``policy`` is RELIABLE (an enum member or its integer value)."""
    return policy == ReliabilityPolicy.RELIABLE


def _plural(n: int, word: str) -> str:
    """``"1 publisher"``, ``"2 publishers"``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def choose_image_reliability(
    configured: str, publisher_reliabilities: Sequence[ReliabilityPolicy]
) -> ReliabilityDecision:
    """Reliability of the image subscription.

    Args:
        configured: ``"auto"``, ``"best_effort"`` or ``"reliable"``.
        publisher_reliabilities: reliability of each publisher now on the topic (see
            :func:`endpoint_reliabilities`); empty when there is none yet.

    Returns:
        ``"best_effort"`` and ``"reliable"`` as given. ``"auto"``: RELIABLE when there is at
        least one publisher and all are RELIABLE, else BEST_EFFORT (which matches publishers of
        either kind, including ones that appear later). The reason says which case applied and,
        for a forced ``"reliable"``, how many publishers it will not match.

    Raises:
        ValueError: ``configured`` is not one of :data:`RELIABILITY_CHOICES`.
    """
    if configured not in RELIABILITY_CHOICES:
        raise ValueError(
            f"reliability must be one of {', '.join(RELIABILITY_CHOICES)}, not {configured!r}")
    total = len(publisher_reliabilities)
    best_effort = sum(not _is_reliable(p) for p in publisher_reliabilities)
    if configured == "best_effort":
        reason = "best_effort as configured"
        if total and not best_effort:
            reason += (f" ({_plural(total, 'publisher')}, all reliable: 'auto' or 'reliable' "
                       "would repair lost fragments of large frames)")
        return ReliabilityDecision(ReliabilityPolicy.BEST_EFFORT, reason)
    if configured == "reliable":
        reason = "reliable as configured"
        if best_effort:
            reason += (f"; {best_effort} of {_plural(total, 'publisher')} best-effort, "
                       "which a reliable subscription does not match")
        return ReliabilityDecision(ReliabilityPolicy.RELIABLE, reason)
    if total == 0:
        return ReliabilityDecision(
            ReliabilityPolicy.BEST_EFFORT,
            "auto: no publisher yet, best-effort (matches reliable and best-effort publishers)")
    if best_effort:
        return ReliabilityDecision(
            ReliabilityPolicy.BEST_EFFORT,
            f"auto: {best_effort} of {_plural(total, 'publisher')} best-effort, "
            "so best-effort (a reliable subscription would not match them)")
    return ReliabilityDecision(
        ReliabilityPolicy.RELIABLE,
        f"auto: {'the publisher is' if total == 1 else f'all {total} publishers are'} reliable, "
        "so reliable (repairs lost fragments of large frames)")


def _size_phrase(image_bytes: int | None) -> str:
    """How the frame size bears on shared-memory delivery, for :func:`no_frames_warning`."""
    if image_bytes is None:
        return (f"frames larger than Fast DDS's default {FASTDDS_DEFAULT_SEGMENT_BYTES // 1024} "
                "KiB shared-memory segment (640x480 rgb8 is 900 KiB)")
    if image_bytes > FASTDDS_DEFAULT_SEGMENT_BYTES:
        return (f"frames of {image_bytes:,} bytes, larger than Fast DDS's default "
                f"{FASTDDS_DEFAULT_SEGMENT_BYTES // 1024} KiB shared-memory segment,")
    return (f"frames of {image_bytes:,} bytes, sent as fragments through Fast DDS's default "
            f"{FASTDDS_DEFAULT_SEGMENT_BYTES // 1024} KiB shared-memory segment,")


def no_frames_warning(
    publishers: int,
    silent_s: float,
    threshold_s: float,
    reliability: ReliabilityPolicy,
    publisher_reliabilities: Sequence[ReliabilityPolicy] = (),
    image_bytes: int | None = None,
    topic: str = "image",
) -> str | None:
    """The WARN message of the "no frames" watchdog, or None while there is nothing to say.

    Args:
        publishers: publishers on the topic (``count_publishers`` or the length of
            ``get_publishers_info_by_topic``).
        silent_s: seconds since the last frame, or since the subscription was created when none
            came yet.
        threshold_s: silence that is worth a warning, seconds.
        reliability: reliability of the image subscription.
        publisher_reliabilities: reliability of each publisher (see
            :func:`endpoint_reliabilities`); may be empty when unknown.
        image_bytes: size of the frames (``step * height``) when known, e.g. from an earlier
            frame or the camera's ``camera_info``; None when unknown.
        topic: the topic name to show (resolved, after remapping, when possible).

    Returns:
        None while ``silent_s < threshold_s``; otherwise a one-line message naming the likely
        cause and what to set.
    """
    if silent_s < threshold_s:
        return None
    head = f"no frame on '{topic}' for {silent_s:.1f} s"
    if publishers <= 0:
        return (f"{head} and no publisher: check the remapping of 'image', that the camera runs, "
                "and that both use the same ROS_DOMAIN_ID and ROS_AUTOMATIC_DISCOVERY_RANGE")
    count = _plural(publishers, "publisher")
    best_effort = sum(not _is_reliable(p) for p in publisher_reliabilities)
    if _is_reliable(reliability):
        if best_effort:
            return (f"{head} though {count} on it: {best_effort} best-effort, which a reliable "
                    "subscription does not match; set the node's qos_reliability to auto or "
                    "best_effort")
        return (f"{head} though {count} reliable on it: is the camera publishing? (the "
                "reliable subscription would repair lost fragments of large frames)")
    if image_bytes is not None and image_bytes <= FRAGMENT_BYTES:
        return (f"{head} though {count} on it: is the camera publishing? (frames of "
                f"{image_bytes:,} bytes are not fragmented, so the size is not the cause)")
    cause = (f"{_size_phrase(image_bytes)} lose fragments in the camera process's segment and a "
             "best-effort subscription cannot repair them")
    if publisher_reliabilities and not best_effort:
        fix = ("the camera publisher is reliable: set the node's qos_reliability to auto or "
               "reliable")
    else:
        fix = (f"give the camera's process a Fast DDS profile with a larger segment "
               f"(FASTDDS_DEFAULT_PROFILES_FILE={PROFILE_HINT}; the node's own profile does not "
               "help) or make the camera publisher reliable")
    return f"{head} though {count} on it: {cause}; {fix}"
