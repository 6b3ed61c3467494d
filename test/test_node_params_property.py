"""Property tests of the node's set-parameters callback (hypothesis), in-process.

Two nodes in one private rclpy context, never spun: one configured with a tiny random model
(so the backend's live settings are declared and reach the Predictor), one unconfigured.
Random changes (declared and unknown names; values of every parameter type, in and out of
range, NaN, infinities, lists) go through ``set_parameters`` / ``set_parameters_atomically``,
which run the callback. Properties:

- an accepted change takes effect: ``get_parameter`` returns it and the node's live state
  (rate, overlay, input budget, category filter, the Predictor's inference settings) follows;
- a refused change changes nothing: every parameter value and the live state are as before;
- the verdict agrees with the declared type, range and choices where those decide it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import rclpy
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rclpy.exceptions import ParameterNotDeclaredException
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from panoptic_ros.categories import get_label_set
from panoptic_ros.ros import node_params
from panoptic_ros.ros.node import PanopticSegmentationNode

pytestmark = pytest.mark.ros

MODEL = {"weights": "", "backend": "efficientps", "variant": "narrow",
         "label_set": "synthetic", "device": "cpu", "input_size": 64, "cpu_threads": 0}
UNKNOWN = ["max_rat", "MAX_RATE", "max_rate ", "score", "qos_overrides./image.depth",
           "\u00fcber", "", "a" * 300]
SETTINGS = settings(deadline=None, max_examples=300, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
LOAD_PARAMS = {"backend", "weights", "label_set"}  # what an unconfigured filter is judged by


@pytest.fixture(scope="module")
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def _make(ctx, namespace: str) -> PanopticSegmentationNode:
    overrides = [Parameter(k, value=v) for k, v in MODEL.items()]
    return PanopticSegmentationNode(context=ctx, namespace=namespace,
                                    parameter_overrides=overrides)


@pytest.fixture(scope="module")
def configured(context):
    node = _make(context, "/configured")
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node._live, "the backend declared no live settings"
    yield node
    node.destroy_node()


@pytest.fixture(scope="module")
def unconfigured(context):
    node = _make(context, "/unconfigured")
    yield node
    node.destroy_node()


@pytest.fixture(params=["configured", "unconfigured"])
def node(request):
    return request.getfixturevalue(request.param)


# -- observing the node --------------------------------------------------------------------------
def names_of(node) -> list[str]:
    return sorted(node.list_parameters([], 0).names)


def live_state(node) -> dict[str, Any]:
    predictor = node._predictor
    return {
        "max_rate": node._max_rate,
        "overlay_alpha": node._overlay_alpha,
        "overlay_labels": node._overlay_labels,
        "input_timeout": node._input_timeout,
        "budget": node._budget,
        "keep": node._keep,
        "inference": dict(predictor.inference_params()) if predictor is not None else None,
        "live_declared": sorted(node._live),
        "state": node._state,
    }


def snapshot(node) -> dict[str, Any]:
    values = {n: node.get_parameter(n).value for n in names_of(node)}
    return {"params": values, "live": live_state(node)}


def same(a, b) -> bool:
    """Equality that treats NaN as equal to NaN (a refused NaN must not show up either way)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


# -- what the declarations say -------------------------------------------------------------------
def spec_of(node, name: str):
    """(kind, low, high, choices, unset) of a declared node or backend parameter, or None."""
    specs = node_params.SPECS
    if name in specs:
        s = specs[name]
        return type(s.default), s.low, s.high, tuple(s.choices), None
    if name in node._live:
        p = node._live[name]
        return p.kind, p.low, p.high, tuple(p.choices), p.unset
    return None


def label_set_for_filter(node):
    """The categories a category_filter is judged against (None: not cheaply known)."""
    if node._label_set is not None:
        return node._label_set
    params = {n: node.get_parameter(n).value for n in ("backend", "weights", "label_set")}
    if params["backend"] != "efficientps" or params["weights"]:
        return None
    try:
        return get_label_set(params["label_set"])
    except Exception:  # noqa: BLE001 - a label_set a test has set to garbage
        return None


def expected_keep(text: str, label_set) -> frozenset[int] | None | bool:
    """The ids a filter keeps (None: all), or False when an entry names no category."""
    keep = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        names = {c.name: c.id for c in label_set}
        if item in names:
            keep.add(names[item])
        elif item.isdecimal() and int(item) in {c.id for c in label_set}:
            keep.add(int(item))
        else:
            return False
    return frozenset(keep) if keep else None


def verdict(node, name: str, value) -> bool | None:
    """Whether setting ``name`` to ``value`` alone must succeed (None: not decided here)."""
    if not node.has_parameter(name):
        return False
    if node.describe_parameter(name).read_only:
        return False
    if Parameter(name, value=value).type_ != node.get_parameter(name).type_:
        return False
    spec = spec_of(node, name)
    if spec is None:  # rclpy's own (use_sim_time): any value of its type
        return True
    kind, low, high, choices, unset = spec
    if unset is not None and value == unset:
        return True
    if name == "category_filter":
        label_set = label_set_for_filter(node)
        return None if label_set is None else expected_keep(value, label_set) is not False
    if name in ("device", "backend", "onnx_providers"):
        return None  # validated by functions this test does not restate
    if choices:
        return value in choices
    if low is not None and kind in (int, float):
        if isinstance(value, float) and math.isnan(value):
            return False
        if low <= value <= high:
            return True
        if kind is float and (math.isclose(value, low, rel_tol=1e-6)
                              or math.isclose(value, high, rel_tol=1e-6)):
            return None  # rclpy's range check tolerates the edges; the node's may not
        return False
    return True


def expected_live(node, before: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The live state after ``changes`` were accepted."""
    want = dict(before)
    for key in ("max_rate", "overlay_alpha", "overlay_labels", "input_timeout"):
        if key in changes:
            want[key] = type(before[key])(changes[key])
    budget_changes = {"max_image_pixels": "max_pixels",
                      "max_compressed_bytes": "max_compressed_bytes",
                      "oversize_policy": "oversize"}
    fields = {field: changes[name] for name, field in budget_changes.items() if name in changes}
    if fields:
        want["budget"] = dataclasses.replace(before["budget"], **fields)
    if "category_filter" in changes and node._label_set is not None:
        want["keep"] = expected_keep(changes["category_filter"], node._label_set)
    if before["inference"] is not None:
        inference = dict(before["inference"])
        for name, value in changes.items():
            if name in node._live:
                spec = node._live[name]
                inference[name] = spec.default if value == spec.unset else value
        want["inference"] = inference
    return want


# -- strategies ----------------------------------------------------------------------------------
def any_value():
    return st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.sampled_from([-1, 0, 1, 2**31 - 1, 2**31, 100, 8192, 8193, 1_000_000]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([-1.0, 0.0, 0.5, 1.0, 1.0 + 1e-3, 1000.0, math.nan, math.inf]),
        st.text(max_size=20),
        st.sampled_from(["", "cpu", "cuda:0", "tpu", "fp16", "reduce", "compressed",
                         "reliable", "panoptic_fpn", "efficientps", "sky", "sky, 2",
                         "unicorn", "12,", "\u00b2", "\u0663", "synthetic", "x" * 5000]),
        st.lists(st.integers(-5, 5), max_size=3),
        st.lists(st.floats(allow_nan=False), max_size=3),
        st.lists(st.text(max_size=5), max_size=3),
        st.lists(st.booleans(), max_size=3),
    )


def typed_value(node, name: str):
    """Values of the parameter's own type: its range and edges, its choices, its names."""
    spec = spec_of(node, name)
    current = node.get_parameter(name).value
    if isinstance(current, bool):
        return st.booleans()
    if spec is None:
        return any_value()
    kind, low, high, choices, unset = spec
    options = []
    if unset is not None:
        options.append(st.just(unset))
    if choices:
        options += [st.sampled_from(choices)] * 3 + [st.text(max_size=8)]
    elif kind is float:
        lo, hi = float(low), float(high)
        options += [st.floats(lo, hi)] * 3 + [
            st.sampled_from([lo, hi, lo - 1e-3, hi + 1e-3, hi * 2 + 1, math.nan, math.inf,
                             -math.inf])]
    elif kind is int:
        lo, hi = int(low), min(int(high), 2**63 - 1)
        options += [st.integers(lo, hi)] * 3 + [
            st.sampled_from([lo, hi, lo - 1, min(hi + 1, 2**63 - 1), -(2**63)])]
    elif name == "category_filter":
        tokens = st.sampled_from(["sky", "ground", "person", "car", "ball", "11", "2", " ",
                                  "", "Sky", "0", "999", "ball ", "traffic light", "\u0663",
                                  "\u00b2"])
        options += [st.lists(tokens, max_size=4).map(", ".join)] * 3 + [st.text(max_size=12)]
    elif name == "device":
        options.append(st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:12", " CPU ",
                                        "tpu", "cuda:x", "cuda:-1", ""]))
    elif name == "backend":
        options.append(st.sampled_from(["efficientps", "mask2former", "yolo", ""]))
    elif name == "label_set":
        options.append(st.sampled_from(["synthetic", "cityscapes", "coco_panoptic", "nope"]))
    else:
        options.append(st.text(max_size=30))
    return st.one_of(options)


_NAMES: dict[int, list[str]] = {}


@st.composite
def change(draw, node):
    names = _NAMES.setdefault(id(node), names_of(node))  # fixed: draws must not drift
    unknown = draw(st.integers(0, 9)) == 0
    name = draw(st.sampled_from(UNKNOWN if unknown else names))
    if unknown or draw(st.integers(0, 3)) == 0:
        return name, draw(any_value())  # any type: mostly the wrong one
    return name, draw(typed_value(node, name))


@st.composite
def batch(draw, node):
    items = draw(st.lists(change(node), min_size=2, max_size=4,
                          unique_by=lambda nv: nv[0]))
    return dict(items)


def apply(node, changes: dict[str, Any], atomic: bool):
    params = [Parameter(n, value=v) for n, v in changes.items()]
    try:
        if atomic:
            return node.set_parameters_atomically(params)
        (result,) = node.set_parameters(params)
        return result
    except ParameterNotDeclaredException:
        return None


def check(node, changes: dict[str, Any], atomic: bool, collect: bool = True) -> None:
    verdicts = [verdict(node, n, v) for n, v in changes.items()]
    if "category_filter" in changes and LOAD_PARAMS & set(changes):
        verdicts.append(None)  # judged against a label set changed in the same batch
    if {"track_low_score", "track_high_score"} & set(changes) and all(
            v is True for v in verdicts):
        # Valid alone, the two must also keep low <= high (the tracker's ByteTrack split).
        low, high = (float(changes.get(n, node.get_parameter(n).value))
                     for n in ("track_low_score", "track_high_score"))
        verdicts.append(low <= high)
    before = snapshot(node)
    result = apply(node, changes, atomic)
    after = snapshot(node)
    accepted = result is not None and result.successful
    if collect:
        event("accepted" if accepted else "refused")
    if not accepted:
        if result is not None:
            assert result.reason, "refused without a reason"
        assert same(after, before), ("a refused change changed something", changes)
        assert not all(v is True for v in verdicts), ("a valid change was refused", changes,
                                                      result)
        return
    assert False not in verdicts, ("an invalid change was accepted", changes)
    for name, value in changes.items():
        assert same(after["params"][name], value), (name, after["params"][name], value)
    others = {k: v for k, v in before["params"].items() if k not in changes}
    assert same({k: after["params"][k] for k in others}, others)
    want = expected_live(node, before["live"], changes)
    assert after["live"] == want, (changes, after["live"], want)


# -- the properties ------------------------------------------------------------------------------
@given(data=st.data())
@SETTINGS
def test_single_change_applies_or_changes_nothing(node, data):
    name, value = data.draw(change(node))
    check(node, {name: value}, atomic=False)


@given(data=st.data())
@settings(SETTINGS, max_examples=200)
def test_atomic_batch_applies_whole_or_not_at_all(node, data):
    check(node, data.draw(batch(node)), atomic=True)


def test_nan_and_infinities_never_reach_the_live_state(configured):
    floats = [n for n in names_of(configured)
              if configured.get_parameter(n).type_ == Parameter.Type.DOUBLE]
    assert {"max_rate", "overlay_alpha", "input_timeout", "score_threshold"} <= set(floats)
    for name in floats:
        for value in (math.nan, math.inf, -math.inf):
            check(configured, {name: value}, atomic=False, collect=False)
            assert not configured.set_parameters([Parameter(name, value=value)])[0].successful
