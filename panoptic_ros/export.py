"""Export of the EfficientPS network to ONNX or TorchScript; the panoptic fusion stays on the host.

The exported graph is the whole network for one image, from the normalised input to the raw
outputs of both heads; what follows it (fusion, id encoding, segment table) runs in PyTorch on
the host, on the tensors the graph returns (:func:`panoptic_from_raw`)::

    inputs  images           float32 [1, 3, H, W]  RGB, (rgb - pixel_mean) / pixel_std, zero-padded
            image_size       int64   [2]           (h, w) of the image inside the padding
    outputs semantic_logits  float32 [1, C, H, W]  stuff classes first, then things
            boxes            float32 [K, 4]        (x0, y0, x1, y1) pixels of the input
            scores           float32 [K]           descending, above detection_score_threshold
            labels           int64   [K]           detection class, 1..num_things
            mask_logits      float32 [K, 28, 28]   mask logit of each detection's own class

Inside: EfficientNet backbone, two-way FPN, semantic head, RPN (anchors, top-k, NMS), RoIAlign,
box head, per-class NMS, mask head. ``H`` and ``W`` are fixed at export (multiples of 32); ``K``
varies from 0 to ``detections_per_image`` (torchvision's NMS is scripted inside the trace, so
a graph traced on an image without detections still finds them on others, and the reverse).
Names are :data:`INPUT_NAMES` and :data:`OUTPUT_NAMES`.

ONNX goes through the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``):
the ``torch.export`` one stops at torchvision's data-dependent NMS. Opsets 11 (RoIAlign and
NonMaxSuppression) to 20. TorchScript is ``torch.jit.trace`` of the same module. Both files
carry :func:`export_metadata` (label set, model config, input size), read by
:func:`read_metadata`.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from panoptic_ros.categories import LabelSet
from panoptic_ros.inference import resize_to_fit
from panoptic_ros.models.efficientps import EfficientPS, EfficientPSConfig
from panoptic_ros.models.efficientps.postprocess import postprocess
from panoptic_ros.models.preprocess import normalize_and_pad
from panoptic_ros.result import PanopticResult

FORMATS = ("onnx", "torchscript")
"""Export formats."""

INPUT_NAMES = ("images", "image_size")
OUTPUT_NAMES = ("semantic_logits", "boxes", "scores", "labels", "mask_logits")
"""Names of the graph's inputs and outputs (module docstring)."""

DEFAULT_OPSET = 17
"""ONNX opset by default: TensorRT 8.6 (JetPack 6) and later parse it."""

OPSETS = range(11, 21)
"""ONNX opsets the exporter writes: 11 brings RoIAlign/NonMaxSuppression; 20 is the TorchScript
exporter's last."""

METADATA_KEY = "panoptic_ros"
"""ONNX ``metadata_props`` key / TorchScript extra file (``.json``) of the metadata."""

METADATA_FORMAT = "panoptic_ros.export/1"


# -- the exported module -----------------------------------------------------------------------
class TraceableGroupNorm(nn.Module):
    """``nn.GroupNorm`` (4-D input) written with channel means and two small matmuls.

    The exporters write GroupNorm as ``Reshape(N, G, -1)``, which onnxruntime cannot resolve
    when ``N`` is 0 (an image without detections reaching the mask head). Per-channel means over
    ``H, W`` averaged within each group by a ``[C, G]`` matrix give the same statistics (two-pass,
    biased variance) with no reshape.
    """

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        c, g = norm.num_channels, norm.num_groups
        self.eps = float(norm.eps)
        member = torch.zeros(c, g)
        member[torch.arange(c), torch.arange(c) // (c // g)] = 1.0
        self.register_buffer("to_group", member / (c // g))  # [C, G] channel -> group mean
        self.register_buffer("to_channel", member.t().contiguous())  # [G, C]
        # Affine as [1, C, 1, 1] buffers: initialisers the exporter keeps apart (identical
        # parameters of several norms are otherwise merged, and one lost).
        one = torch.ones(c) if norm.weight is None else norm.weight.detach()
        zero = torch.zeros(c) if norm.bias is None else norm.bias.detach()
        self.register_buffer("weight", one.clone().view(1, c, 1, 1))
        self.register_buffer("bias", zero.clone().view(1, c, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        """Tensor[N, C, H, W] -> the same, normalised per group of channels."""
        mean = x.mean((2, 3)) @ self.to_group @ self.to_channel  # [N, C]
        centred = x - mean[:, :, None, None]
        var = (centred * centred).mean((2, 3)) @ self.to_group @ self.to_channel
        return centred * torch.rsqrt(var + self.eps)[:, :, None, None] * self.weight + self.bias


def _replace_group_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.GroupNorm):
            setattr(module, name, TraceableGroupNorm(child))
        else:
            _replace_group_norms(child)


class RawOutputs(nn.Module):
    """The exported module: one normalised image in, the network's raw outputs out.

    Args:
        model: the network (not modified: a float32 copy is taken, on ``device``).
        input_size: ``(H, W)`` of the graph input, multiples of ``size_divisibility``.
        traceable_norms: replace GroupNorm by :class:`TraceableGroupNorm` (ONNX).
        device: where the copy runs (and a trace is made: a TorchScript trace records it).
    """

    def __init__(
        self, model: EfficientPS, input_size: Sequence[int], *, traceable_norms: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        model = copy.deepcopy(model).float().to(device).eval()
        model = model.to(memory_format=torch.contiguous_format)
        model._compiled_dense = None  # trace the eager dense part, not a compiled copy
        if traceable_norms:
            _replace_group_norms(model)
        self.model = model
        self.input_size = check_input_size(input_size, model.config.size_divisibility)

    def forward(
        self, images: Tensor, image_size: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The outputs of :data:`OUTPUT_NAMES`.

        Args:
            images: Tensor[1, 3, H, W] float32, normalised and zero-padded.
            image_size: Tensor[2] int64, ``(h, w)`` of the image inside the padding: proposals
                and boxes are clipped to it.
        """
        semantic, detections = self.model.network(images, [(image_size[0], image_size[1])])
        det = detections[0]
        return semantic, det["boxes"], det["scores"], det["labels"], det["mask_logits"]

    def example_inputs(self) -> tuple[Tensor, Tensor]:
        """A mid-grey image filling the input: the trace needs data through every branch."""
        device = self.model.device
        return (torch.zeros(1, 3, *self.input_size, device=device),
                torch.tensor(self.input_size, device=device))


def check_input_size(size: Sequence[int], divisibility: int) -> tuple[int, int]:
    """``(H, W)`` as ints, both positive multiples of ``divisibility``.

    Raises:
        ValueError: otherwise, naming the nearest valid size.
    """
    if len(size) != 2:
        raise ValueError(f"input size must be (height, width), got {tuple(size)}")
    h, w = (int(v) for v in size)
    if h < 1 or w < 1 or h % divisibility or w % divisibility:
        up = [max(divisibility, -(-v // divisibility) * divisibility) for v in (h, w)]
        raise ValueError(
            f"input size must be multiples of {divisibility}, got {h}x{w} (try {up[0]}x{up[1]})"
        )
    return h, w


def model_input_size(model: nn.Module) -> tuple[tuple[int, int] | None, str]:
    """The fixed ``(H, W)`` an export of ``model`` takes when none is given, and its source.

    The model's own input size, from its checkpoint metadata (``model.checkpoint_meta``, as the
    Predictor reads it): ``meta["input_size"]`` when it is ``[H, W]``; else, for a model trained
    on generated scenes (the bundled demo model), the scene size its ``meta["train_config"]``
    records (``train``, else ``val``: ``height`` x ``width``, the images it learned on).

    Returns:
        ``((H, W), source)``, or ``(None, reason)`` when the model records no ``H x W`` (no
        metadata, a shorter side only, or training on COCO files of any size).
    """
    meta = getattr(model, "checkpoint_meta", None) or {}
    size = meta.get("input_size")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return (int(size[0]), int(size[1])), "the checkpoint's input_size"
    if isinstance(size, int) and not isinstance(size, bool):
        return None, (f"the checkpoint's input_size is a shorter side ({size}), not the fixed "
                      f"HxW an export needs")
    train_config = meta.get("train_config")
    if isinstance(train_config, Mapping):
        for split in ("train", "val"):
            data = train_config.get(split)
            if (isinstance(data, Mapping) and data.get("kind") == "synthetic"
                    and isinstance(data.get("height"), int)
                    and isinstance(data.get("width"), int)):
                return ((data["height"], data["width"]),
                        f"the size of the checkpoint's {split} scenes")
    return None, "the checkpoint records no HxW input size"


# -- metadata ----------------------------------------------------------------------------------
def export_metadata(model: EfficientPS, input_size: Sequence[int], fmt: str) -> dict[str, Any]:
    """What a host needs to run an exported graph: sizes, normalisation, categories, fusion.

    Plain types only (JSON).
    """
    return {
        "format": METADATA_FORMAT,
        "export_format": fmt,
        "backend": model.backend_name,
        "input_names": list(INPUT_NAMES),
        "output_names": list(OUTPUT_NAMES),
        "input_size": [int(v) for v in input_size],
        "config": model.config.to_dict(),
        "label_set": model.label_set.to_dict(),
        "torch": str(torch.__version__),
    }


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The :func:`export_metadata` of an exported ``.onnx`` or TorchScript file.

    Raises:
        ValueError: the file is neither, or carries no panoptic_ros metadata.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):  # TorchScript archive: <name>/extra/panoptic_ros.json
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist()
                     if n.endswith(f"/extra/{METADATA_KEY}.json")]
            if names:
                return json.loads(archive.read(names[0]))
        raise ValueError(f"{path} is a TorchScript archive without panoptic_ros metadata")
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf decode errors have several types
        raise ValueError(f"{path} is neither an ONNX model nor a TorchScript archive: "
                         f"{err}") from None
    props = {p.key: p.value for p in graph.metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{path} is an ONNX model without panoptic_ros metadata")
    return json.loads(props[METADATA_KEY])


# -- export ------------------------------------------------------------------------------------
def export_onnx(
    model: EfficientPS, path: str | Path, input_size: Sequence[int], opset: int = DEFAULT_OPSET
) -> Path:
    """Write the network as an ONNX graph (module docstring) with its metadata.

    Raises:
        ValueError: an opset outside :data:`OPSETS` or an invalid input size.
        ImportError: the ``onnx`` package is missing.
    """
    import onnx

    if opset not in OPSETS:
        raise ValueError(f"opset must lie in {OPSETS.start}..{OPSETS.stop - 1}, got {opset}")
    module = RawOutputs(model, input_size, traceable_norms=True)
    dynamic = {name: {0: "detections"} for name in OUTPUT_NAMES[1:]}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on torchvision's internals
        torch.onnx.export(
            module, module.example_inputs(), buffer, dynamo=False, opset_version=opset,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic,
            do_constant_folding=True,
        )
    graph = onnx.load_from_string(buffer.getvalue())
    entry = graph.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(export_metadata(model, module.input_size, "onnx"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(path))
    return path


def fold_constants(path: str | Path, output: str | Path | None = None) -> Path:
    """Fold an exported ONNX graph's constant subgraphs (onnxruntime's basic optimisations).

    At a fixed input size every shape computation folds away: the graph shrinks by about
    half and the RPN's ``TopK`` counts become initialisers, as TensorRT's parser requires.
    The result holds standard ONNX operators only (checked) and keeps the metadata.

    Args:
        path: an ONNX file written by :func:`export_onnx`.
        output: where to write the folded graph (default: over ``path``).

    Raises:
        ImportError: onnxruntime is missing.
        ValueError: the optimiser produced an operator outside the standard ONNX domain.
    """
    import tempfile

    import onnx
    import onnxruntime as ort

    path = Path(path)
    output = path if output is None else Path(output)
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(tmp) / "folded.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath)
    foreign = sorted({f"{n.domain}.{n.op_type}" for n in graph.graph.node if n.domain})
    if foreign:
        raise ValueError(f"constant folding produced non-standard operators {foreign}")
    standard = [o for o in graph.opset_import if o.domain in ("", "ai.onnx")]
    del graph.opset_import[:]
    graph.opset_import.extend(standard)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(output))
    return output


def export_torchscript(
    model: EfficientPS, path: str | Path, input_size: Sequence[int],
    device: str | torch.device = "cpu",
) -> Path:
    """Write the network as a traced TorchScript module (same outputs as the ONNX graph).

    A trace records the device it ran on: torchvision's anchor generator, RPN and RoI code
    create tensors with ``device=`` their input's device, and the trace keeps those as
    constants, so a CPU trace moved with ``.to("cuda")`` mixes devices. Trace on the device
    it will run on (``device="cuda"``, ``panoptic-ros export --device cuda``); the metadata
    records it and :func:`load_torchscript` refuses another device with that advice.
    """
    module = RawOutputs(model, input_size, device=device)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = export_metadata(model, module.input_size, "torchscript")
    meta["device"] = torch.device(device).type
    meta = json.dumps(meta)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes; torch.jit itself is deprecated
        traced = torch.jit.trace(module, module.example_inputs(), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={f"{METADATA_KEY}.json": meta})
    return path


def load_torchscript(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a TorchScript export onto ``device``, which must be the kind it was traced on.

    Raises:
        ValueError: the file was traced on another kind of device (the message says how to
            re-export it).
    """
    device = torch.device(device)
    traced_on = read_metadata(path).get("device", "cpu")
    if traced_on != device.type:
        raise ValueError(
            f"{path} was traced on {traced_on}; a trace keeps that device in its constants, "
            f"so it cannot run on {device.type}: export it again with --device {device.type}")
    return torch.jit.load(str(path), map_location=device)


def export_model(
    model: EfficientPS,
    path: str | Path,
    fmt: str,
    input_size: Sequence[int],
    opset: int = DEFAULT_OPSET,
    fold: bool = False,
    device: str | torch.device = "cpu",
) -> Path:
    """Write ``model`` in format ``fmt`` (one of :data:`FORMATS`).

    ``onnx``: :func:`export_onnx` (device-independent), then :func:`fold_constants` when
    ``fold``; ``torchscript``: :func:`export_torchscript` traced on ``device``.
    """
    if fmt == "onnx":
        path = export_onnx(model, path, input_size, opset)
        return fold_constants(path) if fold else path
    if fmt == "torchscript":
        return export_torchscript(model, path, input_size, device)
    raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")


# -- host side ---------------------------------------------------------------------------------
def prepare_image(
    image: np.ndarray, metadata: Mapping[str, Any]
) -> tuple[Tensor, tuple[int, int]]:
    """The graph's ``images`` input for one RGB frame, prepared as the Predictor does.

    Args:
        image: ndarray[H, W, 3] uint8 RGB.
        metadata: :func:`read_metadata` of the exported file.

    Returns:
        Tensor[1, 3, H_e, W_e] float32 (the export size) and the ``(h, w)`` the frame was
        fitted to (its valid region; the rest is padding).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} "
                         f"{image.shape}")
    config = EfficientPSConfig.from_dict(metadata["config"])
    height, width = metadata["input_size"]
    x = resize_to_fit(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
                      (height, width))
    batch, sizes = normalize_and_pad(
        [x], config.pixel_mean, config.pixel_std, config.size_divisibility
    )
    batch = F.pad(batch, (0, width - batch.shape[3], 0, height - batch.shape[2]))
    return batch, sizes[0]


def panoptic_from_raw(
    outputs: Sequence[Tensor | np.ndarray],
    metadata: Mapping[str, Any],
    valid_size: Sequence[int],
    output_size: Sequence[int] | None = None,
) -> PanopticResult:
    """Host-side end of an exported graph: fusion, ids, segment table.

    Args:
        outputs: the graph's outputs in :data:`OUTPUT_NAMES` order (numpy or torch; a torch
            device is kept).
        metadata: :func:`read_metadata` of the exported file.
        valid_size: ``(h, w)`` of the image inside the padded input (:func:`prepare_image`).
        output_size: ``(H, W)`` of the result (default: ``valid_size``), e.g. the camera's.

    Returns:
        the :class:`~panoptic_ros.result.PanopticResult` the PyTorch model gives for the
        same input.
    """
    if len(outputs) != len(OUTPUT_NAMES):
        raise ValueError(f"expected the {len(OUTPUT_NAMES)} outputs {OUTPUT_NAMES}, got "
                         f"{len(outputs)}")
    semantic, boxes, scores, labels, masks = (torch.as_tensor(o) for o in outputs)
    config = EfficientPSConfig.from_dict(metadata["config"])
    label_set = LabelSet.from_dict(metadata["label_set"])
    detection = {"boxes": boxes, "scores": scores, "labels": labels, "mask_logits": masks}
    h, w = (int(v) for v in valid_size)
    return postprocess(
        semantic, [detection], [(h, w)], None if output_size is None else [output_size],
        label_set=label_set, label_divisor=config.label_divisor, fusion=config.fusion,
    )[0]
