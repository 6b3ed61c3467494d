"""Device names users write (``auto``, ``cpu``, ``cuda``, ``cuda:N``): the one check, torch-free.

:func:`~panoptic_ros.inference.parse_device` turns a checked name into a ``torch.device``; the
node refuses a bad name when the parameter is set, before any model is loaded.
"""

from __future__ import annotations

import re

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
