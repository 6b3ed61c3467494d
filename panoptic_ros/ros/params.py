"""Typed ROS parameter declarations shared by every node of the package.

A :class:`ParamSpec` says once what a parameter is: default, meaning, valid values (choices, a
range, a validating function) and when a change takes effect. Its :meth:`~ParamSpec.descriptor`
is what the node declares (description and range visible to ``ros2 param describe``) and its
:meth:`~ParamSpec.check` is what a set-parameters callback refuses with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

if TYPE_CHECKING:
    from rclpy.node import Node

CONFIGURE, ACTIVATE, LIVE, START = "configure", "activate", "live", "start"
WHEN = {
    CONFIGURE: "applies at the next configure",
    ACTIVATE: "applies at the next activate",
    LIVE: "applies immediately",
    START: "read once at start",
}
"""When a change of a parameter takes effect, as written into its description."""


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: default, meaning, valid values and when a change takes effect.

    ``validate`` judges what a range or a list of choices cannot (a device name, a backend
    name): it returns why a value is invalid, or ``None``. ``read_only`` parameters are refused
    by rclpy after their declaration.
    """

    name: str
    default: Any
    description: str
    when: str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    validate: Callable[[Any], str | None] | None = None
    read_only: bool = False

    def descriptor(self) -> ParameterDescriptor:
        """The ``ParameterDescriptor`` declared for it: description, range, constraints."""
        d = parameter_descriptor(self.name, f"{self.description} ({WHEN[self.when]})",
                                 self.default, self.choices, self.low, self.high)
        d.read_only = self.read_only
        return d

    def check(self, value: Any) -> str | None:
        """Why ``value`` is invalid, or ``None`` when it is fine (ranges included)."""
        if self.choices and value not in self.choices:
            return f"{self.name} must be one of {list(self.choices)}, got {value!r}"
        if self.low is not None and not self.low <= value <= self.high:
            return f"{self.name} must lie in [{self.low}, {self.high}], got {value!r}"
        return self.validate(value) if self.validate is not None else None


def parameter_descriptor(name: str, description: str, default: Any,
                         choices: tuple[str, ...] = (), low: float | None = None,
                         high: float | None = None) -> ParameterDescriptor:
    """A ``ParameterDescriptor``: the range follows the default's type (float or int)."""
    d = ParameterDescriptor(name=name, description=description)
    if choices:
        d.additional_constraints = "one of: " + ", ".join(repr(c) for c in choices)
    if low is not None and high is not None and isinstance(default, float):
        d.floating_point_range = [
            FloatingPointRange(from_value=float(low), to_value=float(high))
        ]
    elif (low is not None and high is not None and isinstance(default, int)
          and not isinstance(default, bool)):
        d.integer_range = [IntegerRange(from_value=int(low), to_value=int(high))]
    return d


def declare_params(node: Node, specs: Iterable[ParamSpec]) -> dict[str, Any]:
    """Declare every spec on ``node``; their values (parameter files and overrides applied)."""
    return {s.name: node.declare_parameter(s.name, s.default, s.descriptor()).value
            for s in specs}
