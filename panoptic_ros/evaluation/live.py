"""Live evaluation of a panoptic stream against its ground truth (ROS-free).

What a monitor downstream of the node does with every message, as plain functions of the
messages' contents so that it is testable without a ROS graph:

* :class:`StampPairer` pairs each prediction with the ground-truth frame of the same header
  (stamp and ``frame_id``); camera frames that never get an output are counted as dropped.
* :class:`LiveEvaluator` accumulates PQ (:class:`~panoptic_ros.evaluation.pq.PQStat` of
  :func:`~panoptic_ros.evaluation.pq.pq_results` per pair), end-to-end latency, output rate and
  instance counts; optionally writes every pair as COCO panoptic files (predictions and ground
  truth, so that ``panoptic-ros eval`` re-scores them offline to the same figures) and samples
  evenly spaced frames for a contact sheet (:func:`contact_sheet`).

Keys are :data:`FrameKey` tuples; times are seconds (``time.monotonic`` or any one clock).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import cv2
import numpy as np

from panoptic_ros.categories import LabelSet
from panoptic_ros.data.coco_panoptic import CocoPanopticWriter, write_image
from panoptic_ros.evaluation.pq import PQStat, format_results, pq_results
from panoptic_ros.result import PanopticResult
from panoptic_ros.viz import overlay

FrameKey = tuple[int, int, str]
"""A message header as a key: ``(stamp.sec, stamp.nanosec, frame_id)``."""

PRED_JSON, PRED_DIR = "predictions.json", "predictions"
GT_JSON, GT_DIR, IMAGE_DIR = "ground_truth.json", "ground_truth", "images"
SHEET_NAME = "contact_sheet.png"

T = TypeVar("T")
P = TypeVar("P")


def stamp_ns(key: FrameKey) -> int:
    """The key's stamp in nanoseconds."""
    return int(key[0]) * 1_000_000_000 + int(key[1])


def compatible_categories(model: LabelSet, truth: LabelSet) -> bool:
    """Whether every model category exists in the ground truth with the same thing/stuff kind.

    Only then does PQ against the ground truth mean something (and ``panoptic-ros eval``, which
    refuses unknown predicted categories, can reproduce it).
    """
    return all(c.id in truth and truth.is_thing(c.id) == c.is_thing for c in model)


class StampPairer(Generic[T, P]):
    """Pairs ground-truth frames with predictions carrying the same header.

    The node answers frames in the order it received them (one worker, latest frame wins), so
    once a prediction for stamp ``s`` has arrived, ground truth older than ``s`` that is still
    unpaired will never get one: it is a dropped frame and is released at once. A prediction
    whose ground truth has not arrived yet waits for it. At most ``max_pending`` items of each
    side are held (the oldest beyond are counted as unmatched), so memory stays bounded even
    when one side stops.

    Args:
        max_pending: most unpaired items held per side.
    """

    def __init__(self, max_pending: int = 32) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self._truth: OrderedDict[FrameKey, T] = OrderedDict()
        self._pred: OrderedDict[FrameKey, P] = OrderedDict()
        self.truth_without_prediction = 0
        """Ground-truth frames released without a prediction (dropped camera frames)."""
        self.prediction_without_truth = 0
        """Predictions released without ground truth (lost or foreign frames)."""

    @property
    def pending_truth(self) -> int:
        """Ground-truth frames waiting for their prediction."""
        return len(self._truth)

    @property
    def pending_predictions(self) -> int:
        """Predictions waiting for their ground truth."""
        return len(self._pred)

    def truth(self, key: FrameKey) -> T | None:
        """The pending ground truth of ``key``, if any."""
        return self._truth.get(key)

    def add_truth(self, key: FrameKey, item: T) -> tuple[T, P] | None:
        """Add a ground-truth frame; returns ``(truth, prediction)`` when it completes a pair."""
        if key in self._pred:
            return item, self._pred.pop(key)
        self._truth[key] = item
        while len(self._truth) > self.max_pending:
            self._truth.popitem(last=False)
            self.truth_without_prediction += 1
        return None

    def add_prediction(self, key: FrameKey, item: P) -> tuple[T, P] | None:
        """Add a prediction; returns ``(truth, prediction)`` when it completes a pair.

        Pending ground truth older than ``key`` is released as dropped.
        """
        now = stamp_ns(key)
        for old in [k for k in self._truth if stamp_ns(k) < now]:
            del self._truth[old]
            self.truth_without_prediction += 1
        if key in self._truth:
            return self._truth.pop(key), item
        self._pred[key] = item
        while len(self._pred) > self.max_pending:
            self._pred.popitem(last=False)
            self.prediction_without_truth += 1
        return None

    def flush(self) -> None:
        """End of stream: everything still pending is unmatched."""
        self.truth_without_prediction += len(self._truth)
        self.prediction_without_truth += len(self._pred)
        self._truth.clear()
        self._pred.clear()


# -- contact sheet ---------------------------------------------------------------------------
@dataclass
class SheetRow:
    """One contact-sheet row: the input frame, the node's overlay and the ground truth.

    Attributes:
        key: the frame's header key.
        truth: the ground truth.
        pq: the frame's own PQ (All), or ``None`` when not scored.
        image: ndarray[H, W, 3] uint8 RGB camera frame, once it arrived.
        overlay: ndarray[H, W, 3] uint8 RGB from the node's ``~/overlay``, once it arrived.
    """

    key: FrameKey
    truth: PanopticResult
    pq: float | None
    image: np.ndarray | None = None
    overlay: np.ndarray | None = None


class SheetSampler:
    """Evenly spaced frames of a stream of unknown length, in bounded memory.

    Keeps every ``stride``-th offered frame; when more than ``capacity`` are held, every other
    one is dropped and the stride doubles, so the kept frames stay evenly spread over the
    whole run. Images and overlays arrive on their own topics, after or before the frame is
    offered (a frame offered before its image gets it through :meth:`add_image`).

    Args:
        rows: rows wanted on the sheet.
        capacity: most frames held (default ``4 * rows``).
    """

    def __init__(self, rows: int, capacity: int | None = None) -> None:
        if rows < 1:
            raise ValueError(f"rows must be >= 1, got {rows}")
        self.rows = rows
        self.capacity = max(capacity or 4 * rows, rows, 2)
        self._held: list[SheetRow] = []
        self._stride = 1
        self._offered = 0
        self._early: OrderedDict[FrameKey, np.ndarray] = OrderedDict()

    def offer(self, key: FrameKey, make_row: Callable[[], SheetRow]) -> bool:
        """Offer the next frame; ``make_row`` is called only when the frame is kept."""
        keep = self._offered % self._stride == 0
        self._offered += 1
        if not keep:
            return False
        row = make_row()
        row.overlay = self._early.pop(key, row.overlay)
        self._held.append(row)
        if len(self._held) > self.capacity:
            self._held = self._held[::2]
            self._stride *= 2
        return True

    def _row(self, key: FrameKey) -> SheetRow | None:
        for row in reversed(self._held):
            if row.key == key:
                return row
        return None

    def add_image(self, key: FrameKey, image: np.ndarray) -> None:
        """Attach the camera image to a frame offered without it (if that frame is kept)."""
        row = self._row(key)
        if row is not None:
            row.image = image

    def add_overlay(self, key: FrameKey, image: np.ndarray) -> None:
        """Attach the node's overlay to its frame (held back briefly if it came first)."""
        row = self._row(key)
        if row is not None:
            row.overlay = image
            return
        self._early[key] = image  # its frame not offered yet (or not kept: falls out soon)
        while len(self._early) > 4:
            self._early.popitem(last=False)

    def pick(self) -> list[SheetRow]:
        """Up to ``rows`` complete frames (image and overlay), evenly spaced, oldest first."""
        ready = [r for r in self._held if r.overlay is not None and r.image is not None]
        if len(ready) <= self.rows:
            return ready
        index = np.linspace(0, len(ready) - 1, self.rows).round().astype(int)
        return [ready[i] for i in index]


def _caption(image: np.ndarray, text: str) -> None:
    """Write ``text`` in white on a darkened strip at the top left of ``image``, in place."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.3, image.shape[1] / 700.0)
    (tw, th), base = cv2.getTextSize(text, font, scale, 1)
    box = image[: th + base + 6, : tw + 8]
    box[:] = box // 3
    cv2.putText(image, text, (4, th + 3), font, scale, (255, 255, 255), 1, cv2.LINE_AA)


def contact_sheet(rows: Iterable[SheetRow], label_set: LabelSet, t0_ns: int = 0) -> np.ndarray:
    """Render rows of ``input | node overlay | ground truth`` panels.

    Args:
        rows: frames with their overlay (all of one size H x W).
        label_set: categories of the ground truth (its colours, :func:`~panoptic_ros.viz.overlay`
            at full opacity with segment borders).
        t0_ns: stamp shown as time 0 in the captions, nanoseconds.

    Returns:
        ndarray[len(rows) * H, 3 * W, 3] uint8 RGB.

    Raises:
        ValueError: no rows, a row without its overlay, or rows of different sizes.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("a contact sheet needs at least one row")
    for row in rows:
        if row.overlay is None or row.image is None:
            raise ValueError(f"row {row.key} has no image or no overlay")
    h, w = rows[0].image.shape[:2]
    lines = []
    for row in rows:
        if row.image.shape[:2] != (h, w) or row.overlay.shape[:2] != (h, w):
            raise ValueError(f"rows must all be {h}x{w}, got {row.image.shape[:2]}")
        panels = [row.image.copy(), row.overlay.copy(),
                  overlay(row.image, row.truth, label_set, alpha=1.0)]
        t = (stamp_ns(row.key) - t0_ns) / 1e9
        _caption(panels[0], f"input t={t:.1f}s")
        _caption(panels[1], "node ~/overlay")
        _caption(panels[2], "ground truth" + ("" if row.pq is None else f" PQ {row.pq:.2f}"))
        lines.append(np.concatenate(panels, axis=1))
    return np.concatenate(lines, axis=0)


# -- the evaluator ---------------------------------------------------------------------------
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
    """

    frames_in: int
    frames_out: int
    frames_dropped: int
    fps: float
    latency_ms_p50: float
    pq: float | None


@dataclass
class _Truth:
    result: PanopticResult
    image: np.ndarray | None = None


class LiveEvaluator:
    """PQ, latency, rate and counts of a prediction stream against its ground truth.

    Thread-safe: ROS callbacks may feed it from several threads and a status line may read
    :meth:`snapshot` meanwhile. All ``add_*`` calls are cheap except the one completing a pair
    (PQ of the frame, and file writing when ``output_dir`` is set).

    Args:
        truth_labels: categories of the ground truth (PQ is averaged over these).
        output_dir: when set, every pair is written there as COCO panoptic files
            (:data:`PRED_JSON` + :data:`PRED_DIR`/, :data:`GT_JSON` + :data:`GT_DIR`/ +
            :data:`IMAGE_DIR`/), image ids 1, 2, ... in pairing order.
        sheet_rows: frames kept for the contact sheet (0: none).
        window_s: window of the running output rate, seconds.
        max_pending: see :class:`StampPairer`.
        clock: monotonic time source, seconds.
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
        self._images: OrderedDict[FrameKey, np.ndarray] = OrderedDict()
        self._late_images: OrderedDict[FrameKey, Path | None] = OrderedDict()
        self._count_sums: dict[str, int] = {}
        self.count_messages = 0
        self.sampler = SheetSampler(sheet_rows) if sheet_rows > 0 else None
        self._gt_writer = self._pred_writer = None
        if self.output_dir is not None:
            self._gt_writer = CocoPanopticWriter(
                self.output_dir, truth_labels, json_name=GT_JSON, png_dir_name=GT_DIR,
                image_dir_name=IMAGE_DIR)
            self._pred_writer = CocoPanopticWriter(
                self.output_dir, truth_labels, json_name=PRED_JSON, png_dir_name=PRED_DIR)

    # -- inputs ----------------------------------------------------------------------------
    def set_model_labels(self, labels: LabelSet) -> None:
        """The node's categories (its latched ``~/categories``); decides whether PQ is scored."""
        with self._lock:
            self.model_labels = labels
            if self._pred_writer is not None:
                self._pred_writer.label_set = labels
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
            pair = self.pairer.add_truth(key, _Truth(truth, self._images.pop(key, None)))
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
            self._images[key] = image
            while len(self._images) > 8:
                self._images.popitem(last=False)

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
        image = truth.image if truth.image is not None else self._images.pop(key, None)
        frame_stat = pq_results(truth.result, pred) if self.scored else None
        if frame_stat is not None:
            self.stat += frame_stat
        late_path = None
        if self._gt_writer is not None:
            self._gt_writer.add(self.paired, truth.result, image, image_suffix=".png")
            self._pred_writer.add(self.paired, pred)
            late_path = self._gt_writer.image_dir / self._gt_writer.images[-1]["file_name"]
        if image is None:  # its image is still on the way (another topic)
            self._late_images[key] = late_path
            while len(self._late_images) > 16:
                self._late_images.popitem(last=False)
        if self.sampler is not None:
            def row() -> SheetRow:
                pq = None
                if frame_stat is not None:
                    pq = frame_stat.results(self.truth_labels)["All"]["pq"]
                return SheetRow(key, truth.result, pq, image)

            self.sampler.offer(key, row)

    # -- figures ---------------------------------------------------------------------------
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
            return LiveSnapshot(
                frames_in=self.frames_in,
                frames_out=self.frames_out,
                frames_dropped=self.pairer.truth_without_prediction,
                fps=fps,
                latency_ms_p50=float(np.median(recent)) * 1e3 if recent else 0.0,
                pq=None if pq is None else pq["All"]["pq"],
            )

    def close(self, sheet_t0_ns: int | None = None) -> dict[str, Any]:
        """End of the stream: release what is pending, write the files, return the summary.

        Returns:
            A JSON-ready dict: ``frames_in``, ``frames_out``, ``frames_paired``,
            ``frames_dropped`` (camera frames without output), ``predictions_without_truth``,
            ``input_rate_hz`` (from the stamps), ``output_rate_hz``, ``latency_ms`` (p50, p95,
            mean, min, max, count), ``pq`` (``pq_compute``'s dict or ``None``), ``pq_note``,
            ``instance_counts_mean`` (per thing category name), ``files``.
        """
        with self._lock:
            self.pairer.flush()
            files: dict[str, str] = {}
            if self._gt_writer is not None:
                files["ground_truth_json"] = str(self._gt_writer.close())
                files["predictions_json"] = str(self._pred_writer.close())
            sheet_rows = 0
            if self.sampler is not None and self.output_dir is not None:
                rows = self.sampler.pick()
                if rows:
                    t0 = self._first_stamp if sheet_t0_ns is None else sheet_t0_ns
                    sheet = contact_sheet(rows, self.truth_labels, t0 or 0)
                    path = self.output_dir / SHEET_NAME
                    write_image(path, sheet)
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


def latency_summary(latencies_s: Iterable[float]) -> dict[str, float | int]:
    """p50, p95, mean, min and max of latencies (seconds in), in milliseconds; count."""
    ms = np.asarray(list(latencies_s), dtype=np.float64) * 1e3
    if not ms.size:
        return {"count": 0, "p50": 0.0, "p95": 0.0, "mean": 0.0, "min": 0.0, "max": 0.0}
    p50, p95 = np.percentile(ms, [50, 95])
    return {"count": int(ms.size), "p50": float(p50), "p95": float(p95),
            "mean": float(ms.mean()), "min": float(ms.min()), "max": float(ms.max())}


def format_status(snap: LiveSnapshot) -> str:
    """One status line: frames in/out/dropped, output FPS, median latency, running PQ."""
    pq = "-" if snap.pq is None else f"{100 * snap.pq:.1f}"
    lat = f"{snap.latency_ms_p50:.0f} ms" if snap.frames_out else "-"
    return (f"in {snap.frames_in} out {snap.frames_out} dropped {snap.frames_dropped} | "
            f"{snap.fps:.1f} FPS | latency p50 {lat} | PQ {pq}")


def format_summary(summary: Mapping[str, Any]) -> str:
    """The human-readable report of a :meth:`LiveEvaluator.close` summary (plus node figures)."""
    lat = summary["latency_ms"]
    lines = [
        f"frames   in {summary['frames_in']}  out {summary['frames_out']}  "
        f"dropped {summary['frames_dropped']} (camera frames without output)",
    ]
    node = summary.get("node") or {}
    if "frames_received" in node:
        # The node may also have received frames the monitor counted before it started.
        unseen = max(0, summary["frames_in"] - int(node["frames_received"]))
        lines.append(
            f"node     received {node['frames_received']}  processed "
            f"{node.get('frames_processed', '?')}  dropped {node.get('frames_dropped', '?')} "
            f"(latest frame wins)  bad {node.get('bad_inputs', '?')}  errors "
            f"{node.get('processing_errors', '?')}; {unseen} camera frames never reached its "
            "image callback (lost in transport or replaced in its depth-1 queue)")
    lines += [
        f"rate     input {summary['input_rate_hz']:.1f} Hz  output {summary['output_rate_hz']:.2f}"
        f" FPS",
        f"latency  p50 {lat['p50']:.0f} ms  p95 {lat['p95']:.0f} ms  mean {lat['mean']:.0f} ms"
        f"  max {lat['max']:.0f} ms  (stamp -> received by the monitor, {lat['count']} frames)",
    ]
    if summary.get("pq") is not None:
        lines += [f"PQ over {summary['frames_paired']} frames:", format_results(summary["pq"])]
    else:
        lines.append(f"PQ       {summary.get('pq_note') or 'no frames paired'}")
    counts = summary.get("instance_counts_mean") or {}
    if counts:
        lines.append("instances per frame (mean): "
                     + "  ".join(f"{k} {v:.2f}" for k, v in counts.items()))
    return "\n".join(lines)


def write_summary(path: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write the summary as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1))
    return path
