"""Parameter specs: descriptors (description, ranges, constraints, read-only) and checks."""

from __future__ import annotations

import pytest

from panoptic_ros.ros.params import CONFIGURE, LIVE, START, WHEN, ParamSpec, parameter_descriptor


def test_descriptor_carries_description_when_and_range_of_the_default_type():
    rate = ParamSpec("rate", 10.0, "frames per second", LIVE, low=0.1, high=1000.0).descriptor()
    assert rate.name == "rate" and rate.description == f"frames per second ({WHEN[LIVE]})"
    assert len(rate.floating_point_range) == 1 and not rate.integer_range
    assert (rate.floating_point_range[0].from_value, rate.floating_point_range[0].to_value) == \
        (0.1, 1000.0)
    depth = ParamSpec("depth", 1, "queue depth", CONFIGURE, low=1, high=100).descriptor()
    assert (depth.integer_range[0].from_value, depth.integer_range[0].to_value) == (1, 100)
    assert not depth.read_only
    flag = parameter_descriptor("flag", "a switch", True, low=0, high=1)
    assert not flag.integer_range and not flag.floating_point_range  # bool: no range
    mode = ParamSpec("mode", "a", "mode", START, choices=("a", "b"), read_only=True).descriptor()
    assert mode.additional_constraints == "one of: 'a', 'b'" and mode.read_only


@pytest.mark.parametrize(("spec", "value", "problem"), [
    (ParamSpec("mode", "a", "", LIVE, choices=("a", "b")), "c", "must be one of"),
    (ParamSpec("alpha", 0.5, "", LIVE, low=0.0, high=1.0), 1.5, "must lie in"),
    (ParamSpec("name", "x", "", LIVE, validate=lambda v: None if v else "empty"), "", "empty"),
    (ParamSpec("alpha", 0.5, "", LIVE, low=0.0, high=1.0), 1.0, None),
])
def test_check_names_the_problem(spec, value, problem):
    result = spec.check(value)
    assert (result is None) if problem is None else (problem in result)
