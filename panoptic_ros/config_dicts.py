"""Frozen-dataclass configs to and from plain mappings (YAML, JSON, checkpoints, ROS).

The one place where unknown keys are refused: every config loader and live-setting check calls
:func:`refuse_unknown` (directly or through :func:`dataclass_kwargs`), so a misspelt key fails
loudly with its name and the known ones instead of being silently ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any


def refuse_unknown(keys: Iterable[str], known: Iterable[str], what: str) -> None:
    """Raise unless every key is known.

    Raises:
        ValueError: ``"unknown <what> [<unknown keys>]; known: [<known keys>]"``, sorted.
    """
    known = set(known)
    unknown = sorted(set(keys) - known)
    if unknown:
        raise ValueError(f"unknown {what} {unknown}; known: {sorted(known)}")


def dataclass_kwargs(cls: type, data: Any, where: str, what: str | None = None
                     ) -> dict[str, Any]:
    """Keyword arguments of dataclass ``cls`` from a mapping, lists made tuples (recursively).

    Args:
        cls: the dataclass.
        data: the mapping (a YAML section).
        where: its name in messages (``"model config"``).
        what: the unknown-key message's subject (default ``"<where> keys"``).

    Raises:
        ValueError: ``data`` is not a mapping, or holds keys that are not fields of ``cls``.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    refuse_unknown(data, (f.name for f in fields(cls)), what or f"{where} keys")
    return {k: tuples(v) for k, v in data.items()}


def tuples(value: Any) -> Any:
    """Lists to tuples, recursively: the frozen form of a YAML sequence."""
    return tuple(tuples(v) for v in value) if isinstance(value, list) else value


def plain_types(value: Any) -> Any:
    """Tuples to lists, recursively: the YAML-, JSON- and ``weights_only``-safe form."""
    if isinstance(value, dict):
        return {k: plain_types(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_types(v) for v in value]
    return value
