"""Video panoptic metrics over sequences with persistent thing ids: STQ, VPQ, IDF1, HOTA.

One :class:`~panoptic_ros.evaluation.sequence.SequenceCounts` per sequence (pixel counts of every
ground-truth / predicted track pair, per frame) feeds every metric:

* STQ (:mod:`~panoptic_ros.evaluation.stq`): ``sqrt(AQ * SQ)``, STEP;
* VPQ (:mod:`~panoptic_ros.evaluation.vpq`): PQ on tubes of ``k`` in 1, 5, 10, 15 frames,
  Cityscapes-VPS;
* IDF1, ID switches, MOTA (:mod:`~panoptic_ros.evaluation.mot`) and HOTA
  (:mod:`~panoptic_ros.evaluation.hota`) on thing masks matched per frame by mask IoU.

:func:`video_sequence` scores one sequence into a mergeable :class:`VideoStat`
(``stat += video_sequence(...)``); :func:`video_compute_files` reads a COCO panoptic video data
set (``images[]`` with ``video_id`` and ``frame_index``) and its predictions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from panoptic_ros.data.id_runs import read_panoptic_runs
from panoptic_ros.errors import UserError
from panoptic_ros.evaluation.hota import HOTAStat, hota_sequence
from panoptic_ros.evaluation.mot import MOTStat, frame_ious, mot_sequence
from panoptic_ros.evaluation.pq import PQError, PQStat
from panoptic_ros.evaluation.sequence import Categories, Frame, SequenceCounts
from panoptic_ros.evaluation.stq import STQStat, stq_sequence
from panoptic_ros.evaluation.vpq import K_VALUES, vpq_results, vpq_sequence


@dataclass
class VideoStat:
    """Mergeable counts of every video metric (``stat += other``)."""

    stq: STQStat = field(default_factory=STQStat)
    vpq: dict[int, PQStat] = field(default_factory=dict)
    mot: MOTStat = field(default_factory=MOTStat)
    hota: HOTAStat = field(default_factory=HOTAStat)
    sequences: int = 0
    frames: int = 0

    def __iadd__(self, other: VideoStat) -> VideoStat:
        self.stq += other.stq
        for k, stat in other.vpq.items():
            self.vpq.setdefault(k, PQStat())
            self.vpq[k] += stat
        self.mot += other.mot
        self.hota += other.hota
        self.sequences += other.sequences
        self.frames += other.frames
        return self

    def results(self, categories: Categories) -> dict:
        """``{"stq", "vpq", "tracking", "hota", "sequences", "frames"}``, fractions.

        ``stq``: :meth:`STQStat.results`; ``vpq``: :func:`vpq_results`; ``tracking``:
        :meth:`MOTStat.results`; ``hota``: :meth:`HOTAStat.results`.
        """
        return {
            "sequences": self.sequences,
            "frames": self.frames,
            "stq": self.stq.results(),
            "vpq": vpq_results(self.vpq, categories),
            "tracking": self.mot.results(),
            "hota": self.hota.results(),
        }


def video_sequence(counts: SequenceCounts, ks: Iterable[int] = K_VALUES) -> VideoStat:
    """Every video metric's counts of one sequence."""
    ious = frame_ious(counts)
    return VideoStat(
        stq=stq_sequence(counts),
        vpq={int(k): vpq_sequence(counts, int(k)) for k in ks},
        mot=mot_sequence(counts, ious),
        hota=hota_sequence(counts, ious),
        sequences=1,
        frames=len(counts),
    )


def evaluate_video(
    sequences: Iterable[Iterable[tuple[Frame, Frame]]],
    categories: Categories,
    ks: Iterable[int] = K_VALUES,
) -> dict:
    """Every video metric over several sequences of ``(ground truth, prediction)`` frames.

    Returns:
        :meth:`VideoStat.results`.
    """
    ks = tuple(ks)
    stat = VideoStat()
    for frames in sequences:
        stat += video_sequence(SequenceCounts.of(frames, categories), ks)
    return stat.results(categories)


# -- files ----------------------------------------------------------------------------------
def is_video(gt: Mapping) -> bool:
    """Whether a COCO panoptic JSON dict is a video data set (its images carry ``video_id``)."""
    images = gt.get("images") or []
    return bool(images) and all(isinstance(i, Mapping) and "video_id" in i for i in images)


def video_annotations(gt: Mapping) -> dict[str, list[dict]]:
    """Ground-truth annotations grouped by video, each list in ``frame_index`` order.

    Raises:
        UserError: an image without ``video_id``/``frame_index``, or without annotation.
    """
    try:
        anns = {a["image_id"]: a for a in gt["annotations"]}
        videos: dict[str, list[tuple[int, dict]]] = {}
        for image in gt["images"]:
            ann = anns.get(image["id"])
            if ann is None:
                raise UserError(f"no ground-truth annotation for image {image['id']!r}")
            key = (int(image["frame_index"]), ann)
            videos.setdefault(str(image["video_id"]), []).append(key)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"malformed video COCO panoptic JSON (missing {err})") from None
    return {v: [a for _, a in sorted(frames, key=lambda f: f[0])]
            for v, frames in sorted(videos.items())}


def video_compute_files(
    gt_json: str | Path,
    gt_dir: str | Path,
    pred_json: str | Path,
    pred_dir: str | Path,
    workers: int = 1,
    ks: Iterable[int] = K_VALUES,
) -> dict:
    """Evaluate a COCO panoptic video prediction set against video ground truth.

    A prediction annotation belongs to the ground-truth annotation with the same ``file_name``
    (``<video>/<frame:06d>.png``). Segment ids are read from
    the PNGs and categories from ``segments_info``: predicted thing ids that persist across
    frames are tracks.

    Args:
        gt_json, pred_json: COCO panoptic JSON files.
        gt_dir, pred_dir: their PNG folders.
        workers: threads decoding PNGs.
        ks: VPQ window lengths.

    Returns:
        :meth:`VideoStat.results`.

    Raises:
        UserError: missing files, a frame without prediction, or inconsistent PNG and JSON.
    """
    from panoptic_ros.data.coco_panoptic import load_json

    gt = load_json(gt_json, "ground-truth JSON")
    pred = load_json(pred_json, "prediction JSON")
    try:
        categories = {int(c["id"]): c for c in gt["categories"]}
        pred_anns = list(pred["annotations"])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"malformed COCO panoptic JSON (missing {err})") from None
    by_name = {a.get("file_name"): a for a in pred_anns}
    videos = video_annotations(gt)

    def frame_pair(gt_ann: dict) -> tuple[Frame, Frame]:
        pred_ann = by_name.get(gt_ann.get("file_name"))
        if pred_ann is None:
            raise UserError(f"no prediction for the frame {gt_ann.get('file_name')!r}")
        return (Frame(read_panoptic_runs(Path(gt_dir) / gt_ann["file_name"]),
                      gt_ann["segments_info"]),
                Frame(read_panoptic_runs(Path(pred_dir) / pred_ann["file_name"]),
                      pred_ann["segments_info"]))

    ks = tuple(ks)
    stat = VideoStat()
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for name, anns in videos.items():
            try:
                counts = SequenceCounts.of(pool.map(frame_pair, anns), categories)
            except PQError as err:
                raise UserError(f"video {name!r}: {err}") from None
            except KeyError as err:
                raise UserError(f"video {name!r}: malformed annotation (missing {err})") from None
            stat += video_sequence(counts, ks)
    return stat.results(categories)


def format_video_results(results: Mapping) -> str:
    """A short text table of :meth:`VideoStat.results` (scores in percent)."""
    stq, vpq, mot, hota = (results[k] for k in ("stq", "vpq", "tracking", "hota"))
    ks = sorted(vpq["k"])
    lines = [
        f"Video: {results['sequences']} sequences, {results['frames']} frames, "
        f"{stq['tracks']} ground-truth thing tracks",
        f"STQ {100 * stq['stq']:5.1f}  (AQ {100 * stq['aq']:5.1f}, SQ {100 * stq['sq']:5.1f})",
        f"{'VPQ':10s}| " + "  ".join(f"{'k=' + str(k):>5s}" for k in ks) + f"  {'mean':>5s}",
        "-" * (14 + 7 * (len(ks) + 1)),
    ]
    for name in ("All", "Things", "Stuff"):
        cells = "  ".join(f"{100 * vpq['k'][k][name]['pq']:5.1f}" if vpq["k"][k][name]["n"]
                          else f"{'-':>5s}" for k in ks)  # "-": no window that long
        lines.append(f"{name:10s}| {cells}  {100 * vpq[name]['vpq']:5.1f}")
    lines += [
        f"IDF1 {100 * mot['idf1']:5.1f}  ID switches {mot['id_switches']} "
        f"({mot['id_switches_per_100_tracks']:.1f} per 100 GT tracks)  "
        f"MOTA {100 * mot['mota']:5.1f}",
        f"HOTA {100 * hota['hota']:5.1f}  (DetA {100 * hota['deta']:5.1f}, "
        f"AssA {100 * hota['assa']:5.1f}, LocA {100 * hota['loca']:5.1f})",
    ]
    return "\n".join(lines)
