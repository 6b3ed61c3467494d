"""Backend ``onnx``: an exported tiny EfficientPS run by ONNX Runtime against the PyTorch model.

The graph input is 64x96. Every test frame, fitted into it, pads to 64x96 in the Predictor too
(a multiple of 32, at least 64), so PyTorch sees the graph's input: ids must agree pixel for
pixel (docs/models.md: narrower frames pad less in PyTorch and may differ near the borders).
"""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest
import torch
from helpers import LS, check, rgb, save_tiny_efficientps

from panoptic_ros.cli import main
from panoptic_ros.data.coco_panoptic import read_image, write_image
from panoptic_ros.errors import ModelLoadError
from panoptic_ros.export import METADATA_KEY, export_onnx
from panoptic_ros.inference import Predictor, PredictorConfig
from panoptic_ros.models.onnx_backend import CPU, OnnxBackend, provider_names

SIZE = (64, 96)
# Frame sizes: larger and smaller than the graph, other aspect ratios, odd sizes.
FRAMES = [rgb(90, 120, 1), rgb(64, 96, 2), rgb(48, 200, 3), rgb(37, 41, 4), rgb(200, 249, 5)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_efficientps(tmp_path_factory.mktemp("onnx_ckpt") / "tiny.pt", seed=5,
                                 meta={"input_size": list(SIZE)})


@pytest.fixture(scope="module")
def torch_predictor(checkpoint):
    return Predictor(weights=str(checkpoint), device="cpu")


@pytest.fixture(scope="module")
def onnx_file(torch_predictor, tmp_path_factory):
    return export_onnx(torch_predictor.model, tmp_path_factory.mktemp("onnx") / "tiny.onnx",
                       SIZE)


@pytest.fixture(scope="module")
def onnx_predictor(onnx_file):
    return Predictor(backend="onnx", weights=str(onnx_file), device="cpu")


def same_result(got, want) -> None:
    np.testing.assert_array_equal(got.ids, want.ids)
    assert [(s.id, s.category_id, s.area, s.bbox) for s in got.segments] == \
        [(s.id, s.category_id, s.area, s.bbox) for s in want.segments]
    assert [s.score for s in got.segments] == pytest.approx(
        [s.score for s in want.segments], abs=1e-4)


def test_backend_output_equals_pytorch(onnx_predictor, torch_predictor):
    model = onnx_predictor.model
    assert isinstance(model, OnnxBackend) and model.providers == [CPU]
    assert onnx_predictor.input_size == SIZE == torch_predictor.input_size
    assert onnx_predictor.label_set.to_dict() == LS.to_dict()
    assert onnx_predictor.live_params() == torch_predictor.live_params()
    things = 0
    for frame in FRAMES:
        got, want = onnx_predictor(frame), torch_predictor(frame)
        check(got, frame.shape[:2])
        same_result(got, want)
        things += sum(s.is_thing for s in got.segments)
    assert things > 0  # detections went through the graph and the fusion
    # A batch of different sizes: one graph run per frame, same results.
    for got, frame in zip(onnx_predictor(FRAMES[:3]), FRAMES[:3], strict=True):
        same_result(got, torch_predictor(frame))


def test_live_settings_change_the_output_and_reset(onnx_predictor, torch_predictor):
    frame = FRAMES[0]
    before = onnx_predictor(frame)
    try:
        for settings in ({"score_threshold": 1.0}, {"strategy": "panoptic_fpn"},
                         {"stuff_area": 100_000}):
            onnx_predictor.set_inference_params(**settings)
            torch_predictor.set_inference_params(**settings)
            got = onnx_predictor(frame)
            assert not np.array_equal(got.ids, before.ids), settings
            same_result(got, torch_predictor(frame))
            onnx_predictor.reset_inference_params()
            torch_predictor.reset_inference_params()
        with pytest.raises(ValueError, match="score_threshold must lie in"):
            onnx_predictor.set_inference_params(score_threshold=2.0)
        with pytest.raises(ValueError, match="mask_threshold"):
            onnx_predictor.set_inference_params(mask_threshold=0.5)
    finally:
        onnx_predictor.reset_inference_params()
        torch_predictor.reset_inference_params()
    same_result(onnx_predictor(frame), before)
    assert onnx_predictor.inference_params() == torch_predictor.inference_params()


def test_label_divisor_and_input_size_limits(onnx_file):
    predictor = Predictor(backend="onnx", weights=str(onnx_file), device="cpu",
                          label_divisor=256)
    result = predictor(FRAMES[1])
    assert result.label_divisor == 256
    assert {s.category_id for s in result.segments} == {s.id // 256 for s in result.segments}
    # A shorter side larger than the graph's input cannot run: refused, naming the way out.
    larger = Predictor(backend="onnx", weights=str(onnx_file), device="cpu", input_size=128)
    with pytest.raises(ValueError, match="takes at most 64x96.*leave input_size unset"):
        larger(FRAMES[0])


def test_provider_fallback_logs_one_line(onnx_file, caplog):
    with caplog.at_level(logging.WARNING, logger="panoptic_ros.models.onnx_backend"):
        predictor = Predictor(backend="onnx", weights=str(onnx_file), device="cpu",
                              backend_options={"providers": "cuda,cpu",
                                               "intra_op_threads": 1})
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "no CUDAExecutionProvider here" in lines[0] and f"running on {CPU}" in lines[0]
    assert predictor.model.providers == [CPU]
    options = predictor.model.session.get_session_options()
    assert options.intra_op_num_threads == 1
    check(predictor(FRAMES[0]), FRAMES[0].shape[:2])


def test_threads_follow_torch_by_default(onnx_file):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        predictor = Predictor(backend="onnx", weights=str(onnx_file), device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert predictor.model.session.get_session_options().intra_op_num_threads == 1


def test_provider_names():
    assert provider_names("cpu") == [CPU]
    assert provider_names(" TensorRT , cuda,cpu,cpu") == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", CPU]
    assert provider_names(["CUDAExecutionProvider"]) == ["CUDAExecutionProvider"]
    for bad, message in (("gpu", "unknown ONNX Runtime execution provider 'gpu'"),
                         ("", "at least one execution provider")):
        with pytest.raises(ValueError, match=message):
            provider_names(bad)


def _without_metadata(src, dst, value: str | None):
    graph = onnx.load(str(src))
    keep = [p for p in graph.metadata_props if p.key != METADATA_KEY]
    del graph.metadata_props[:]
    graph.metadata_props.extend(keep)
    if value is not None:
        entry = graph.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, value
    onnx.save(graph, str(dst))
    return dst


def test_bad_files_raise_model_load_error(onnx_file, tmp_path):
    meta = json.loads({p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}[
        METADATA_KEY])
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    cases = [
        (tmp_path / "missing.onnx", "ONNX model not found"),
        (text, "is not an ONNX model onnxruntime can load"),
        (_without_metadata(onnx_file, tmp_path / "bare.onnx", None),
         "ONNX model without panoptic_ros metadata; export it with"),
        (_without_metadata(onnx_file, tmp_path / "junk.onnx", "{nope"), "metadata is not JSON"),
        (_without_metadata(onnx_file, tmp_path / "new.onnx",
                           json.dumps({**meta, "format": "panoptic_ros.export/9"})),
         "metadata format 'panoptic_ros.export/9', this version reads"),
        (_without_metadata(onnx_file, tmp_path / "ts.onnx",
                           json.dumps({**meta, "export_format": "torchscript"})),
         "backend onnx runs ONNX exports of efficientps"),
        (_without_metadata(onnx_file, tmp_path / "nolabels.onnx",
                           json.dumps({k: v for k, v in meta.items() if k != "label_set"})),
         "metadata lacks ['label_set']"),
    ]
    for path, message in cases:
        with pytest.raises(ModelLoadError, match=message.replace("[", r"\[").replace(
                "(", r"\(")):
            Predictor(backend="onnx", weights=str(path), device="cpu")
    with pytest.raises(ModelLoadError, match="backend 'onnx' needs weights"):
        Predictor(backend="onnx", weights="demo", device="cpu")
    with pytest.raises(ModelLoadError, match="unknown onnx option"):
        Predictor(backend="onnx", weights=str(onnx_file), device="cpu",
                  backend_options={"provider": "cpu"})
    with pytest.raises(ValueError, match="backend_options .* not to efficientps"):
        PredictorConfig(backend_options={"providers": "cpu"})


def test_infer_cli_onnx_equals_pytorch(checkpoint, onnx_file, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for k, frame in enumerate(FRAMES[:3]):
        write_image(images / f"{k}.png", frame)
    out_onnx, out_torch = tmp_path / "onnx", tmp_path / "torch"
    assert main(["infer", "--backend", "onnx", "--weights", str(onnx_file), "--input",
                 str(images), "--output", str(out_onnx), "--device", "cpu",
                 "--onnx-providers", "cuda"]) == 0
    assert main(["infer", "--weights", str(checkpoint), "--input", str(images), "--output",
                 str(out_torch), "--device", "cpu"]) == 0
    assert "wrote 3 prediction(s)" in capsys.readouterr().out
    got = json.loads((out_onnx / "predictions.json").read_text())["annotations"]
    want = json.loads((out_torch / "predictions.json").read_text())["annotations"]
    assert same_table(got, want)
    pngs = sorted((out_onnx / "predictions").iterdir())
    assert len(pngs) == 3
    for png in pngs:
        np.testing.assert_array_equal(read_image(png),
                                      read_image(out_torch / "predictions" / png.name))
    assert main(["infer", "--backend", "onnx", "--weights", str(tmp_path / "none.onnx"),
                 "--input", str(images), "--output", str(tmp_path / "x")]) == 2
    assert "ONNX model not found" in capsys.readouterr().err
    assert main(["infer", "--weights", str(checkpoint), "--input", str(images), "--output",
                 str(tmp_path / "y"), "--onnx-providers", "cuda"]) == 2
    assert "--onnx-providers applies to --backend onnx" in capsys.readouterr().err


def same_table(got: list[dict], want: list[dict]) -> bool:
    """COCO annotations equal but for scores within 1e-4 (float sums in another runtime)."""
    for a, b in zip(got, want, strict=True):
        if len(a["segments_info"]) != len(b["segments_info"]):
            return False
        for s, t in zip(a["segments_info"], b["segments_info"], strict=True):
            score_s, score_t = s.get("score", 0.0), t.get("score", 0.0)
            if {**s, "score": 0} != {**t, "score": 0} or abs(score_s - score_t) > 1e-4:
                return False
    return True


@pytest.mark.ros
def test_node_with_onnx_backend_equals_the_predictor(graph, tmp_path, onnx_file, onnx_predictor):
    """The node (backend: onnx) publishes the Predictor's ids; a live setting applies."""
    from ros_harness import image_msg, running_node, scene_rgb

    from panoptic_ros.ros.conversions import image_to_array

    frame = scene_rgb(64, 80, seed=5)
    with running_node(graph, tmp_path, backend="onnx", weights=str(onnx_file), input_size=0,
                      onnx_providers="cuda,cpu", tracking=False) as (_, log):
        sent = image_msg(graph, frame)
        out = graph.send(sent)
        assert out.header == sent.header
        np.testing.assert_array_equal(image_to_array(out.ids), onnx_predictor(frame).ids)
        assert "no CUDAExecutionProvider here" in log.read_text()
        assert graph.set_params(score_threshold=1.0)[0].successful
        try:
            onnx_predictor.set_inference_params(score_threshold=1.0)
            out = graph.send(image_msg(graph, frame))
            np.testing.assert_array_equal(image_to_array(out.ids), onnx_predictor(frame).ids)
        finally:
            onnx_predictor.reset_inference_params()
