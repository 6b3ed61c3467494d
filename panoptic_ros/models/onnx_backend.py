"""Backend ``onnx``: an exported EfficientPS graph run by ONNX Runtime, fused on the host.

The file is what ``panoptic-ros export --format onnx`` writes (:mod:`panoptic_ros.export`): the
network up to its raw outputs at a fixed input size, with the metadata that says everything else
(label set, input size, normalisation, label divisor, fusion settings). A frame's path::

    Predictor: upload, fit into the graph's H x W, normalise, pad   (as for every backend)
    -> OnnxBackend.predict: pad to exactly H x W, session.run per image (ONNX Runtime)
    -> efficientps.postprocess.postprocess: the same fusion as the PyTorch model, on the host
    -> PanopticResult at the camera's size

``onnxruntime`` is an optional dependency (``pip install 'panoptic_ros[onnx]'``), imported when
a model is loaded. Execution providers are a setting (:data:`PROVIDER_ALIASES`): CPU by default;
CUDA or TensorRT when this onnxruntime build has them, else CPU with one warning. Intra-op
threads follow torch's thread count unless set, so the node's ``cpu_threads`` applies.

Live settings are EfficientPS's fusion settings (shared code:
:class:`~panoptic_ros.models.efficientps.config.FusionSettings`), so the node's parameters carry
over. The graph's own detection score threshold is fixed at export: a fusion ``score_threshold``
below it keeps no more detections than the graph returns (as in the PyTorch model, whose box
head applies the same threshold).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panoptic_ros.categories import LabelSet
from panoptic_ros.config_dicts import refuse_unknown
from panoptic_ros.errors import ModelLoadError
from panoptic_ros.export import INPUT_NAMES, METADATA_FORMAT, METADATA_KEY, OUTPUT_NAMES
from panoptic_ros.models.efficientps.config import EfficientPSConfig, FusionSettings
from panoptic_ros.models.efficientps.postprocess import postprocess
from panoptic_ros.models.preprocess import check_batch
from panoptic_ros.result import PanopticResult

_log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'panoptic_ros[onnx]' (onnxruntime)"

CPU = "CPUExecutionProvider"
PROVIDER_ALIASES: dict[str, str] = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
"""Short provider names accepted besides ONNX Runtime's own (``CUDAExecutionProvider``...)."""

DEFAULT_PROVIDERS = ("cpu",)

OPTIONS = ("weights", "providers", "intra_op_threads")
"""Keys of the builder's spec (:func:`build_onnx`)."""


def provider_names(requested: str | Sequence[str]) -> list[str]:
    """ONNX Runtime names of ``requested`` (aliases or full names, list or comma-separated).

    Raises:
        ValueError: an empty list or a name that is neither an alias nor ``...ExecutionProvider``.
    """
    items = requested.split(",") if isinstance(requested, str) else list(requested)
    names = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        name = PROVIDER_ALIASES.get(item.lower(), item)
        if not name.endswith("ExecutionProvider"):
            raise ValueError(f"unknown ONNX Runtime execution provider {item!r}; use "
                             f"{sorted(PROVIDER_ALIASES)} or an ...ExecutionProvider name")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("give at least one execution provider (e.g. cpu)")
    return names


def choose_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """The providers to ask ONNX Runtime for: ``requested`` that are ``available``, then CPU.

    Logs one warning naming what is missing and what runs instead.
    """
    chosen = [p for p in requested if p in available]
    missing = [p for p in requested if p not in available]
    if CPU not in chosen:
        chosen.append(CPU)
    if missing:
        _log.warning("ONNX Runtime has no %s here (available: %s); running on %s",
                     ", ".join(missing), ", ".join(available), ", ".join(chosen))
    return chosen


def check_metadata(metadata: Any, source: str) -> dict[str, Any]:
    """The metadata of an exported file, checked for what the backend needs.

    Raises:
        ModelLoadError: not a panoptic_ros ONNX export of EfficientPS in a format this
            version reads; the message says which part is wrong.
    """
    if not isinstance(metadata, Mapping):
        raise ModelLoadError(f"{source}: panoptic_ros metadata is not a JSON object")
    fmt = metadata.get("format")
    if fmt != METADATA_FORMAT:
        raise ModelLoadError(f"{source}: metadata format {fmt!r}, this version reads "
                             f"{METADATA_FORMAT!r}; export it again with this version")
    if metadata.get("export_format") != "onnx" or metadata.get("backend") != "efficientps":
        raise ModelLoadError(f"{source}: an {metadata.get('export_format')!r} export of "
                             f"{metadata.get('backend')!r}; backend onnx runs ONNX exports "
                             "of efficientps")
    missing = [k for k in ("input_size", "config", "label_set") if k not in metadata]
    if missing:
        raise ModelLoadError(f"{source}: metadata lacks {missing}")
    if (list(metadata.get("input_names", INPUT_NAMES)) != list(INPUT_NAMES)
            or list(metadata.get("output_names", OUTPUT_NAMES)) != list(OUTPUT_NAMES)):
        raise ModelLoadError(f"{source}: graph inputs/outputs differ from {INPUT_NAMES} -> "
                             f"{OUTPUT_NAMES}")
    return dict(metadata)


class OnnxBackend(FusionSettings, nn.Module):
    """An exported EfficientPS graph in an ONNX Runtime session, with host-side fusion.

    Args:
        session: an ``onnxruntime.InferenceSession`` of the file.
        metadata: its :func:`~panoptic_ros.export.export_metadata` (checked).
        source: where it came from (for messages).

    Attributes:
        label_set: the categories (from the metadata).
        config: the exported model's :class:`EfficientPSConfig`.
        fusion_config: the current fusion settings (live).
        input_size: ``(H, W)`` of the graph input.
    """

    backend_name = "onnx"

    def __init__(self, session: Any, metadata: Mapping[str, Any], source: str = "") -> None:
        super().__init__()
        metadata = check_metadata(metadata, source or "ONNX model")
        try:
            self.config = EfficientPSConfig.from_dict(metadata["config"])
            self.label_set = LabelSet.from_dict(metadata["label_set"])
            height, width = (int(v) for v in metadata["input_size"])
        except (TypeError, ValueError, KeyError) as err:
            raise ModelLoadError(f"{source}: unreadable metadata: {err}") from None
        names = [i.name for i in session.get_inputs()]
        if names != list(INPUT_NAMES):
            raise ModelLoadError(f"{source}: graph inputs {names}, expected {list(INPUT_NAMES)}")
        self.session = session
        self.source = source
        self.input_size = (height, width)
        self.fusion_config = self.config.fusion
        # A plain attribute, not a buffer: ``.to(device)`` leaves it (and the fusion) on the
        # host, where ONNX Runtime returns its outputs.
        self.category_ids = torch.as_tensor(self.label_set.ids, dtype=torch.int64)

    # -- backend interface (registry.py; live settings from FusionSettings) --------------------
    @property
    def device(self) -> torch.device:
        """Where the fusion runs: the host, where ONNX Runtime returns its outputs."""
        return torch.device("cpu")

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on, in priority order."""
        return list(self.session.get_providers())

    @property
    def checkpoint_meta(self) -> dict[str, Any]:
        """``input_size``: the graph's fixed ``[H, W]``; the Predictor fits frames into it."""
        return {"input_size": list(self.input_size)}

    def preprocess_spec(self) -> dict[str, Any]:
        """Input normalisation the Predictor applies (the exported model's own)."""
        return {
            "pixel_mean": tuple(self.config.pixel_mean),
            "pixel_std": tuple(self.config.pixel_std),
            "size_divisibility": self.config.size_divisibility,
            "max_input_pixels": self.input_size[0] * self.input_size[1],
        }

    def run_graph(self, image: np.ndarray, valid_size: tuple[int, int]) -> list[np.ndarray]:
        """The graph's raw outputs (:data:`~panoptic_ros.export.OUTPUT_NAMES`) for one image.

        Args:
            image: ndarray[1, 3, H, W] float32, normalised, zero-padded to the graph's size.
            valid_size: ``(h, w)`` of the image inside the padding.
        """
        return self.session.run(list(OUTPUT_NAMES), {
            INPUT_NAMES[0]: image, INPUT_NAMES[1]: np.asarray(valid_size, dtype=np.int64)})

    @torch.inference_mode()
    def predict(
        self,
        images: Tensor,
        image_sizes: Sequence[Sequence[int]],
        output_sizes: Sequence[Sequence[int]] | None = None,
    ) -> list[PanopticResult]:
        """Panoptic segmentation of a normalised, padded batch, one graph run per image.

        Args:
            images: Tensor[B, 3, H_p, W_p] float (any device), normalised and padded at the
                bottom and right; ``H_p <= H`` and ``W_p <= W`` of the graph.
            image_sizes: ``(h, w)`` per image, its valid region.
            output_sizes: ``(H, W)`` per image of the id maps (default: image_sizes).

        Returns:
            one :class:`PanopticResult` per image at its output size.

        Raises:
            ValueError: a batch larger than the graph's input (an ``input_size`` set larger
                than the export's).
        """
        sizes = check_batch(images, image_sizes, output_sizes)
        outs = sizes if output_sizes is None else [tuple(s) for s in output_sizes]
        height, width = self.input_size
        pad_h, pad_w = int(images.shape[2]), int(images.shape[3])
        if pad_h > height or pad_w > width:
            raise ValueError(f"the ONNX graph takes at most {height}x{width}, got a "
                             f"{pad_h}x{pad_w} input; leave input_size unset (the graph's "
                             "own) or export again at that size")
        batch = F.pad(images.float(), (0, width - pad_w, 0, height - pad_h))
        batch = np.ascontiguousarray(batch.cpu().numpy())
        results = []
        for i, (size, out) in enumerate(zip(sizes, outs, strict=True)):
            raw = [torch.from_numpy(o) for o in self.run_graph(batch[i:i + 1], size)]
            semantic, boxes, scores, labels, masks = raw
            detection = {"boxes": boxes, "scores": scores, "labels": labels,
                         "mask_logits": masks}
            results += postprocess(
                semantic, [detection], [size], [out], label_set=self.label_set,
                label_divisor=self.label_divisor, fusion=self.fusion_config,
                category_ids=self.category_ids,
            )
        return results


def load_session(path: Path, providers: Sequence[str], intra_op_threads: int) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``path`` on ``providers`` (CPU fallback).

    Raises:
        ModelLoadError: onnxruntime is missing, or the file is not an ONNX model it can load.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelLoadError(f"backend onnx needs onnxruntime: {INSTALL_HINT}") from None
    chosen = choose_providers(providers, ort.get_available_providers())
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(intra_op_threads) or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no per-node placement notes
    try:
        session = ort.InferenceSession(str(path), options, providers=chosen)
    except Exception as err:  # onnxruntime raises its own (InvalidProtobuf, Fail, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"{path} is not an ONNX model onnxruntime can load: "
                             f"{first}") from None
    running = session.get_providers()
    lost = [p for p in chosen if p != CPU and p not in running]
    if lost:  # listed as available but failed to start (missing CUDA/TensorRT libraries)
        _log.warning("ONNX Runtime could not start %s (see its log); running on %s",
                     ", ".join(lost), ", ".join(running))
    return session


def build_onnx(config: Any, label_set: Any = None) -> OnnxBackend:
    """Registry builder: ``{"weights": "model.onnx", "providers": [...], "intra_op_threads": n}``.

    Args:
        config: mapping with ``weights`` (the exported ``.onnx`` file, required), ``providers``
            (names or :data:`PROVIDER_ALIASES`, in priority order; default CPU) and
            ``intra_op_threads`` (0: torch's current thread count).
        label_set: must be ``None``: the categories come from the file.

    Raises:
        ModelLoadError: missing or unreadable file, missing metadata, no onnxruntime.
        ValueError: unknown options or invalid values.
    """
    if label_set is not None:
        raise ValueError("onnx takes its categories from the exported file's metadata")
    data = dict(config or {})
    data.pop("backend", None)
    refuse_unknown(data, OPTIONS, "onnx option(s)")
    weights = data.get("weights")
    if not weights:
        raise ModelLoadError("backend onnx needs weights: an .onnx file written by "
                             "'panoptic-ros export --format onnx'")
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"ONNX model not found: {path}")
    providers = provider_names(data.get("providers") or DEFAULT_PROVIDERS)
    threads = data.get("intra_op_threads", 0)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise ValueError(f"intra_op_threads must be an int >= 0, got {threads!r}")
    session = load_session(path, providers, threads)
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ModelLoadError(f"{path} is an ONNX model without panoptic_ros metadata; export "
                             "it with 'panoptic-ros export --format onnx'")
    try:
        metadata = json.loads(props[METADATA_KEY])
    except ValueError as err:
        raise ModelLoadError(f"{path}: panoptic_ros metadata is not JSON: {err}") from None
    return OnnxBackend(session, metadata, source=str(path))
