"""Live inference settings a backend declares: name, type, range, default and meaning.

Each backend class lists its live settings (thresholds, rules) as :class:`LiveParam` entries in
``LIVE_PARAMS``; the :class:`~panoptic_ros.inference.Predictor` records the loaded model's own
values as the defaults and resets to them; the ROS node declares one parameter per entry of the
loaded backend, so no caller hard-codes another backend's names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from panoptic_ros.config_dicts import refuse_unknown

UNSET_NUMBER = -1
"""Node parameter value meaning "the model's own setting" for numeric live settings."""
UNSET_TEXT = ""
"""Node parameter value meaning "the model's own setting" for text live settings."""


@dataclass(frozen=True)
class LiveParam:
    """One live inference setting of a backend.

    Attributes:
        name: keyword of the backend's ``set_inference_params``.
        default: the backend's built-in value; its type (float, int, str) is the setting's.
            A loaded model may have another value (from its checkpoint): see
            :meth:`~panoptic_ros.inference.Predictor.live_params`.
        description: what it does, in the backend's own terms (units included).
        low, high: inclusive range of numbers (``None``: unbounded).
        choices: allowed texts (empty: any text).
    """

    name: str
    default: float | int | str
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def kind(self) -> type:
        """``float``, ``int`` or ``str``."""
        return type(self.default)

    @property
    def unset(self) -> float | int | str:
        """The node's "model's own setting" value of this type (-1, -1.0 or "")."""
        if self.kind is str:
            return UNSET_TEXT
        return self.kind(UNSET_NUMBER)

    def check(self, value: Any) -> str | None:
        """Why ``value`` is not valid for this setting, or ``None`` when it is."""
        kind = self.kind
        if kind is float:
            ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok_type = isinstance(value, kind) and not isinstance(value, bool)
        if not ok_type:
            return f"{self.name} must be a {kind.__name__}, got {value!r}"
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {list(self.choices)}, got {value!r}"
        if kind is str:
            return None
        if value != value:  # NaN
            return f"{self.name} must be a number, got {value!r}"
        low = -float("inf") if self.low is None else self.low
        high = float("inf") if self.high is None else self.high
        if not low <= value <= high:
            return f"{self.name} must lie in [{_num(low)}, {_num(high)}], got {value!r}"
        return None

    def with_default(self, value: Any) -> LiveParam:
        """The same setting with another default (a loaded model's own value)."""
        return replace(self, default=self.kind(value))


def _num(x: float) -> str:
    return f"{x:g}"


def check_values(specs: Iterable[LiveParam], values: Mapping[str, Any]) -> None:
    """Validate ``values`` (name -> value) against ``specs``; change nothing.

    Raises:
        ValueError: an unknown name or an invalid value (the message names it).
    """
    by_name = {p.name: p for p in specs}
    refuse_unknown(values, by_name, "inference parameter(s)")
    for name, value in values.items():
        problem = by_name[name].check(value)
        if problem:
            raise ValueError(problem)
