"""The EfficientPS trainer: one process, or one per GPU through torchrun (DDP).

Features: SGD/AdamW, linear warm-up then cosine/poly/step schedule, gradient clipping, AMP on
CUDA, checkpoints every N steps and on interrupt (SIGINT/SIGTERM), exact resume (weights,
optimiser, schedule, scaler, RNG, position in the epoch), periodic PQ on a validation set, a
progress bar with loss terms and throughput, TensorBoard when installed, summary.json at the end.

Multi-GPU: ``torchrun --nproc_per_node N -m panoptic_ros.cli train --config ...``; the same
code path runs on CPU with the gloo backend. Every rank validates its share of the validation
set and the PQ counts are merged (no rank idles in a collective while another evaluates).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from panoptic_ros.categories import LabelSet, get_label_set
from panoptic_ros.data.coco_panoptic import CocoPanopticDataset
from panoptic_ros.data.dataset import PanopticDataset, SyntheticPanopticDataset, collate_lists
from panoptic_ros.data.synthetic import SceneConfig, generate_scene, scene_rng
from panoptic_ros.data.transforms import training_transforms
from panoptic_ros.devices import process_device
from panoptic_ros.evaluation.pq import PQStat, PQStatCat, pq_results
from panoptic_ros.inference import autocast_dtype
from panoptic_ros.models.checkpoint import checkpoint_dict, load_checkpoint_file
from panoptic_ros.models.efficientps.config import EfficientPSConfig
from panoptic_ros.models.registry import build_model
from panoptic_ros.result import PanopticResult
from panoptic_ros.training.config import DataConfig, TrainConfig

LOSS_KEYS = ("loss_semantic", "loss_objectness", "loss_rpn_box_reg", "loss_classifier",
             "loss_box_reg", "loss_mask")


# -- distributed helpers ------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    """Rank layout of this process (torchrun's environment; one process without it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> DistInfo:
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set by torchrun."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def main(self) -> bool:
        """Whether this process writes checkpoints, logs and the summary."""
        return self.rank == 0


def setup_device(name: str, layout: DistInfo) -> torch.device:
    """This process's device, made the current CUDA device.

    The rule is :func:`~panoptic_ros.devices.process_device`'s: ``cuda`` gets an index, and
    under torchrun every rank takes ``cuda:LOCAL_RANK``.

    Raises:
        ValueError: not a device name.
        ModelLoadError: CUDA asked for but not available, or too few GPUs.
    """
    device = process_device(name, layout.local_rank, layout.world_size)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    return device


def amp_settings(device: torch.device, enabled: bool
                 ) -> tuple[torch.dtype | None, torch.amp.GradScaler]:
    """The trainer's AMP dtype (``None``: fp32, no autocast) and gradient scaler.

    ``amp: true`` on CUDA is bf16 where the GPU has native bfloat16, else fp16 with loss
    scaling (the scaler is enabled for fp16 only); without AMP or off CUDA, fp32.
    "Native" is the rule of :func:`panoptic_ros.inference.autocast_dtype` (compute capability
    8.0+): GPUs that only emulate bf16 (V100, T4, Jetson Xavier), which
    ``torch.cuda.is_bf16_supported()`` counts by default, get fp16.
    """
    dtype = None
    if enabled and device.type == "cuda":
        try:
            dtype = autocast_dtype(device, "bf16")
        except ValueError:  # no native bfloat16 on this GPU
            dtype = autocast_dtype(device, "fp16")
    return dtype, torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)


class EpochSampler(Sampler[int]):
    """Deterministic shuffled order per epoch, split across ranks, resumable mid-epoch.

    Args:
        length: dataset size.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        rank, world_size: this process's share is every ``world_size``-th index.
    """

    def __init__(self, length: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.length, self.seed, self.rank, self.world_size = length, seed, rank, world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch and how many of this rank's indices were already consumed."""
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return max(0, math.ceil(self.length / self.world_size) - self.skip)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.length, generator=g).tolist()
        per_rank = math.ceil(self.length / self.world_size)
        order += order[: per_rank * self.world_size - self.length]  # pad evenly
        return iter(order[self.rank :: self.world_size][self.skip :])


# -- data ---------------------------------------------------------------------------------
def build_train_dataset(cfg: TrainConfig, label_set: LabelSet, rank: int):
    """The training dataset with augmentation."""
    aug = cfg.augment
    transforms = training_transforms(crop=aug.crop, scale=tuple(aug.scale), flip=aug.flip,
                                     jitter=aug.jitter)
    data = cfg.train
    if data.kind == "synthetic":
        if label_set.name != "synthetic":
            raise ValueError(f"synthetic training data has the 'synthetic' label set, "
                             f"but the config names {label_set.name!r}")
        return SyntheticPanopticDataset(
            data.length, seed=data.seed, start_id=data.start_id, transforms=transforms,
            config=SceneConfig(height=data.height, width=data.width))
    source = CocoPanopticDataset(data.json, data.png_dir, data.image_dir, label_set=label_set)
    return PanopticDataset(source, transforms=transforms, seed=cfg.seed)


def validation_samples(data: DataConfig, label_set: LabelSet, label_divisor: int,
                       limit: int | None = None, rank: int = 0, world_size: int = 1
                       ) -> Iterator[tuple[np.ndarray, PanopticResult]]:
    """``(image uint8 RGB, ground truth)`` pairs of a validation set, unaugmented.

    With ``world_size > 1``, only this rank's share: images ``rank``, ``rank + world_size``, ...
    """
    if data.kind == "synthetic":
        scene_cfg = SceneConfig(height=data.height, width=data.width,
                                label_divisor=label_divisor)
        count = data.length if limit is None else min(limit, data.length)
        for k in range(rank, count, world_size):
            scene = generate_scene(scene_rng(data.seed, data.start_id + k), scene_cfg)
            yield scene.image, scene.result
        return
    source = CocoPanopticDataset(data.json, data.png_dir, data.image_dir, label_set=label_set)
    ids = source.image_ids
    if data.length:
        ids = ids[: data.length]
    if limit is not None:
        ids = ids[:limit]
    for image_id in ids[rank::world_size]:
        yield source.load_image(image_id), source.load_result(image_id, label_divisor)


@torch.inference_mode()
def evaluate_model(model: nn.Module, samples, device: torch.device) -> tuple[dict, int]:
    """PQ of ``model`` (eval mode, no resize) on ``(image, ground truth)`` pairs.

    Returns:
        panopticapi's results dict over the model's label set, and the image count.
    """
    stats = image_stats(model, samples, device)
    return sum_stats(stats).results(model.label_set), len(stats)


@torch.inference_mode()
def image_stats(model: nn.Module, samples, device: torch.device) -> list[PQStat]:
    """One PQ accumulator per ``(image, ground truth)`` pair, ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    stats = []
    try:
        for image, gt in samples:
            x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(device)
            stats.append(pq_results(gt, model([x])[0]))
    finally:
        model.train(was_training)
    return stats


def sum_stats(stats) -> PQStat:
    """The sum of PQ accumulators, in order (the same order gives the same float sums)."""
    total = PQStat()
    for stat in stats:
        total += stat
    return total


def gather_image_stats(stats: list[PQStat], world_size: int) -> list[PQStat]:
    """Every rank's per-image stats, on every rank, in the unsharded image order.

    Rank ``r`` holds images ``r, r + world_size, ...``, as :func:`validation_samples` shards
    them. Summed in the unsharded order they give bit for bit the single-process result.
    """
    if world_size == 1:
        return stats
    mine = [{c: (s.iou, s.tp, s.fp, s.fn) for c, s in st.per_cat.items()} for st in stats]
    shards: list[Any] = [None] * world_size
    dist.all_gather_object(shards, mine)
    ordered = []
    for i in range(sum(len(shard) for shard in shards)):
        stat = PQStat()
        counts = shards[i % world_size][i // world_size]
        stat.per_cat = {c: PQStatCat(*v) for c, v in counts.items()}
        ordered.append(stat)
    return ordered


# -- schedule and optimiser ---------------------------------------------------------------
def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based)."""
    o = cfg.optim
    if step < o.warmup_steps:
        alpha = step / max(1, o.warmup_steps)
        return o.warmup_factor * (1 - alpha) + alpha
    t = (step - o.warmup_steps) / max(1, cfg.max_steps - o.warmup_steps)
    t = min(max(t, 0.0), 1.0)
    if o.schedule == "cosine":
        return o.min_lr_factor + (1 - o.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * t))
    if o.schedule == "poly":
        return (1 - t) ** 0.9
    if o.schedule == "step":
        return o.gamma ** sum(step >= m for m in o.milestones)
    return 1.0


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW; norms and biases get no weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optim.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    return torch.optim.AdamW(groups, lr=cfg.optim.lr)


def param_checksum(model: nn.Module) -> float:
    """Sum of all parameters in float64: equal on every rank when DDP kept them in sync."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in model.parameters()))


# -- the trainer --------------------------------------------------------------------------
class Trainer:
    """Train EfficientPS from a :class:`TrainConfig`.

    Args:
        config: the run's settings.
        resume: a checkpoint written by this trainer (``last.pt``) to continue from exactly.
        progress: show a progress bar (main process only).
    """

    def __init__(self, config: TrainConfig, resume: str | Path | None = None,
                 progress: bool = True) -> None:
        self.cfg = config
        self.dist = DistInfo.from_env()
        # The device first: NCCL's collectives use the current CUDA device.
        self.device = setup_device(config.device, self.dist)
        if self.dist.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.out = Path(config.output_dir)
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.progress = progress and self.dist.main
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.label_set = get_label_set(config.label_set)
        self.model_config = EfficientPSConfig.from_dict(config.model)
        self.model = build_model("efficientps", self.model_config, self.label_set).to(self.device)
        if config.init_checkpoint:
            ckpt = load_checkpoint_file(config.init_checkpoint)
            missing, unexpected = self.model.load_state_dict(ckpt["state_dict"], strict=False)
            if unexpected or missing:
                print(f"init_checkpoint: {len(missing)} missing, {len(unexpected)} unexpected "
                      "keys (heads of another label set are re-initialised)")
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config))
        self.amp_dtype, self.scaler = amp_settings(self.device, config.amp)
        self.ddp = None
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Batches without things leave the mask head unused.
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=True)
        self.dataset = build_train_dataset(config, self.label_set, self.dist.rank)
        if len(self.dataset) == 0:
            raise ValueError("the training set is empty")
        self.sampler = EpochSampler(len(self.dataset), config.seed, self.dist.rank,
                                    self.dist.world_size)
        self.loader = DataLoader(
            self.dataset, batch_size=config.batch_size, sampler=self.sampler,
            num_workers=config.num_workers, collate_fn=collate_lists, drop_last=True,
            pin_memory=self.device.type == "cuda",
            # Its own generator: creating an iterator must not draw from the global RNG, or a
            # resumed run would diverge from an uninterrupted one.
            generator=torch.Generator().manual_seed(config.seed))
        self.batches_per_epoch = len(self.sampler) // config.batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the training set ({len(self.dataset)} images over {self.dist.world_size} "
                f"processes) is smaller than one batch of {config.batch_size}")
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.loss_ema: dict[str, float] = {}
        self.best_pq = -1.0
        self.train_seconds = 0.0
        if resume is not None:
            self._load_state(resume)
        self.writer = self._tensorboard() if self.dist.main else None

    # -- checkpoints ------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "torch_rng": torch.get_rng_state(),
            # Stochastic depth and the RPN/RoI samplers draw from the model device's generator.
            **({"cuda_rng": torch.cuda.get_rng_state_all(), "cuda_rng_device": self.device.index}
               if self.device.type == "cuda" else {}),
            "history": json.dumps(self.history),
            "loss_ema": json.dumps(self.loss_ema),
            "best_pq": self.best_pq,
            "train_seconds": self.train_seconds,
            "train_config": self.cfg.to_dict(),
        }

    def save(self, name: str, with_state: bool = True) -> Path:
        """Write ``output_dir/name`` (main process): weights, label set, config, metadata."""
        path = self.out / name
        meta = {"step": self.step, "train_seconds": round(self.train_seconds, 1),
                "best_val_pq": self.best_pq, "world_size": self.dist.world_size,
                "train_config": self.cfg.to_dict()}
        payload = checkpoint_dict(self.model, meta=meta)
        if with_state:
            payload["train_state"] = self._state()
        tmp = path.with_suffix(".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, path)
        return path

    def _load_state(self, path: str | Path) -> None:
        ckpt = load_checkpoint_file(path)
        if "train_state" not in ckpt:
            raise ValueError(f"{path} holds no training state (not written by the trainer)")
        self.model.load_state_dict(ckpt["state_dict"])
        st = ckpt["train_state"]
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        self.step = int(st["step"])
        torch.set_rng_state(st["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in st:  # older checkpoints lack it
            self._restore_cuda_rng(list(st["cuda_rng"]), int(st.get("cuda_rng_device", 0)))
        self.history = json.loads(st["history"])
        self.loss_ema = json.loads(st["loss_ema"])
        self.best_pq = float(st["best_pq"])
        self.train_seconds = float(st["train_seconds"])

    def _restore_cuda_rng(self, states: list[torch.Tensor], saved_index: int) -> None:
        """Put the CUDA generators back as saved.

        On another GPU layout the state of the GPU that trained goes to this process's GPU
        (under torchrun every rank restores the main process's, as a fresh run starts every
        rank from the same seed).
        """
        if saved_index == self.device.index and len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
        else:
            torch.cuda.set_rng_state(states[min(saved_index, len(states) - 1)], self.device)

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    # -- validation -------------------------------------------------------------------------
    def validate(self) -> dict | None:
        """PQ on the validation set, recorded in the history.

        Every process evaluates its share of the images; the per-image counts are gathered and
        summed in image order, so the result is the single-process one, on every process.
        """
        if self.cfg.val is None:
            return None
        start = time.perf_counter()
        samples = validation_samples(self.cfg.val, self.label_set,
                                     self.model_config.label_divisor,
                                     rank=self.dist.rank, world_size=self.dist.world_size)
        stats = gather_image_stats(image_stats(self.model, samples, self.device),
                                   self.dist.world_size)
        results, n = sum_stats(stats).results(self.model.label_set), len(stats)
        entry = {"step": self.step, "images": n,
                 **{f"{k.lower()}_{m}": results[k][m] for k in ("All", "Things", "Stuff")
                    for m in ("pq", "sq", "rq")},
                 "seconds": round(time.perf_counter() - start, 1)}
        self.history.append(entry)
        if self.writer is not None:
            for k in ("all_pq", "things_pq", "stuff_pq"):
                self.writer.add_scalar(f"val/{k}", entry[k], self.step)
        if entry["all_pq"] > self.best_pq:
            self.best_pq = entry["all_pq"]
            if self.dist.main:
                self.save("best.pt", with_state=False)
        return entry

    # -- the loop ---------------------------------------------------------------------------
    def _batches(self) -> Iterator[tuple[list[torch.Tensor], list[dict]]]:
        while True:
            epoch, done = divmod(self.step, self.batches_per_epoch)
            self.sampler.set_epoch(epoch, skip=done * self.cfg.batch_size)
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            yield from self.loader

    def train_step(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, float]:
        """One optimiser step; returns the loss terms as floats."""
        dev = self.device
        images = [im.to(dev, non_blocking=True) for im in images]
        targets = [{k: (v.to(dev, non_blocking=True) if torch.is_tensor(v) else v)
                    for k, v in t.items()} for t in targets]
        net = self.ddp or self.model
        with torch.autocast(dev.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            losses = net(images, targets)
        weights = self.cfg.loss_weights
        total = sum(float(weights.get(k, 1.0)) * v for k, v in losses.items())
        if not torch.isfinite(total):
            terms = {k: float(v) for k, v in losses.items()}
            raise FloatingPointError(f"non-finite loss at step {self.step}: {terms}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.optim.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["loss"] = float(total.detach())
        return out

    def run(self) -> dict[str, Any]:
        """Train to ``max_steps``; returns (and writes) the summary.

        A loop of optimiser steps, each followed by three hooks: log, checkpoint, validate.
        Ctrl-C (or SIGTERM to the main process) ends the loop early: ``last.pt`` is saved and
        ``KeyboardInterrupt`` raised, saying how to resume.
        """
        interrupted = False
        with self._progress_bar() as bar, _sigterm_raises_interrupt(self.dist.main):
            try:
                self._loop(bar)
            except KeyboardInterrupt:
                interrupted = True
        if self.dist.main:
            self.save("last.pt")
        if interrupted:
            self._summary(interrupted=True, final=None)
            self._finish()
            raise KeyboardInterrupt(f"interrupted at step {self.step}; "
                                    f"resume with --resume {self.out / 'last.pt'}")
        final = self.validate()
        if self.dist.main:
            self.save("model_final.pt", with_state=False)
        summary = self._summary(interrupted=False, final=final)
        self._finish()
        return summary

    def _loop(self, bar) -> None:
        """Optimiser steps up to ``max_steps``, each followed by the hooks."""
        batches = self._batches()
        images_seen, t0 = 0, time.perf_counter()
        while self.step < self.cfg.max_steps:
            images, targets = next(batches)
            t_step = time.perf_counter()
            terms = self.train_step(images, targets)
            self.train_seconds += time.perf_counter() - t_step
            images_seen += len(images) * self.dist.world_size
            self._log_hook(terms, bar, images_seen / max(time.perf_counter() - t0, 1e-9))
            self._checkpoint_hook()
            self._validation_hook(bar)

    def _progress_bar(self):
        """A tqdm bar from the current step (closed on exit), or a null context without one."""
        if not self.progress:
            return contextlib.nullcontext(None)
        from tqdm import tqdm

        return tqdm(total=self.cfg.max_steps, initial=self.step, unit="step",
                    dynamic_ncols=True)

    def _log_hook(self, terms: Mapping[str, float], bar, images_per_second: float) -> None:
        """Loss moving averages; progress bar and TensorBoard every ``log_every`` steps."""
        for k, v in terms.items():
            self.loss_ema[k] = v if k not in self.loss_ema else 0.9 * self.loss_ema[k] + 0.1 * v
        due = self.step % self.cfg.log_every == 0
        if bar is not None:
            bar.update(1)
            if due or self.step == self.cfg.max_steps:
                short = {k.replace("loss_", "")[:6]: f"{v:.3f}" for k, v in self.loss_ema.items()}
                bar.set_postfix(**short, img_s=f"{images_per_second:.1f}", refresh=False)
        if self.writer is not None and due:
            for k, v in terms.items():
                self.writer.add_scalar(f"train/{k}", v, self.step)
            self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.step)

    def _checkpoint_hook(self) -> None:
        """``last.pt`` every ``checkpoint_every`` steps (main process)."""
        every = self.cfg.checkpoint_every
        if self.dist.main and every and self.step % every == 0:
            self.save("last.pt")

    def _validation_hook(self, bar) -> None:
        """PQ every ``val_every`` steps before the last (:meth:`run` validates the end)."""
        every = self.cfg.val_every
        if not (every and self.step % every == 0 and self.step < self.cfg.max_steps):
            return
        entry = self.validate()
        if entry and bar is not None:
            bar.write(f"step {self.step}: val PQ {100 * entry['all_pq']:.1f} "
                      f"(things {100 * entry['things_pq']:.1f}, "
                      f"stuff {100 * entry['stuff_pq']:.1f})")

    def _summary(self, interrupted: bool, final: dict | None) -> dict[str, Any]:
        checksums = [param_checksum(self.model)]
        if self.dist.world_size > 1:
            gathered: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(gathered, checksums[0])
            checksums = gathered
        summary = {
            "steps": self.step,
            "max_steps": self.cfg.max_steps,
            "interrupted": interrupted,
            "world_size": self.dist.world_size,
            "device": str(self.device),
            "train_seconds": round(self.train_seconds, 1),
            "images_per_second": round(
                self.step * self.cfg.batch_size * self.dist.world_size
                / max(self.train_seconds, 1e-9), 2),
            "final_losses": {k: round(v, 5) for k, v in self.loss_ema.items()},
            "final_val": final,
            "best_val_pq": self.best_pq if self.best_pq >= 0 else None,
            "val_history": self.history,
            "param_checksums": checksums,
            "checkpoints": {"last": str(self.out / "last.pt"),
                            "final": None if interrupted else str(self.out / "model_final.pt")},
            "model_config": self.model_config.to_dict(),
            "train_config": self.cfg.to_dict(),
        }
        if self.dist.main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary

    def _finish(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.dist.world_size > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _raise_interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _sigterm_raises_interrupt(active: bool) -> Iterator[None]:
    """Inside, SIGTERM raises ``KeyboardInterrupt``; the previous handler is restored on exit.

    Only when ``active`` (the main process) and called from the main thread: a terminated run
    then checkpoints like a Ctrl-C.
    """
    previous = signal.getsignal(signal.SIGTERM)
    if active and hasattr(signal, "SIGTERM"):
        try:
            signal.signal(signal.SIGTERM, _raise_interrupt)
        except ValueError:  # not the main thread
            previous = None
    try:
        yield
    finally:
        if previous is not None and active:
            signal.signal(signal.SIGTERM, previous)


def train(config: TrainConfig, resume: str | Path | None = None,
          progress: bool = True) -> Mapping[str, Any]:
    """Run a training from ``config``; returns the summary (also in summary.json)."""
    return Trainer(config, resume=resume, progress=progress).run()
