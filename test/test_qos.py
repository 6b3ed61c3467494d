"""The image subscription's reliability choice and the "no frames" watchdog message (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy

from panoptic_ros.ros.qos import (
    FASTDDS_DEFAULT_SEGMENT_BYTES,
    PROFILE_HINT,
    RELIABILITY_CHOICES,
    choose_image_reliability,
    endpoint_reliabilities,
    no_frames_warning,
)

R, BE = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT
FRAME_640 = 640 * 480 * 3


@dataclass
class FakeEndpointInfo:
    """What the functions read of rclpy's TopicEndpointInfo: a real QoSProfile."""

    qos_profile: QoSProfile


def infos(*policies: ReliabilityPolicy) -> list[FakeEndpointInfo]:
    return [FakeEndpointInfo(QoSProfile(depth=1, reliability=p)) for p in policies]


def test_endpoint_reliabilities_reads_the_qos_profiles():
    assert endpoint_reliabilities(infos(R, BE, R)) == [R, BE, R]
    assert endpoint_reliabilities([]) == []


@pytest.mark.parametrize(
    ("configured", "publishers", "expected"),
    [
        ("auto", [], BE),
        ("auto", [R], R),
        ("auto", [R, R], R),
        ("auto", [BE], BE),
        ("auto", [R, BE], BE),
        ("best_effort", [], BE),
        ("best_effort", [R], BE),
        ("reliable", [], R),
        ("reliable", [BE], R),
    ],
)
def test_choose_image_reliability(configured, publishers, expected):
    decision = choose_image_reliability(configured, endpoint_reliabilities(infos(*publishers)))
    assert decision.reliability == expected
    assert decision.reliable == (expected == R)
    assert decision.reason and "\n" not in decision.reason


def test_reasons_say_which_case_applied():
    assert "no publisher" in choose_image_reliability("auto", []).reason
    assert "1 of 2 publishers best-effort" in choose_image_reliability("auto", [R, BE]).reason
    assert "the publisher is reliable" in choose_image_reliability("auto", [R]).reason
    assert "all 2 publishers are reliable" in choose_image_reliability("auto", [R, R]).reason
    assert "does not match" in choose_image_reliability("reliable", [BE, R]).reason
    assert "auto" in choose_image_reliability("best_effort", [R]).reason
    assert choose_image_reliability("best_effort", [BE]).reason == "best_effort as configured"


def test_policies_other_than_reliable_count_as_best_effort():
    # SYSTEM_DEFAULT / UNKNOWN from an odd graph report: do not risk an unmatched reader.
    odd = [ReliabilityPolicy.SYSTEM_DEFAULT]
    assert choose_image_reliability("auto", odd).reliability == BE
    # The integer value of RELIABLE (an IntEnum) counts as reliable.
    assert choose_image_reliability("auto", [int(R)]).reliability == R


@pytest.mark.parametrize("bad", ["", "Reliable", "best-effort", "system_default"])
def test_unknown_setting_is_refused(bad):
    with pytest.raises(ValueError, match="auto, best_effort, reliable"):
        choose_image_reliability(bad, [])
    assert bad not in RELIABILITY_CHOICES


def test_no_warning_before_the_threshold():
    assert no_frames_warning(1, 4.9, 5.0, BE, [BE], FRAME_640) is None
    assert no_frames_warning(0, 0.0, 5.0, BE) is None


def test_no_publisher():
    msg = no_frames_warning(0, 6.0, 5.0, BE, [], None, topic="/camera/image_raw")
    assert msg.startswith("no frame on '/camera/image_raw' for 6.0 s and no publisher")
    assert "ROS_DOMAIN_ID" in msg


def test_best_effort_camera_large_frames_points_at_the_camera_profile():
    msg = no_frames_warning(1, 5.0, 5.0, BE, [BE], FRAME_640)
    assert msg.startswith("no frame on 'image' for 5.0 s though 1 publisher on it")
    assert "921,600 bytes" in msg and "512 KiB shared-memory segment" in msg
    assert "cannot repair" in msg
    assert PROFILE_HINT in msg and "camera's process" in msg and "reliable" in msg
    assert "\n" not in msg


def test_unknown_size_and_unknown_publisher_reliability():
    msg = no_frames_warning(2, 30.0, 5.0, BE)
    assert "2 publishers" in msg and "512 KiB" in msg and PROFILE_HINT in msg


def test_reliable_camera_best_effort_subscription_suggests_auto():
    msg = no_frames_warning(1, 5.0, 5.0, BE, [R], FRAME_640)
    assert "qos_reliability to auto or reliable" in msg
    assert PROFILE_HINT not in msg


def test_mixed_publishers_best_effort_subscription_needs_the_profile():
    msg = no_frames_warning(2, 5.0, 5.0, BE, [R, BE], FRAME_640)
    assert PROFILE_HINT in msg


def test_reliable_subscription_with_best_effort_publisher_does_not_match():
    msg = no_frames_warning(1, 5.0, 5.0, R, [BE], FRAME_640)
    assert "does not match" in msg and "auto or best_effort" in msg


def test_reliable_both_sides_blames_the_camera_not_the_transport():
    msg = no_frames_warning(1, 5.0, 5.0, R, [R], FRAME_640)
    assert "is the camera publishing?" in msg and PROFILE_HINT not in msg


def test_small_and_mid_size_frames():
    small = no_frames_warning(1, 5.0, 5.0, BE, [BE], 160 * 120)
    assert "not fragmented" in small and PROFILE_HINT not in small
    mid = no_frames_warning(1, 5.0, 5.0, BE, [BE], 320 * 256 * 3)
    assert "sent as fragments" in mid and PROFILE_HINT in mid
    big = no_frames_warning(1, 5.0, 5.0, BE, [BE], FASTDDS_DEFAULT_SEGMENT_BYTES + 1)
    assert "larger than Fast DDS's default 512 KiB" in big
