"""Checkpoints: weights + label set + model config (+ metadata) in one ``torch.save`` file.

Layout (plain types and tensors only, so ``torch.load(weights_only=True)`` reads it)::

    {"format": "panoptic_ros", "version": 1, "backend": "efficientps",
     "config": {...}, "label_set": {...}, "state_dict": {...}, "meta": {...}}

Writers may add further keys (the trainer adds ``train_state``).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from panoptic_ros import __version__
from panoptic_ros.categories import CategoryError, LabelSet
from panoptic_ros.errors import ModelLoadError

CHECKPOINT_FORMAT = "panoptic_ros"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("backend", "config", "label_set", "state_dict")


def checkpoint_dict(model: nn.Module, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint payload of a model (weights on the CPU).

    Args:
        model: a backend with ``backend_name``, ``config`` (with ``to_dict``) and ``label_set``.
        meta: plain-type metadata (step, dataset, input size, ...).
    """
    for attr in ("backend_name", "config", "label_set"):
        if not hasattr(model, attr):
            raise ValueError(f"model {type(model).__name__} has no {attr!r}; cannot checkpoint")
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "backend": model.backend_name,
        "config": model.config.to_dict(),
        "label_set": model.label_set.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": {"panoptic_ros": __version__, "torch": str(torch.__version__), **dict(meta or {})},
    }


def save_checkpoint(
    path: str | Path, model: nn.Module, meta: Mapping[str, Any] | None = None
) -> Path:
    """Write :func:`checkpoint_dict` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint_dict(model, meta), tmp)
    os.replace(tmp, path)
    return path


def refused_pickle_reason(err: pickle.UnpicklingError) -> str:
    """The one-line reason inside torch's long ``weights_only`` refusal message.

    torch's message advises re-running with ``weights_only=False``, which would execute
    whatever the file contains; only its reason (the disallowed global or opcode) is kept.
    """
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    text = " ".join(text.split())
    text = re.split(r"\.\s| Check the documentation", text, maxsplit=1)[0].rstrip(".")
    return text[:200] or type(err).__name__


def unsafe_file_message(err: pickle.UnpicklingError) -> str:
    """Why a pickle-based weights file was refused, and what to do instead."""
    return (
        "it holds Python objects other than tensors and plain data, or is corrupt "
        f"({refused_pickle_reason(err)}). Nothing in it was run: "
        "weights are read with torch.load(weights_only=True), never by running code from the "
        "file. Re-save the weights on a trusted machine (panoptic_ros checkpoints: "
        "save_checkpoint; Hugging Face models: save_pretrained, which writes safetensors)."
    )


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint file with ``torch.load(weights_only=True)`` onto the CPU.

    Raises:
        ModelLoadError: missing, unreadable, not a panoptic_ros checkpoint, or incomplete.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = unsafe_file_message(err)
        raise ModelLoadError(f"cannot read checkpoint {path}: {reason}") from None
    except Exception as err:  # corrupt files raise many types (pickle, zip, runtime)
        raise ModelLoadError(f"cannot read checkpoint {path}: {err}") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ModelLoadError(f"{path} is not a panoptic_ros checkpoint")
    if int(data.get("version", 0)) > CHECKPOINT_VERSION:
        raise ModelLoadError(
            f"{path} has checkpoint version {data.get('version')}; this panoptic_ros reads up "
            f"to {CHECKPOINT_VERSION}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ModelLoadError(f"checkpoint {path} lacks {missing}")
    return data


def model_from_checkpoint(data: Mapping[str, Any], source: str = "checkpoint") -> nn.Module:
    """Build the backend a checkpoint describes and load its weights (strictly).

    Raises:
        ModelLoadError: unknown backend, invalid config or label set, weights that do not fit.
    """
    from panoptic_ros.models.registry import build_model

    try:
        label_set = LabelSet.from_dict(data["label_set"])
    except (CategoryError, KeyError, TypeError) as err:
        raise ModelLoadError(f"{source}: invalid label set: {err}") from None
    name = data["backend"]
    try:
        if name == "efficientps":
            from panoptic_ros.models.efficientps import EfficientPS, EfficientPSConfig

            config = EfficientPSConfig.from_dict(data["config"])
            model = EfficientPS(config, label_set, load_backbone_weights=False)
        else:
            model = build_model(name, data["config"], label_set)
    except (TypeError, ValueError) as err:
        raise ModelLoadError(f"{source}: cannot build backend {name!r}: {err}") from None
    try:
        model.load_state_dict(data["state_dict"], strict=True)
    except RuntimeError as err:
        raise ModelLoadError(f"{source}: weights do not fit the model: {str(err)[:600]}") from None
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The model stored in a checkpoint, on ``device``, in eval mode.

    Raises:
        ModelLoadError: see :func:`load_checkpoint_file` and :func:`model_from_checkpoint`.
    """
    data = load_checkpoint_file(path)
    model = model_from_checkpoint(data, str(path))
    model.checkpoint_meta = dict(data.get("meta") or {})
    return model.to(device).eval()


def read_label_set(weights: str | Path) -> LabelSet:
    """The category table stored in a checkpoint (``"demo"``: the bundled model's).

    Reads the file as :func:`load_checkpoint_file` does (``weights_only``), builds no model.

    Raises:
        ModelLoadError: as :func:`load_checkpoint_file`.
    """
    from panoptic_ros.models import DEMO_WEIGHTS

    path = DEMO_WEIGHTS if str(weights) == "demo" else Path(weights)
    return LabelSet.from_dict(load_checkpoint_file(path)["label_set"])
