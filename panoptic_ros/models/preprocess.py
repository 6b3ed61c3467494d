"""Batch preparation shared by the backends and the Predictor: normalise, then pad."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

IMAGENET_MEAN = (123.675, 116.28, 103.53)
"""Per-channel RGB mean of ImageNet, 0..255 units: the normalisation of ImageNet backbones."""
IMAGENET_STD = (58.395, 57.12, 57.375)
"""Per-channel RGB standard deviation of ImageNet, 0..255 units."""


def normalize_and_pad(
    images: Sequence[Tensor],
    mean: Sequence[float],
    std: Sequence[float],
    size_divisibility: int,
    channels_last: bool = False,
    min_size: int = 0,
) -> tuple[Tensor, list[tuple[int, int]]]:
    """Normalise RGB images and pad them (bottom/right, with zeros) into one batch.

    Args:
        images: Tensors[3, h_i, w_i], RGB in 0..255 (uint8 or float), all on one device.
        mean: per-channel mean, 0..255 units.
        std: per-channel standard deviation, 0..255 units.
        size_divisibility: the batch's height and width are multiples of this.
        channels_last: return the batch in channels-last memory format.
        min_size: the batch is at least this high and wide (padding), so that tiny images
            keep more than one value per channel at the network's coarsest level.

    Returns:
        Tensor[B, 3, H_p, W_p] float32 ``(rgb - mean) / std`` (0 in the padding) and the
        ``(h_i, w_i)`` of each image.

    Raises:
        ValueError: no images, or an image that is not [3, h, w] with h, w >= 1.
    """
    if len(images) == 0:
        raise ValueError("no images to batch")
    sizes = []
    for i, im in enumerate(images):
        if not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != 3 or min(im.shape) < 1:
            got = tuple(im.shape) if isinstance(im, Tensor) else type(im).__name__
            raise ValueError(f"image {i} must be Tensor[3, H, W] with H, W >= 1, got {got}")
        sizes.append((int(im.shape[1]), int(im.shape[2])))
    d = int(size_divisibility)
    pad_h = math.ceil(max(min_size, *(h for h, _ in sizes)) / d) * d
    pad_w = math.ceil(max(min_size, *(w for _, w in sizes)) / d) * d
    device = images[0].device
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
    inv_std = 1.0 / torch.as_tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
    batch = torch.zeros((len(images), 3, pad_h, pad_w), dtype=torch.float32, device=device)
    for i, (im, (h, w)) in enumerate(zip(images, sizes)):
        batch[i, :, :h, :w] = (im.float() - mean_t) * inv_std
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch, sizes


def check_batch(
    images: Tensor,
    image_sizes: Sequence[Sequence[int]],
    output_sizes: Sequence[Sequence[int]] | None = None,
) -> list[tuple[int, int]]:
    """Validate a padded batch and its per-image sizes (the checks of every backend's predict).

    Args:
        images: Tensor[B, 3, H_p, W_p], as :func:`normalize_and_pad` returns it.
        image_sizes: ``(h, w)`` per image, its valid region: ``0 < h <= H_p``, ``0 < w <= W_p``.
        output_sizes: ``(H, W)`` per image of the results, or None (only their number is
            checked).

    Returns:
        The image sizes as ``int`` pairs; while tracing (export) as given, since they may be
        graph inputs.

    Raises:
        ValueError: ``images`` is not [B, 3, H, W], the number of sizes is not ``B``, or an
            image size does not fit the padded input.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be Tensor[B, 3, H, W], got {tuple(images.shape)}")
    batch, _, pad_h, pad_w = images.shape
    if len(image_sizes) != batch:
        raise ValueError(f"expected {batch} image sizes, got {len(image_sizes)}")
    if output_sizes is not None and len(output_sizes) != batch:
        raise ValueError(f"expected {batch} output sizes, got {len(output_sizes)}")
    if torch.jit.is_tracing():
        return [(h, w) for h, w in image_sizes]
    sizes = [(int(h), int(w)) for h, w in image_sizes]
    for h, w in sizes:
        if not (0 < h <= pad_h and 0 < w <= pad_w):
            raise ValueError(f"image size {(h, w)} does not fit the padded input {(pad_h, pad_w)}")
    return sizes
