"""Training configuration: frozen dataclasses loaded from one YAML file.

A file (``config/train_*.yaml``) looks like::

    model: {variant: narrow}          # EfficientPSConfig fields (see models/efficientps)
    label_set: synthetic
    train: {kind: synthetic, length: 4000, seed: 1000, height: 256, width: 320}
    val: {kind: synthetic, length: 50, seed: 7, height: 256, width: 320}
    augment: {scale: [0.75, 1.5], flip: true}
    optim: {optimizer: adamw, lr: 0.001, warmup_steps: 200, schedule: cosine}
    batch_size: 4
    max_steps: 20000

Every default is written once, here; unknown keys are refused with their names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from panoptic_ros.config_dicts import dataclass_kwargs, plain_types
from panoptic_ros.devices import normalize_device_name
from panoptic_ros.errors import UserError

DATA_KINDS = ("synthetic", "coco")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "poly", "step", "constant")


@dataclass(frozen=True)
class DataConfig:
    """Where training or validation images come from.

    Attributes:
        kind: ``synthetic`` (scenes generated on the fly) or ``coco`` (COCO panoptic files).
        json: ``coco``: the annotations JSON.
        png_dir: ``coco``: the PNG folder (default: found as COCO does).
        image_dir: ``coco``: the image folder (default: ``images/`` beside the JSON).
        length: ``synthetic``: scenes per epoch; ``coco``: most images used (0 = all).
        seed: ``synthetic``: scene seed (disjoint seeds give disjoint scenes).
        start_id: ``synthetic``: image id of the first scene.
        height: ``synthetic``: scene height in pixels.
        width: ``synthetic``: scene width in pixels.
    """

    kind: str = "synthetic"
    json: str | None = None
    png_dir: str | None = None
    image_dir: str | None = None
    length: int = 2000
    seed: int = 0
    start_id: int = 1
    height: int = 256
    width: int = 320

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise ValueError(f"data kind must be one of {DATA_KINDS}, got {self.kind!r}")
        if self.kind == "coco" and not self.json:
            raise ValueError("data kind 'coco' needs 'json' (the annotations file)")
        if self.length < 0:
            raise ValueError(f"length must be >= 0, got {self.length}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (validation images are never augmented).

    Attributes:
        scale: range of the random scale factor; ``[1, 1]`` disables it.
        crop: ``[height, width]`` of a random crop after scaling, or None.
        flip: random horizontal flip.
        jitter: photometric jitter (brightness, contrast, saturation).
    """

    scale: tuple[float, float] = (0.75, 1.5)
    crop: tuple[int, int] | None = None
    flip: bool = True
    jitter: bool = True


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Attributes:
        optimizer: ``sgd`` (momentum) or ``adamw``.
        lr: peak learning rate.
        momentum: SGD momentum.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        warmup_steps: linear warm-up from ``warmup_factor * lr``.
        warmup_factor: starting fraction of the warm-up.
        schedule: after warm-up: ``cosine`` to ``min_lr_factor * lr``, ``poly`` (power 0.9),
            ``step`` (times ``gamma`` at each of ``milestones``) or ``constant``.
        milestones: steps of the ``step`` schedule.
        gamma: factor of the ``step`` schedule.
        min_lr_factor: final fraction of ``cosine``.
        grad_clip: clip the global gradient norm to this (0 = off).
    """

    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    warmup_factor: float = 0.001
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    min_lr_factor: float = 0.01
    grad_clip: float = 10.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise ValueError("lr must be > 0, warmup_steps and grad_clip >= 0")


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        model: EfficientPS config fields (``variant`` picks the preset the rest overrides).
        label_set: built-in label set name or a COCO-style category JSON.
        train: training data.
        val: validation data for periodic PQ (None: no validation).
        augment: training augmentation.
        optim: optimiser and schedule.
        batch_size: images per step and process.
        max_steps: optimiser steps of the whole run.
        num_workers: DataLoader worker processes per training process.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``auto`` and ``cuda`` mean
            ``cuda:LOCAL_RANK``, and under torchrun every rank uses ``cuda:LOCAL_RANK`` (see
            :func:`panoptic_ros.devices.process_device`).
        amp: mixed precision on CUDA: bf16 on GPUs with native bfloat16 (compute
            capability 8.0+), else fp16 with loss scaling (V100, T4, Jetson Xavier only
            emulate bf16); ignored on the CPU.
        seed: seed of weights init, sampling and augmentation.
        output_dir: checkpoints, TensorBoard logs and summary.json go here.
        checkpoint_every: save ``last.pt`` every this many steps (0 = only at the end).
        val_every: evaluate PQ every this many steps (0 = only at the end).
        log_every: TensorBoard / progress-bar refresh interval in steps.
        init_checkpoint: start from these weights (fine-tuning), not random.
        loss_weights: factor per loss term (``loss_semantic``, ``loss_mask``, ...), default 1.
    """

    model: dict[str, Any] = field(default_factory=lambda: {"variant": "narrow"})
    label_set: str = "synthetic"
    train: DataConfig = field(default_factory=DataConfig)
    val: DataConfig | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 4
    max_steps: int = 10000
    num_workers: int = 2
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    output_dir: str = "runs/train"
    checkpoint_every: int = 500
    val_every: int = 1000
    log_every: int = 10
    init_checkpoint: str | None = None
    loss_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_steps < 1:
            raise ValueError("batch_size and max_steps must be >= 1")
        if self.num_workers < 0 or self.checkpoint_every < 0 or self.val_every < 0:
            raise ValueError("num_workers, checkpoint_every and val_every must be >= 0")
        normalize_device_name(self.device)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only: YAML-, JSON- and checkpoint-safe."""
        return plain_types(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys raise ``ValueError`` naming them."""
        data = dict(data)
        nested = {"train": DataConfig, "val": DataConfig, "augment": AugmentConfig,
                  "optim": OptimConfig}
        for key, sub in nested.items():
            if data.get(key) is not None:
                data[key] = _build(sub, data[key], key)
        return _build(cls, data, "training config")


def _build(cls, data: Any, where: str):
    return cls(**dataclass_kwargs(cls, data, where, what=f"keys in {where}:"))


def load_train_config(path: str | Path, overrides: Mapping[str, Any] | None = None
                      ) -> TrainConfig:
    """Read a training YAML; ``overrides`` replace top-level keys (CLI options).

    Raises:
        UserError: missing file, invalid YAML or invalid settings (one line, with the path).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise UserError(f"training config not found: {path}") from None
    except yaml.YAMLError as err:
        raise UserError(f"training config {path} is not valid YAML: {err}") from None
    if not isinstance(data, Mapping):
        raise UserError(f"{path}: expected a mapping at the top level")
    data = {**data, **(overrides or {})}
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise UserError(f"{path}: {err}") from None
