"""Persistent ids on the real ROS 2 graph: the node with the bundled model on a synthetic video.

A sequence of the renderer (objects with known identities moving at 10 Hz) goes to the node
frame by frame with its own stamps. Checked on what the node publishes: every output carries
its frame's header; every ground-truth object the model finds keeps one ``track_id`` and one
pixel value (STEP convention) over the frames; distinct objects get distinct tracks; a stamp
that goes backwards and a ``frame_id`` change reset the tracker (ids start again, one log line
each); ``tracking: false`` publishes ``track_id`` 0 and per-frame ids.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from ros_harness import check_panoptic, running_node

from panoptic_ros.data.sequences import SequenceConfig, generate_sequence
from panoptic_ros.ros.conversions import array_to_image, image_to_array

pytestmark = pytest.mark.ros

FRAMES = 12
SIZE = (128, 160)


@pytest.fixture(scope="module")
def sequence():
    config = SequenceConfig(height=SIZE[0], width=SIZE[1])
    return list(generate_sequence(seed=2026, video=3, frames=FRAMES, config=config))


def frame_msg(frame, stamp: float, frame_id: str = "camera_optical"):
    msg = array_to_image(frame.image, "rgb8")
    msg.header.stamp.sec = int(stamp)
    msg.header.stamp.nanosec = int(round((stamp - int(stamp)) * 1e9))
    msg.header.frame_id = frame_id
    return msg


def matches(gt_ids: np.ndarray, out) -> dict[int, tuple[int, int]]:
    """Ground-truth thing id -> (track_id, pixel value) of the output segment covering more
    than half of it (same category, IoU > 0.5: at most one)."""
    ids = image_to_array(out.ids)
    found = {}
    for gt in np.unique(gt_ids):
        cat, inst = divmod(int(gt), 1000)
        if inst == 0:
            continue
        gt_mask = gt_ids == gt
        for s in out.segments:
            if s.is_thing and s.category_id == cat:
                pred = ids == s.id
                iou = (gt_mask & pred).sum() / (gt_mask | pred).sum()
                if iou > 0.5:
                    found[int(gt)] = (int(s.track_id), int(s.id))
    return found


def test_node_keeps_ids_across_frames_and_resets(graph, tmp_path, sequence):
    with running_node(graph, tmp_path, weights="demo", input_size=0, cpu_threads=1) as (_, log):
        tracks: dict[int, set[tuple[int, int]]] = defaultdict(set)
        outputs = []
        for k, frame in enumerate(sequence):
            sent = frame_msg(frame, 100.0 + frame.stamp)
            out = graph.send(sent)
            check_panoptic(out, sent)  # header, size, segments agree with the label image
            outputs.append(out)
            for gt, pair in matches(frame.result.ids, out).items():
                tracks[gt].add(pair)
            things = [s for s in out.segments if s.is_thing]
            assert all(s.track_id > 0 for s in things if s.score >= 0.5), k
            assert all(s.track_id == 0 and s.track_age == 0.0 for s in out.segments
                       if not s.is_thing)
        assert len(tracks) >= 4, tracks  # the model finds the objects of this sequence
        # A track keeps one pixel value (STEP convention) and objects do not share tracks.
        pixel = {}
        for pairs in tracks.values():
            for track_id, value in pairs:
                assert pixel.setdefault(track_id, value) == value, (track_id, pixel)
        owners = defaultdict(set)
        for gt, pairs in tracks.items():
            for track_id, _ in pairs:
                owners[track_id].add(gt)
        # One object of this sequence (a parked car that another passes in front of; the model
        # misses it for a frame, then merges it with a third car) gets a second track, the
        # passing car taking its first; every other object keeps its own track.
        assert sum(len(o) > 1 for o in owners.values()) <= 2, owners
        kept = [gt for gt, pairs in tracks.items() if len(pairs) == 1]
        assert len(kept) >= len(tracks) - 1, tracks
        static = [gt for gt in tracks if gt // 1000 == 3]  # the boxes of this sequence stand
        assert static and all(len(tracks[gt]) == 1 for gt in static), tracks
        # track_age is the stamp gap since the track was first seen.
        last = outputs[-1]
        first_seen = {}
        for out in outputs:
            t = out.header.stamp.sec + out.header.stamp.nanosec * 1e-9
            for s in out.segments:
                first_seen.setdefault(s.track_id, t)
        t_last = last.header.stamp.sec + last.header.stamp.nanosec * 1e-9
        for s in last.segments:
            if s.track_id:
                assert s.track_age == pytest.approx(t_last - first_seen[s.track_id], abs=1e-3)
        top = max(s.track_id for out in outputs for s in out.segments)

        # A stamp going backwards (a bag replayed from its start) resets the tracker.
        sent = frame_msg(sequence[0], 50.0)
        out = graph.send(sent)
        graph.wait_for(lambda: "tracker reset: stamp went backwards" in log.read_text(),
                       what="the reset line")
        things = [s for s in out.segments if s.is_thing and s.track_id]
        assert things and max(s.track_id for s in things) <= len(things) < top
        assert all(s.track_age == 0.0 for s in things)
        # So does another camera frame.
        out = graph.send(frame_msg(sequence[1], 50.1, frame_id="other_camera"))
        graph.wait_for(lambda: "tracker reset: frame_id changed" in log.read_text(),
                       what="the frame_id reset line")
        assert log.read_text().count("tracker reset:") == 2

        # Live: tracking off publishes per-frame ids and no track ids.
        assert graph.set_params(tracking=False)[0].successful
        out = graph.send(frame_msg(sequence[2], 50.2, frame_id="other_camera"))
        assert all(s.track_id == 0 for s in out.segments)
        # An inconsistent pair of thresholds is refused with the parameter names.
        result = graph.set_params(track_low_score=0.9)[0]
        assert not result.successful and "track_low_score" in result.reason
        diag = graph.diagnostics(lambda d: d.get("tracking") == "off", what="tracking off")
        assert diag["tracking"] == "off"
