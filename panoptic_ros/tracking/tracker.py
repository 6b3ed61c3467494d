"""Persistent identities for the thing segments of a stream of panoptic results.

Design (from the published descriptions of SORT, ByteTrack, OC-SORT and mask-IoU video panoptic
association; no code taken from any of them):

- **Cue: motion-shifted mask IoU.** A track keeps the mask of its last observation (a crop at
  its box) and a constant velocity of its box centre in pixels per second. For a frame at stamp
  ``t`` the mask is shifted by ``velocity * (t - last_seen)`` and compared with every
  detection's mask. IoU with the last mask alone fails for objects that move a large part of
  their own width between kept frames (a walking person at 10 Hz with half the frames dropped
  moves ~30 px; a car more): the shift puts the prediction back on the object, and the stamp
  gap, not a frame count, says how far, so dropped frames cost nothing. Masks rather than boxes
  because panoptic things overlap little as masks but much as boxes (people in a group, a person
  in front of a car). All overlaps come from one joint histogram
  (:mod:`panoptic_ros.tracking.overlap`), with each predicted mask whole even where two
  predictions overlap (crossing people): hiding one under the other would make the hidden
  one's own detection unmatchable.
- **Stages (ByteTrack).** 1: high-score detections against every live track (seen or lost),
  Hungarian assignment on IoU (``scipy.optimize.linear_sum_assignment``), same category only.
  2: low-score detections against the tracks left, with a stricter IoU: a weak detection of a
  partly occluded object keeps its track alive instead of being dropped. 3: high-score
  detections left against tracks left by distance of box centres to the predicted centre, gated
  by the object's size, widened the longer the track has been unseen (``center_gate_growth``:
  an extrapolated position's error grows with time): catches what IoU cannot (a track seen once
  has no velocity yet; a small fast object moves farther than its own size; an object back from
  behind another after a second or two). Unmatched high-score detections start tracks at
  once (so every confident thing has a ``track_id`` in its first frame, no confirmation delay);
  unmatched low-score detections start none and stay untracked (``track_id`` 0).
- **Velocity (OC-SORT's observation-centric idea).** Velocity is only ever estimated between two
  *observations*: on a match, ``(centre_now - centre_last_observed) / (t_now - t_last_observed)``,
  blended half-half with the previous estimate. A track unseen for a while is predicted from its
  last observation, never from integrated unobserved states, so the error of a long occlusion
  does not accumulate, and the first match after it re-estimates velocity over the whole gap.
  An observation whose box size jumped does not move the velocity by its centre: an object
  entering or leaving the image is measured by its edge away from the border, one going behind
  another keeps its velocity on that axis (:func:`axis_motion`), and a box that jumped on both
  axes (merged with a neighbour, split) moves none.
- **Steady-size mask.** Backends merge a thing with a neighbour or see only part of it for a
  frame or a few. The track then follows the merged or partial segment (its pixels are the
  object's) but also keeps its latest observation of a *steady size* and is compared there too,
  so the object is found again when it comes back whole; motion is measured from that steady
  observation, never from a merged box.
- **Lifetime.** A track lives while ``t - last_seen <= max_age`` seconds; then it dies and frees
  its instance number.

Instance numbers: a track's ``instance_id`` (its pixel value is ``category * divisor + number``)
is allocated per category from 1 upwards, never reused while numbers below the divisor remain
unused; once they are exhausted the number freed longest ago is reused, and if none is free the
category's longest-unseen track not matched in this frame is ended to free one. Untracked thing
segments (crowd, low-score unmatched, below ``low_score``) get numbers from the top
(``divisor - 1`` downwards) not held by any live track, so their pixel values do not collide with
tracked objects'; their values carry no identity from frame to frame.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import linear_sum_assignment

from panoptic_ros.result import PanopticResult, Segment
from panoptic_ros.tracking.config import TrackerConfig
from panoptic_ros.tracking.overlap import detection_index, mask_ious

VELOCITY_WEIGHT = 0.3
"""Weight of a new observation-to-observation velocity against the previous estimate: things
move at a nearly constant velocity, and a single observation's centre is moved by mask noise
(a limb, a shadow, a few pixels of occlusion), so the estimate averages over about three
observations."""

SIZE_JUMP = 1.25
"""A box whose width or height changed by this factor or more since the previous observation is
cut by an image border or by an occluder (or merged): its centre moved partly for that reason,
so motion along that axis is measured from the uncut edge, or not at all (see
:func:`axis_motion`)."""

MAX_AREA_RATIO = 2.0
"""Stage 3 (centre distance) pairs only boxes whose areas differ by less than this factor."""


@dataclass(eq=False)  # identity: tracks are compared and hashed as objects
class Track:
    """One object over time (mutable state of the tracker).

    Attributes:
        track_id: unique since the tracker's last reset, never reused.
        category_id: dataset category id; a track only takes detections of its category.
        number: instance number within the category, held for the track's life.
        first_seen: stamp (s) of its first observation.
        last_seen: stamp (s) of its latest observation.
        hits: number of observations.
        box: ``(x, y, w, h)`` pixels of the latest observation.
        crop: ndarray[h, w] bool, the latest mask inside ``box``.
        velocity: ``(vx, vy)`` of the box centre in pixels per second (image x right, y down);
            None until a second observation at a later stamp.
        ref_box, ref_crop, ref_seen: the latest observation of a *steady size* (see
            :meth:`observe`) and its stamp; the same as ``box``, ``crop``, ``last_seen`` unless
            the latest observations jumped in size (a merge with a neighbour, a split, a
            partial occlusion).
    """

    track_id: int
    category_id: int
    number: int
    first_seen: float
    last_seen: float
    hits: int
    box: tuple[int, int, int, int]
    crop: np.ndarray
    velocity: tuple[float, float] | None = None
    ref_box: tuple[int, int, int, int] | None = None
    ref_crop: np.ndarray | None = None
    ref_seen: float | None = None

    def __post_init__(self) -> None:
        if self.ref_box is None:
            self.ref_box, self.ref_crop, self.ref_seen = self.box, self.crop, self.last_seen

    @property
    def center(self) -> tuple[float, float]:
        """``(x, y)`` pixels: centre of the latest box."""
        x, y, w, h = self.box
        return x + w / 2.0, y + h / 2.0

    def shift(self, stamp: float) -> tuple[float, float]:
        """Predicted motion ``(dx, dy)`` pixels from the last sighting to ``stamp``."""
        if self.velocity is None:
            return 0.0, 0.0
        dt = stamp - self.last_seen
        return self.velocity[0] * dt, self.velocity[1] * dt

    def placement(self, stamp: float) -> tuple[int, int, np.ndarray]:
        """``(x0, y0, crop)``: the latest mask moved to where it is predicted at ``stamp``."""
        dx, dy = self.shift(stamp)
        return self.box[0] + round(dx), self.box[1] + round(dy), self.crop

    def placements(self, stamp: float) -> list[tuple[int, int, np.ndarray]]:
        """Every placement the track is compared at (``(x0, y0, crop)``), the predicted one first.

        The latest mask where it is predicted and where it was seen (a velocity can be wrong:
        a vanished mask fragment moves a box edge far, which reads like a fast exit); when the
        latest observation jumped in size, also the steady-size mask (:attr:`ref_crop`) where
        it is predicted: after a merge with a neighbour or a partial view, the object most often
        comes back at its steady size.
        """
        predicted = self.placement(stamp)
        out = [predicted]
        if predicted[:2] != self.box[:2]:
            out.append((self.box[0], self.box[1], self.crop))
        if self.ref_crop is not self.crop:
            vx, vy = self.velocity or (0.0, 0.0)
            dx, dy = vx * (stamp - self.ref_seen), vy * (stamp - self.ref_seen)
            out.append((self.ref_box[0] + round(dx), self.ref_box[1] + round(dy), self.ref_crop))
        return out

    def observe(self, segment: Segment, crop: np.ndarray, stamp: float,
                shape: tuple[int, int]) -> None:
        """Take a new observation (image ``shape`` ``(H, W)``): velocity, box, mask.

        Motion is measured from the steady-size observation (:attr:`ref_box`), per axis by
        :func:`axis_motion`; an axis it cannot measure keeps its velocity, and so do both when
        the box jumped in size on both axes (a merge with a neighbour or a split: a box cut by
        an image border changes along one axis). The observation becomes the steady-size one
        when its size is steady (:func:`steady`) against the previous steady one or against
        the previous observation (a new size confirmed by two observations in a row).
        """
        new = tuple(int(v) for v in segment.bbox)
        ref = self.ref_box
        gap = stamp - self.ref_seen
        if gap > 0 and (steady(ref[2], new[2]) or steady(ref[3], new[3])):
            moves = (axis_motion(ref[0], ref[2], new[0], new[2], shape[1]),
                     axis_motion(ref[1], ref[3], new[1], new[3], shape[0]))
            if moves != (None, None):
                before = self.velocity or (0.0, 0.0)
                a = VELOCITY_WEIGHT if self.velocity is not None else 1.0
                self.velocity = tuple(
                    v if m is None else a * m / gap + (1 - a) * v for m, v in zip(moves, before)
                )
        if ((steady(ref[2], new[2]) and steady(ref[3], new[3]))
                or (steady(self.box[2], new[2]) and steady(self.box[3], new[3]))):
            self.ref_box, self.ref_crop, self.ref_seen = new, crop, stamp
        self.box = new
        self.crop = crop
        self.last_seen = stamp
        self.hits += 1


def steady(length0: int, length1: int) -> bool:
    """Whether a box extent kept its length between two observations (within SIZE_JUMP)."""
    return max(length0, length1) < SIZE_JUMP * min(length0, length1)


def axis_motion(start0: int, length0: int, start1: int, length1: int, size: int) -> float | None:
    """Displacement (pixels) of an object along one image axis between two observations.

    Args:
        start0, length0: extent ``[start0, start0 + length0)`` of the earlier box on this axis.
        start1, length1: that of the later box.
        size: the image's extent on this axis (width or height).

    Returns:
        The centre's displacement when the extent kept its length (within :data:`SIZE_JUMP`);
        else, when the object is cut by one image border (entering or leaving), the displacement
        of its other edge; else None: the length jumped for another reason (partial occlusion
        by another object, a merge) and the centre's move says nothing about motion.
    """
    if steady(length0, length1):
        return (start1 + length1 / 2.0) - (start0 + length0 / 2.0)
    low_cut = start0 <= 0 or start1 <= 0
    high_cut = start0 + length0 >= size or start1 + length1 >= size
    if low_cut and not high_cut:
        return float((start1 + length1) - (start0 + length0))
    if high_cut and not low_cut:
        return float(start1 - start0)
    return None


def box_center(box: Sequence[int]) -> tuple[float, float]:
    """``(x, y)`` pixels of the centre of an ``(x, y, w, h)`` box."""
    return box[0] + box[2] / 2.0, box[1] + box[3] / 2.0


class _Numbers:
    """Instance numbers ``1..limit-1`` of one category: fresh ones first, then oldest freed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.next = 1
        self.freed: deque[int] = deque()

    def take(self) -> int | None:
        if self.next < self.limit:
            self.next += 1
            return self.next - 1
        return self.freed.popleft() if self.freed else None

    def free(self, number: int) -> None:
        self.freed.append(number)


class Tracker:
    """Gives thing segments persistent instance numbers and track ids (see the module doc).

    Args:
        config: thresholds and lifetime; replace :attr:`config` between frames to change them.

    Attributes:
        tracks: live tracks (seen or unseen within ``max_age``).
        reset_reason: why the latest :meth:`update` started by resetting the tracker (stamp
            went backwards, ``frame_id``, image size or label divisor changed), else None; a
            node logs it once when it is set.
        last_reset: the reason given to the latest reset, by :meth:`reset` or by :meth:`update`.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config if config is not None else TrackerConfig()
        self.reset_reason: str | None = None
        self.reset("created")

    @property
    def config(self) -> TrackerConfig:
        """The settings used by the next :meth:`update` (assignable between frames)."""
        return self._config

    @config.setter
    def config(self, value: TrackerConfig) -> None:
        if not isinstance(value, TrackerConfig):
            raise TypeError(f"config must be a TrackerConfig, got {type(value).__name__}")
        self._config = value

    def reset(self, reason: str = "requested") -> None:
        """Forget every track; track ids and instance numbers start again from 1."""
        self.tracks: list[Track] = []
        self._numbers: dict[int, _Numbers] = {}
        self._next_track_id = 1
        self._stamp: float | None = None
        self._frame_id: str | None = None
        self._shape: tuple[int, int] | None = None
        self._divisor: int | None = None
        self.last_reset = reason

    @property
    def last_track_id(self) -> int:
        """The latest track id given since the last reset (0 if none): the number of tracks."""
        return self._next_track_id - 1

    # -- one frame ------------------------------------------------------------------------
    def update(self, result: PanopticResult, stamp: float, frame_id: str = "") -> PanopticResult:
        """Associate a frame's thing segments with tracks and relabel them.

        Args:
            result: the frame's panoptic result (``ids`` ndarray[H, W] int32).
            stamp: its header stamp in seconds (time, never a frame count).
            frame_id: its header frame_id; a change resets the tracker.

        Returns:
            A new result: each thing segment's pixels and id become ``category * divisor +
            number`` with ``instance_id`` = its track's number (untracked: a number from the top,
            see the module doc), ``track_id`` and ``track_age`` (seconds since the track was
            first seen) set; stuff, void, scores, areas and boxes unchanged. ``ids`` is shared
            with ``result`` when no pixel value changes.
        """
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be a finite number of seconds, got {stamp}")
        self.reset_reason = self._discontinuity(result, stamp, frame_id)
        if self.reset_reason is not None:
            self.reset(self.reset_reason)
        self._stamp, self._frame_id = stamp, frame_id
        self._shape, self._divisor = result.ids.shape, result.label_divisor
        self._expire(stamp)

        cfg = self.config
        candidates = [s for s in result.segments
                      if s.is_thing and not s.iscrowd and s.score >= cfg.low_score]
        # Every non-void pixel value is one of the result's segment ids: the largest pixel value.
        self._top_id = max((s.id for s in result.segments), default=0)
        matched = self._associate(candidates, result.ids, stamp)
        tracked: dict[int, Track] = {}  # segment id -> its track
        crops: dict[int, np.ndarray] = {}  # segment id -> its mask in its box
        ids = result.ids
        for k, det in enumerate(candidates):
            track = matched.get(k)
            if track is None and det.score < cfg.high_score:
                continue  # low score, unmatched: starts no track
            x, y, w, h = det.bbox
            crop = crops[det.id] = ids[y:y + h, x:x + w] == det.id
            if track is not None:
                track.observe(det, crop, stamp, ids.shape)
            else:
                track = self._start(det, crop, stamp, busy=set(matched.values()))
                if track is None:
                    continue
            tracked[det.id] = track
        return self._relabel(result, tracked, crops, stamp)

    def _discontinuity(self, result: PanopticResult, stamp: float, frame_id: str) -> str | None:
        """Why the stream is not a continuation of the previous frames, or None."""
        if self._stamp is None:
            return None
        if stamp < self._stamp:
            return f"stamp went backwards ({self._stamp:.6f} s -> {stamp:.6f} s)"
        if frame_id != self._frame_id:
            return f"frame_id changed ({self._frame_id!r} -> {frame_id!r})"
        if result.ids.shape != self._shape:
            return f"image size changed ({self._shape} -> {result.ids.shape})"
        if result.label_divisor != self._divisor:
            return f"label_divisor changed ({self._divisor} -> {result.label_divisor})"
        return None

    def _expire(self, stamp: float) -> None:
        """End the tracks unseen for longer than ``max_age`` seconds."""
        max_age = self.config.max_age
        for track in [t for t in self.tracks if stamp - t.last_seen > max_age]:
            self._end(track)

    def _end(self, track: Track) -> None:
        self.tracks.remove(track)
        self._numbers[track.category_id].free(track.number)

    def _start(self, det: Segment, crop: np.ndarray, stamp: float,
               busy: set[Track]) -> Track | None:
        """A new track for ``det``; None if its category has no instance number to give."""
        numbers = self._numbers.setdefault(det.category_id, _Numbers(self._divisor))
        number = numbers.take()
        if number is None:
            idle = [t for t in self.tracks if t.category_id == det.category_id and t not in busy
                    and t.last_seen < stamp]
            if not idle:
                return None
            self._end(min(idle, key=lambda t: (t.last_seen, t.track_id)))
            number = numbers.take()
        track = Track(track_id=self._next_track_id, category_id=det.category_id,
                      number=number, first_seen=stamp, last_seen=stamp, hits=1,
                      box=tuple(int(v) for v in det.bbox), crop=crop)
        self._next_track_id += 1
        self.tracks.append(track)
        return track

    # -- association ----------------------------------------------------------------------
    def _associate(self, dets: list[Segment], ids: np.ndarray,
                   stamp: float) -> dict[int, Track]:
        """Detection index -> matched track, by the three stages of the module doc."""
        if not dets or not self.tracks:
            return {}
        cfg = self.config
        # A fixed order (ties in the assignment resolve the same way every run).
        tracks = sorted(self.tracks, key=lambda t: (t.last_seen, t.track_id))
        iou = self._mask_iou(tracks, dets, ids, stamp)
        same = (np.array([t.category_id for t in tracks])[:, None]
                == np.array([d.category_id for d in dets])[None, :])
        high = np.array([d.score >= cfg.high_score for d in dets])
        free_t = np.ones(len(tracks), bool)
        free_d = np.ones(len(dets), bool)
        matches: dict[int, Track] = {}

        def stage(sim: np.ndarray, valid: np.ndarray, columns: np.ndarray) -> None:
            rows, cols = np.flatnonzero(free_t), np.flatnonzero(free_d & columns)
            ok = valid[np.ix_(rows, cols)]
            if not ok.any():
                return
            weights = np.where(ok, sim[np.ix_(rows, cols)], 0.0)
            for i, j in zip(*linear_sum_assignment(weights, maximize=True)):
                if ok[i, j]:
                    matches[int(cols[j])] = tracks[rows[i]]
                    free_t[rows[i]] = False
                    free_d[cols[j]] = False

        stage(iou, same & (iou >= cfg.min_iou_high), high)
        stage(iou, same & (iou >= cfg.min_iou_low), ~high)
        if cfg.center_gate > 0 and free_t.any() and (free_d & high).any():
            closeness = self._center_closeness(tracks, dets, stamp)
            stage(closeness, same & (closeness > 0), high)
        return matches

    def _mask_iou(self, tracks: list[Track], dets: list[Segment], ids: np.ndarray,
                  stamp: float) -> np.ndarray:
        """ndarray[T, D] float64 IoU of each track's predicted mask with each detection's mask.

        A moved track's IoU is the better of its predicted and its last placement. Each mask
        is whole (overlapping predictions do not hide each other); pixels
        are counted on every ``config.stride``-th row and column.
        """
        stride = self.config.stride
        index = detection_index(ids, [d.id for d in dets], stride, top=self._top_id)
        # Each track at every placement of Track.placements; the best overlap counts.
        placed, first = [], []  # first[k]: index in placed of track k's first placement
        for track in tracks:
            first.append(len(placed))
            placed += track.placements(stamp)
        iou = mask_ious(ids.shape, placed, index, len(dets), stride)
        return np.maximum.reduceat(iou, first, axis=0)

    def _center_closeness(self, tracks: list[Track], dets: list[Segment],
                          stamp: float) -> np.ndarray:
        """ndarray[T, D] in [0, 1): ``1 - distance / gate``, 0 beyond the gate.

        ``distance``: pixels from the track's predicted box centre to the detection's box
        centre; ``gate = center_gate * size * (1 + center_gate_growth * unseen)`` with ``size``
        the square root of the track's last box area and ``unseen`` the seconds since it was
        last seen. Pairs whose box areas differ by a factor ``MAX_AREA_RATIO`` or more get 0.
        """
        pred = np.array([[c + s for c, s in zip(t.center, t.shift(stamp))] for t in tracks])
        t_area = np.array([max(t.box[2] * t.box[3], 1) for t in tracks], float)
        d_box = np.array([d.bbox for d in dets], float).reshape(-1, 4)
        d_center = d_box[:, :2] + d_box[:, 2:] / 2.0
        d_area = np.maximum(d_box[:, 2] * d_box[:, 3], 1.0)
        dist = np.hypot(*(pred[:, None, :] - d_center[None, :, :]).transpose(2, 0, 1))
        unseen = np.array([stamp - t.last_seen for t in tracks])
        cfg = self.config
        widen = 1.0 + cfg.center_gate_growth * unseen
        gate = (cfg.center_gate * np.sqrt(t_area) * widen)[:, None]
        ratio = np.maximum(t_area[:, None] / d_area[None, :], d_area[None, :] / t_area[:, None])
        return np.where((dist < gate) & (ratio < MAX_AREA_RATIO), 1.0 - dist / gate, 0.0)

    # -- output ---------------------------------------------------------------------------
    def _relabel(self, result: PanopticResult, tracked: dict[int, Track],
                 crops: dict[int, np.ndarray], stamp: float) -> PanopticResult:
        """The result with thing pixels and segments renumbered (module doc).

        Pixels are rewritten segment by segment inside its box (``crops``: masks already cut
        for the tracked ones), cheaper than a lookup over the whole image.
        """
        divisor = result.label_divisor
        held: dict[int, set[int]] = {}
        for track in self.tracks:
            held.setdefault(track.category_id, set()).add(track.number)
        used: dict[int, set[int]] = {}
        for track in tracked.values():
            used.setdefault(track.category_id, set()).add(track.number)
        segments, changed = [], []
        for seg in result.segments:
            if not seg.is_thing:
                segments.append(seg)
                continue
            track = tracked.get(seg.id)
            if track is not None:
                number, track_id, age = track.number, track.track_id, stamp - track.first_seen
            else:
                number = _top_free(divisor, held.get(seg.category_id, set()),
                                   used.setdefault(seg.category_id, set()))
                track_id, age = 0, 0.0
                used[seg.category_id].add(number)
            new = replace(seg, id=seg.category_id * divisor + number, instance_id=number,
                          track_id=track_id, track_age=age)
            if new.id != seg.id:
                changed.append((seg, new.id))
            segments.append(new)
        segments.sort(key=lambda s: s.id)
        ids = result.ids
        if changed:
            ids = ids.copy()
            for seg, new_id in changed:
                x, y, w, h = seg.bbox
                crop = crops.get(seg.id)
                if crop is None:
                    crop = result.ids[y:y + h, x:x + w] == seg.id
                ids[y:y + h, x:x + w][crop] = new_id
        return PanopticResult(ids=ids, segments=segments, label_divisor=divisor)


def _top_free(divisor: int, held: set[int], used: set[int]) -> int:
    """The highest number below ``divisor`` neither held by a track nor used in this frame.

    Falls back to numbers held by unseen tracks (never to one used in this frame); a frame has
    at most ``divisor - 1`` things of a category with non-zero numbers, so one always remains.
    """
    for number in range(divisor - 1, 0, -1):
        if number not in held and number not in used:
            return number
    for number in range(divisor - 1, 0, -1):
        if number not in used:
            return number
    raise ValueError(f"more than {divisor - 1} things of one category in a frame")
