"""Device names users write (``auto``, ``cpu``, ``cuda``, ``cuda:N``): the one owner of parsing.

* :func:`normalize_device_name` is the name check, torch-free: the node refuses a bad name when
  the parameter is set, before any model (or torch) is loaded; configs check it when built.
* :func:`parse_device` turns a checked name into a ``torch.device`` (the Predictor).
* :func:`process_device` is the rule of one training process, alone or under torchrun.

torch is imported inside the functions that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from panoptic_ros.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

_log = logging.getLogger(__name__)

DEVICE_FORMS = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def normalize_device_name(name: object) -> str:
    """``name`` stripped and lower-cased, when it is one of :data:`DEVICE_FORMS`.

    Raises:
        ValueError: anything else (e.g. ``tpu``, ``cuda:x``, ``""``), naming the accepted forms.
    """
    text = str(name).strip().lower()
    if not isinstance(name, str) or not _DEVICE.fullmatch(text):
        raise ValueError(f"device must be {DEVICE_FORMS}, got {name!r}")
    return text


def parse_device(name: str, check_available: bool = True) -> torch.device:
    """``auto``/``cpu``/``cuda``/``cuda:N`` -> ``torch.device``.

    ``auto`` is ``cuda`` when CUDA is available, else ``cpu``; ``cuda`` stays without an index
    (the current device).

    Raises:
        ValueError: not a device name of these forms.
        ModelLoadError: CUDA asked for but not available, or ``N`` beyond the device count
            (with ``check_available``).
    """
    import torch

    text = normalize_device_name(name)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(text)
    if check_available and device.type == "cuda":
        _check_cuda(device, name)
    return device


def process_device(name: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The device of one training process: always with an index on CUDA.

    The rule:

    * ``cpu`` -> CPU; ``auto`` -> CUDA when available, else CPU.
    * ``auto`` and ``cuda`` -> ``cuda:LOCAL_RANK`` (``cuda:0`` in a single process), so that
      ``torch.cuda.set_device`` and DDP's ``device_ids`` get an index.
    * ``cuda:N`` -> ``cuda:N`` in a single process. Under torchrun (``world_size > 1``) every
      rank takes ``cuda:LOCAL_RANK`` instead, one GPU per process, since one index for all
      ranks would put them all on one GPU; a warning says so when ``N`` differs. Choose the
      GPUs of a multi-GPU run with ``CUDA_VISIBLE_DEVICES``.

    Args:
        name: one of :data:`DEVICE_FORMS`.
        local_rank: torchrun's ``LOCAL_RANK`` (0 without torchrun).
        world_size: torchrun's ``WORLD_SIZE`` (1 without torchrun).

    Raises:
        ValueError: not a device name of these forms.
        ModelLoadError: CUDA asked for but not available, or the index beyond the device
            count.
    """
    import torch

    device = parse_device(name, check_available=False)
    if device.type != "cuda":
        return device
    if world_size > 1 and device.index not in (None, local_rank):
        _log.warning("device %r under torchrun: the process of LOCAL_RANK %d uses cuda:%d "
                     "(one GPU per process; choose the GPUs with CUDA_VISIBLE_DEVICES)",
                     name, local_rank, local_rank)
    if device.index is None or world_size > 1:
        device = torch.device("cuda", local_rank)
    _check_cuda(device, name)
    return device


def _check_cuda(device: torch.device, name: str) -> None:
    """Raise :class:`ModelLoadError` unless CUDA and the device's index exist."""
    import torch

    if not torch.cuda.is_available():
        raise ModelLoadError(f"device {name!r} requested but CUDA is not available")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        where = "" if str(device) == str(name).strip().lower() else f" ({device})"
        raise ModelLoadError(
            f"device {name!r}{where} requested but only {count} CUDA device(s) exist"
        )


STICKY_DEVICE_ERRORS = ("device-side assert", "illegal memory access",
                        "unspecified launch failure", "an illegal instruction",
                        "misaligned address")
"""Messages of CUDA errors that leave the context unusable for the rest of the process."""


def is_sticky_device_error(err: BaseException) -> bool:
    """Whether ``err`` is an accelerator error that every later call would repeat.

    ``torch.AcceleratorError`` (torch >= 2.8) and CUDA runtime errors whose message names a
    sticky failure (device-side assert, illegal memory access, launch failure); an ordinary
    out-of-memory error is not sticky.
    """
    import torch

    text = str(err)
    if "out of memory" in text:
        return False
    accelerator_error = getattr(torch, "AcceleratorError", ())
    if accelerator_error and isinstance(err, accelerator_error):
        return True
    return isinstance(err, RuntimeError) and any(m in text for m in STICKY_DEVICE_ERRORS)
