"""Live scoring of a panoptic stream against its ground truth (ROS-free).

What the monitor does with every message, as plain functions of the messages' contents so that
it is testable without a ROS graph. :class:`LiveEvaluator` pairs each prediction with the
ground truth of the same header (:class:`~panoptic_ros.ros.demo.pairing.StampPairer`) and
accumulates PQ (:class:`~panoptic_ros.evaluation.pq.PQStat` of
:func:`~panoptic_ros.evaluation.pq.pq_results` per pair), end-to-end latency, output rate and
instance counts; on video ground truth (thing ids that persist within a video, one header
``frame_id`` per video) also STQ and ID switches
(:class:`~panoptic_ros.evaluation.live.LiveVideoMetrics` per video, pooled over the videos);
on ground truth with 3D (segments with geometry: the demo camera's sequences) the 3D centroid
error of matched things (:class:`~panoptic_ros.evaluation.centroid.CentroidStat` of
:func:`~panoptic_ros.evaluation.centroid.centroid_frame` per pair); optionally it writes
every pair as COCO panoptic files (:class:`PairWriter`: predictions and ground truth, so that
``panoptic-ros eval`` re-scores them offline to the same figures) and samples evenly spaced
frames for the contact sheet (:mod:`~panoptic_ros.ros.demo.sheet`).

Keys are :data:`~panoptic_ros.ros.demo.pairing.FrameKey` tuples; times are seconds
(``time.monotonic`` or any one clock).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from panoptic_ros.categories import LabelSet
from panoptic_ros.data.coco_panoptic import CocoPanopticWriter, write_image, write_panoptic_png
from panoptic_ros.data.sequences import frame_file_name
from panoptic_ros.evaluation.centroid import MAX_RANGE_M, CentroidStat, centroid_frame
from panoptic_ros.evaluation.live import LiveSnapshot as VideoSnapshot
from panoptic_ros.evaluation.live import LiveVideoMetrics
from panoptic_ros.evaluation.pq import PQStat, pq_results
from panoptic_ros.evaluation.stq import STQStat
from panoptic_ros.geometry import geometry_json
from panoptic_ros.result import PanopticResult
from panoptic_ros.ros.demo.pairing import (
    FrameKey,
    KeyedBuffer,
    StampPairer,
    stamp_ns,
    video_of_frame_id,
)
from panoptic_ros.ros.demo.report import (
    GT_DIR,
    GT_JSON,
    IMAGE_DIR,
    PRED_DIR,
    PRED_JSON,
    SHEET_NAME,
    centroid_section,
)
from panoptic_ros.ros.demo.sheet import SheetRow, SheetSampler, sheet_image


def compatible_categories(model: LabelSet, truth: LabelSet) -> bool:
    """Whether every model category exists in the ground truth with the same thing/stuff kind.

    Only then does PQ against the ground truth mean something (and ``panoptic-ros eval``, which
    refuses unknown predicted categories, can reproduce it).
    """
    return all(c.id in truth and truth.is_thing(c.id) == c.is_thing for c in model)


def coco_segments(result: PanopticResult, truth: bool) -> list[dict[str, Any]]:
    """``segments_info`` of a result (:meth:`PanopticResult.to_coco`'s) with its things' 3D.

    What the files carry and the live 3D error reads, so both agree. Things with geometry get,
    as ``panoptic-ros synth --sequences`` and ``infer --depth`` write them (metres, camera
    optical frame, rounded to 0.1 mm): ground truth (``truth``) ``position_m``; predictions
    ``centroid_m``, ``distance_m`` and ``valid_depth_fraction``.
    """
    info = result.to_coco()[1]
    for entry, s in zip(info, result.segments):
        if s.is_thing and s.geometry is not None:
            fields = geometry_json(s.geometry)
            entry.update({"position_m": fields["centroid_m"]} if truth else fields)
    return info


def latency_summary(latencies_s: Iterable[float]) -> dict[str, float | int]:
    """p50, p95, mean, min and max of latencies (seconds in), in milliseconds; count."""
    ms = np.asarray(list(latencies_s), dtype=np.float64) * 1e3
    if not ms.size:
        return {"count": 0, "p50": 0.0, "p95": 0.0, "mean": 0.0, "min": 0.0, "max": 0.0}
    p50, p95 = np.percentile(ms, [50, 95])
    return {"count": int(ms.size), "p50": float(p50), "p95": float(p95),
            "mean": float(ms.mean()), "min": float(ms.min()), "max": float(ms.max())}


class PairWriter:
    """Scored pairs as COCO panoptic files, which ``panoptic-ros eval`` re-scores the same.

    Ground truth: :data:`~.report.GT_JSON` + :data:`~.report.GT_DIR`/ + the camera images in
    :data:`~.report.IMAGE_DIR`/ (PNG); predictions: :data:`~.report.PRED_JSON` +
    :data:`~.report.PRED_DIR`/; both through :class:`CocoPanopticWriter`. Pairs of a video
    (:meth:`add` with ``video``) are written as a video data set, the layout of
    ``panoptic-ros synth --sequences``: images of both JSONs carry ``video_id`` and
    ``frame_index`` (pairing order within the video: frames the node dropped leave no gap) and
    every file is ``<video>/<frame:06d>.png``, so that ``panoptic-ros eval`` also reports the
    video metrics. Segment ids are the label-image values as they came: the ground truth's
    persistent thing ids and the node's track-based ones. Things with 3D carry it
    (:func:`coco_segments`), so that ``eval`` also reports the 3D centroid error.

    Args:
        output_dir: folder of the files (created).
        truth_labels: categories of the ground truth (also the predictions' until
            :meth:`set_model_labels`).
    """

    def __init__(self, output_dir: Path, truth_labels: LabelSet) -> None:
        self.truth = CocoPanopticWriter(output_dir, truth_labels, json_name=GT_JSON,
                                        png_dir_name=GT_DIR, image_dir_name=IMAGE_DIR)
        self.predictions = CocoPanopticWriter(output_dir, truth_labels, json_name=PRED_JSON,
                                              png_dir_name=PRED_DIR)
        self._video_frames: dict[str, int] = {}  # video -> frames written

    def set_model_labels(self, labels: LabelSet) -> None:
        """The categories written into the predictions' JSON (the node's)."""
        self.predictions.label_set = labels

    def add(self, image_id: int, truth: PanopticResult, pred: PanopticResult,
            image: np.ndarray | None, video: str | None = None,
            infos: tuple[list[dict], list[dict]] | None = None) -> Path:
        """Write one pair (and its camera image, when given); the path of that image's file.

        A camera image that comes later is written to the returned path then.

        Args:
            video: the pair's video (its ``video_id``); ``None``: a single image.
            infos: the pair's ``segments_info`` (ground truth, prediction) when already made
                (:func:`coco_segments`).
        """
        if infos is None:
            infos = coco_segments(truth, truth=True), coco_segments(pred, truth=False)
        if video is None:
            self.truth.add(image_id, truth, image, image_suffix=".png")
            self.predictions.add(image_id, pred)
            for writer, info in zip((self.truth, self.predictions), infos):
                writer.annotations[-1]["segments_info"] = info
            return self.truth.image_dir / self.truth.images[-1]["file_name"]
        index = self._video_frames.get(video, 0)
        self._video_frames[video] = index + 1
        name = frame_file_name(video, index)
        fields = {"video_id": video, "frame_index": index, "file_name": name}
        for writer, result, info in zip((self.truth, self.predictions), (truth, pred), infos):
            write_panoptic_png(writer.png_dir / name, result.ids)
            writer.images.append({"id": image_id, **fields, "height": result.height,
                                  "width": result.width})
            writer.annotations.append({"image_id": image_id, **fields, "segments_info": info})
        path = self.truth.image_dir / name
        if image is not None:
            write_image(path, image)
        return path

    def close(self) -> dict[str, str]:
        """Write both JSONs; their paths (``ground_truth_json``, ``predictions_json``)."""
        return {"ground_truth_json": str(self.truth.close()),
                "predictions_json": str(self.predictions.close())}


@dataclass(frozen=True)
class LiveSnapshot:
    """Running figures for a status line.

    Attributes:
        frames_in: ground-truth frames received (camera frames).
        frames_out: predictions received.
        frames_dropped: camera frames known to have no output (so far).
        fps: output rate over the last window, Hz.
        latency_ms_p50: median end-to-end latency of the recent outputs, ms (0: none yet).
        pq: running PQ (All, fraction), ``None`` before the first pair or when not scored.
        stq: running STQ pooled over the videos so far (fraction); ``None`` before the first
            pair, when not scored, or on single images.
        id_switches: ID switches of things over the videos so far; ``None`` likewise.
        centroid_error_p50_m: running median 3D centroid error of matched things within
            :data:`~panoptic_ros.evaluation.centroid.MAX_RANGE_M` of the camera, metres;
            ``None`` before the first such match, or without 3D ground truth.
    """

    frames_in: int
    frames_out: int
    frames_dropped: int
    fps: float
    latency_ms_p50: float
    pq: float | None
    stq: float | None = None
    id_switches: int | None = None
    centroid_error_p50_m: float | None = None


@dataclass
class _Truth:
    result: PanopticResult
    image: np.ndarray | None = None


class LiveEvaluator:
    """PQ, latency, rate and counts of a prediction stream against its ground truth.

    Thread-safe: ROS callbacks may feed it from several threads and a status line may read
    :meth:`snapshot` meanwhile. All ``add_*`` calls are cheap except the one completing a pair
    (PQ of the frame, its video metrics, and file writing when ``output_dir`` is set).

    With ``video``, consecutive pairs with the same header ``frame_id`` are one video (the demo
    camera gives each video a frame id of its own): each pair also feeds a
    :class:`~panoptic_ros.evaluation.live.LiveVideoMetrics`, which restarts when the frame id
    changes; per-video figures are kept and the STQ counts pooled (STEP: one AQ over every
    video's tracks, one SQ over every pixel). Frames the node dropped (latest frame wins) have
    no prediction and are left out: a video's metrics cover its paired frames only, as if the
    video had been recorded without them (the files written say the same, so ``panoptic-ros
    eval`` agrees).

    Ground truth whose things have geometry (the demo camera's sequences) is also scored in 3D:
    per pair, things of the same category with mask IoU > 0.5 match, and the error of a match is
    the distance between the predicted and the ground-truth centroid (camera optical frame,
    metres; :func:`~panoptic_ros.evaluation.centroid.centroid_frame` on the very
    ``segments_info`` the files carry, so ``panoptic-ros eval`` reports the same errors).

    Args:
        truth_labels: categories of the ground truth (PQ is averaged over these).
        output_dir: when set, every pair is written there as COCO panoptic files
            (:class:`PairWriter`), image ids 1, 2, ... in pairing order, and the contact sheet
            at :meth:`close`.
        sheet_rows: frames kept for the contact sheet (0: none).
        window_s: window of the running output rate, seconds.
        max_pending: see :class:`~panoptic_ros.ros.demo.pairing.StampPairer`.
        clock: monotonic time source, seconds.
        video: the ground truth is video (thing ids persist per object within a ``frame_id``):
            score STQ and ID switches, write the files as a video data set.
    """

    def __init__(
        self,
        truth_labels: LabelSet,
        *,
        output_dir: str | Path | None = None,
        sheet_rows: int = 6,
        window_s: float = 5.0,
        max_pending: int = 100,
        clock: Callable[[], float] = time.monotonic,
        video: bool = False,
    ) -> None:
        self.truth_labels = truth_labels
        self.model_labels: LabelSet | None = None
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.RLock()
        self.pairer: StampPairer[_Truth, PanopticResult] = StampPairer(max_pending)
        self.stat = PQStat()
        self.scored = True
        self.pq_note = ""
        self.frames_in = 0
        self.frames_out = 0
        self.paired = 0
        self.latencies_s: list[float] = []
        self._out_times: deque[float] = deque()
        self._first_out: float | None = None
        self._last_out: float | None = None
        self._first_stamp: int | None = None
        self._last_stamp: int | None = None
        # Camera images come on their own topic: before their ground truth (held until it
        # comes), or after their frame was paired (then written where the pair's files expect).
        self._early_images: KeyedBuffer[np.ndarray] = KeyedBuffer(8)
        self._late_images: KeyedBuffer[Path | None] = KeyedBuffer(16)
        self._count_sums: dict[str, int] = {}
        self.count_messages = 0
        self.sampler = SheetSampler(sheet_rows) if sheet_rows > 0 else None
        self.video = video
        self._video_metrics = LiveVideoMetrics(truth_labels) if video else None
        self._video_frame_id: str | None = None  # of the video being scored
        self._video_snap: VideoSnapshot | None = None  # its figures so far
        self._videos: list[dict[str, Any]] = []  # finished videos' figures
        self._videos_stat = STQStat()  # finished videos' STQ counts, pooled
        self.centroid = CentroidStat()  # matched things' 3D errors
        self.truth_things_3d = 0  # ground-truth things with 3D in the scored pairs
        self._things = {c.id for c in truth_labels.things}
        self.writer = (PairWriter(self.output_dir, truth_labels)
                       if self.output_dir is not None else None)

    # -- inputs ----------------------------------------------------------------------------
    def set_model_labels(self, labels: LabelSet) -> None:
        """The node's categories (its latched ``~/categories``); decides whether PQ is scored."""
        with self._lock:
            self.model_labels = labels
            if self.writer is not None:
                self.writer.set_model_labels(labels)
            if not compatible_categories(labels, self.truth_labels):
                self.scored = False
                self.pq_note = (
                    f"not scored: the model's categories ({labels.name}, {len(labels)}) are not "
                    f"those of the ground truth ({self.truth_labels.name})")

    def add_truth(self, key: FrameKey, truth: PanopticResult) -> None:
        """A ground-truth frame (one per camera frame)."""
        with self._lock:
            self.frames_in += 1
            ns = stamp_ns(key)
            self._first_stamp = ns if self._first_stamp is None else self._first_stamp
            self._last_stamp = ns
            pair = self.pairer.add_truth(key, _Truth(truth, self._early_images.pop(key)))
            if pair is not None:
                self._pair(key, *pair)

    def add_image(self, key: FrameKey, image: np.ndarray) -> None:
        """The camera frame itself (for the dataset files and the contact sheet; optional).

        It may come before or after its ground truth, and even after the frame was paired.
        """
        with self._lock:
            pending = self.pairer.truth(key)
            if pending is not None:
                pending.image = image
                return
            if key in self._late_images:  # paired already: complete its files and sheet row
                path = self._late_images.pop(key)
                if path is not None:
                    write_image(path, image)
                if self.sampler is not None:
                    self.sampler.add_image(key, image)
                return
            self._early_images.put(key, image)

    def add_prediction(
        self, key: FrameKey, pred: PanopticResult, latency_s: float,
        received: float | None = None,
    ) -> None:
        """A prediction received ``latency_s`` after its frame's stamp."""
        with self._lock:
            now = self._clock() if received is None else received
            self.frames_out += 1
            self.latencies_s.append(float(latency_s))
            self._first_out = now if self._first_out is None else self._first_out
            self._last_out = now
            self._out_times.append(now)
            pair = self.pairer.add_prediction(key, pred)
            if pair is not None:
                self._pair(key, *pair)

    def add_overlay(self, key: FrameKey, image: np.ndarray) -> None:
        """The node's ``~/overlay`` of a frame."""
        with self._lock:
            if self.sampler is not None:
                self.sampler.add_overlay(key, image)

    def add_counts(self, counts: Mapping[str, int]) -> None:
        """One ``~/instance_counts`` message: instances per thing category (by name)."""
        with self._lock:
            self.count_messages += 1
            for label, n in counts.items():
                self._count_sums[label] = self._count_sums.get(label, 0) + int(n)

    def _pair(self, key: FrameKey, truth: _Truth, pred: PanopticResult) -> None:
        self.paired += 1
        image = truth.image if truth.image is not None else self._early_images.pop(key)
        infos = coco_segments(truth.result, truth=True), coco_segments(pred, truth=False)
        frame_stat = pq_results(truth.result, pred) if self.scored else None
        if frame_stat is not None:
            self.stat += frame_stat
            if self._video_metrics is not None:
                self._add_video_frame(key[2], truth.result, pred)
            with_3d = sum("position_m" in s for s in infos[0])
            if with_3d:
                self.truth_things_3d += with_3d
                self.centroid += centroid_frame(truth.result.ids, infos[0], pred.ids, infos[1],
                                                self._things)
        late_path = None
        if self.writer is not None:
            video = video_of_frame_id(key[2]) if self.video else None
            late_path = self.writer.add(self.paired, truth.result, pred, image, video, infos)
        if image is None:  # its image is still on the way (another topic)
            self._late_images.put(key, late_path)
        if self.sampler is not None:
            def row() -> SheetRow:
                pq = None
                if frame_stat is not None:
                    pq = frame_stat.results(self.truth_labels)["All"]["pq"]
                return SheetRow(key, truth.result, pq, image)

            self.sampler.offer(key, row)

    def _add_video_frame(self, frame_id: str, truth: PanopticResult,
                         pred: PanopticResult) -> None:
        """Score a pair's video metrics; a new ``frame_id`` closes the video before it."""
        if frame_id != self._video_frame_id:
            self._finish_video()
            self._video_frame_id = frame_id
        self._video_snap = self._video_metrics.update(
            truth.ids, segments_info(truth), pred.ids, segments_info(pred))

    def _finish_video(self) -> None:
        """Keep the current video's figures, pool its STQ counts, start afresh."""
        if self._video_snap is not None:
            self._videos.append(self._video_entry())
            self._videos_stat += self._video_metrics.stq_stat()
        self._video_metrics.reset()
        self._video_snap = None

    def _video_entry(self) -> dict[str, Any]:
        snap = self._video_snap
        return {"video": video_of_frame_id(self._video_frame_id), "frames": snap.frames,
                "stq": snap.stq, "aq": snap.aq, "sq": snap.sq,
                "id_switches": snap.id_switches, "gt_tracks": snap.gt_tracks}

    # -- figures ---------------------------------------------------------------------------
    def video_results(self) -> dict[str, Any] | None:
        """Video figures so far; ``None`` on single images, unscored, or before any pair.

        Returns:
            ``videos``, ``frames`` (paired), pooled ``stq``, ``aq``, ``sq`` (fractions, as
            ``panoptic-ros eval`` pools sequences), ``gt_tracks`` (ground-truth thing tracks),
            ``id_switches`` (total) and ``id_switches_per_100_tracks``, and ``per_video``: a
            list of ``{video, frames, stq, aq, sq, id_switches, gt_tracks}`` in playing order.
        """
        with self._lock:
            if self._video_metrics is None or not self.scored:
                return None
            videos = list(self._videos)
            stat = STQStat()
            stat += self._videos_stat
            if self._video_snap is not None:
                videos.append(self._video_entry())
                stat += self._video_metrics.stq_stat()
            if not videos:
                return None
            stq = stat.results()
            switches = sum(v["id_switches"] for v in videos)
            return {
                "videos": len(videos),
                "frames": sum(v["frames"] for v in videos),
                "stq": stq["stq"], "aq": stq["aq"], "sq": stq["sq"],
                "gt_tracks": stq["tracks"],
                "id_switches": switches,
                "id_switches_per_100_tracks":
                    100.0 * switches / stq["tracks"] if stq["tracks"] else 0.0,
                "per_video": videos,
            }

    def centroid_results(self) -> dict[str, Any] | None:
        """The 3D centroid error so far (:func:`~.report.centroid_section`).

        ``None`` without ground truth in 3D (single images, unscored, before any such pair).
        """
        with self._lock:
            if not self.truth_things_3d:
                return None
            return centroid_section(self.centroid.results(MAX_RANGE_M), self.truth_things_3d)

    def pq(self) -> dict | None:
        """PQ results so far (``pq_compute``'s dict), ``None`` before any pair or unscored."""
        with self._lock:
            if not self.scored or not self.paired:
                return None
            return self.stat.results(self.truth_labels)

    def snapshot(self) -> LiveSnapshot:
        """The running figures."""
        with self._lock:
            now = self._clock()
            while self._out_times and self._out_times[0] < now - self.window_s:
                self._out_times.popleft()
            times = self._out_times
            fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and \
                times[-1] > times[0] else 0.0
            recent = self.latencies_s[-50:]
            pq = self.pq()
            video = self.video_results()
            centroid = self.centroid_results()
            return LiveSnapshot(
                frames_in=self.frames_in,
                frames_out=self.frames_out,
                frames_dropped=self.pairer.truth_without_prediction,
                fps=fps,
                latency_ms_p50=float(np.median(recent)) * 1e3 if recent else 0.0,
                pq=None if pq is None else pq["All"]["pq"],
                stq=None if video is None else video["stq"],
                id_switches=None if video is None else video["id_switches"],
                centroid_error_p50_m=None if centroid is None else centroid["median"],
            )

    def close(self, sheet_t0_ns: int | None = None) -> dict[str, Any]:
        """End of the stream: release what is pending, write the files, return the summary.

        Returns:
            A JSON-ready dict: ``frames_in``, ``frames_out``, ``frames_paired``,
            ``frames_dropped`` (camera frames without output), ``predictions_without_truth``,
            ``input_rate_hz`` (from the stamps), ``output_rate_hz``, ``latency_ms`` (p50, p95,
            mean, min, max, count), ``pq`` (``pq_compute``'s dict or ``None``), ``pq_note``,
            ``instance_counts_mean`` (per thing category name), ``video``
            (:meth:`video_results`: pooled STQ, ID switches, per-video STQ; ``None`` on single
            images), ``centroid_error_m`` (:meth:`centroid_results`; ``None`` without 3D
            ground truth), ``contact_sheet_rows``, ``files``.
        """
        with self._lock:
            self.pairer.flush()
            files: dict[str, str] = {}
            if self.writer is not None:
                files.update(self.writer.close())
            sheet_rows = 0
            if self.sampler is not None and self.output_dir is not None:
                rows = self.sampler.pick()
                if rows:
                    t0 = self._first_stamp if sheet_t0_ns is None else sheet_t0_ns
                    path = self.output_dir / SHEET_NAME
                    write_image(path, sheet_image(rows, self.truth_labels, t0 or 0))
                    files["contact_sheet"] = str(path)
                    sheet_rows = len(rows)
            return {
                "frames_in": self.frames_in,
                "frames_out": self.frames_out,
                "frames_paired": self.paired,
                "frames_dropped": self.pairer.truth_without_prediction,
                "predictions_without_truth": self.pairer.prediction_without_truth,
                "input_rate_hz": self._input_rate(),
                "output_rate_hz": self._output_rate(),
                "latency_ms": latency_summary(self.latencies_s),
                "pq": self.pq(),
                "pq_note": self.pq_note,
                "video": self.video_results(),
                "centroid_error_m": self.centroid_results(),
                "instance_counts_mean": {
                    k: v / self.count_messages for k, v in self._count_sums.items()
                } if self.count_messages else {},
                "contact_sheet_rows": sheet_rows,
                "files": files,
            }

    def _input_rate(self) -> float:
        if self.frames_in < 2 or self._last_stamp == self._first_stamp:
            return 0.0
        return (self.frames_in - 1) / ((self._last_stamp - self._first_stamp) / 1e9)

    def _output_rate(self) -> float:
        if self.frames_out < 2 or self._last_out == self._first_out:
            return 0.0
        return (self.frames_out - 1) / (self._last_out - self._first_out)


def segments_info(result: PanopticResult) -> list[dict[str, int]]:
    """``id``, ``category_id``, ``iscrowd`` of every segment: what video metrics read."""
    return [{"id": int(s.id), "category_id": int(s.category_id), "iscrowd": int(s.iscrowd)}
            for s in result.segments]
