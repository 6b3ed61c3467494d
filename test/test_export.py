"""ONNX / TorchScript export of EfficientPS: the exported graph against PyTorch (raw outputs),
host-side fusion of its outputs against the Predictor, the GroupNorm rewrite, the CLI."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx  # noqa: E402 - test extra: a broken install fails, not skips
import onnxruntime as ort  # noqa: E402
import pytest
import torch
from helpers import LS, rgb

from panoptic_ros.cli import main
from panoptic_ros.data.synthetic import SceneConfig, generate_scene, scene_rng
from panoptic_ros.export import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    RawOutputs,
    TraceableGroupNorm,
    export_onnx,
    export_torchscript,
    load_torchscript,
    model_input_size,
    panoptic_from_raw,
    prepare_image,
    read_metadata,
)
from panoptic_ros.inference import Predictor
from panoptic_ros.models.checkpoint import save_checkpoint
from panoptic_ros.models.efficientps import EfficientPSConfig
from panoptic_ros.models.registry import build_model

SIZE = (64, 96)
# Camera frames whose fitted size pads to SIZE, as the Predictor pads them: (64, 85), (64, 85)
# and (64, 96) inside the 64x96 input.
FRAMES = [rgb(90, 120, 1), rgb(60, 80, 2), rgb(50, 75, 3)]


def graph_inputs(frame: np.ndarray, metadata) -> tuple[torch.Tensor, torch.Tensor]:
    images, valid = prepare_image(frame, metadata)
    return images, torch.tensor(valid)


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def model():
    """Random narrow EfficientPS whose detection score threshold is the lowest of the frames'
    best scores: one frame has no detection at all, the others some (random weights score
    every class alike)."""
    torch.manual_seed(3)
    config = EfficientPSConfig.from_dict({
        "variant": "narrow", "rpn_pre_nms_test": 100, "rpn_post_nms_test": 10,
        "detection_score_threshold": 0.0, "detections_per_image": 100,
        "fusion": {"score_threshold": 0.0},
    })
    model = build_model("efficientps", config, LS).eval()
    meta = {"config": config.to_dict(), "input_size": list(SIZE)}
    raw = RawOutputs(model, SIZE)
    with torch.no_grad():
        scores = [raw(*graph_inputs(f, meta))[2] for f in FRAMES]
    # Halfway between the lowest best score and the next score above it: no score sits near
    # the threshold (onnxruntime's scores differ from PyTorch's in the 8th digit).
    lowest = min(float(s.max()) for s in scores)
    above = torch.cat(scores)
    threshold = (lowest + float(above[above > lowest].min())) / 2
    model.config = dataclasses.replace(config, detection_score_threshold=threshold)
    model.roi_heads.score_thresh = threshold
    return model


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("export") / "narrow.pt", model,
                           meta={"input_size": list(SIZE)})


@pytest.fixture(scope="module")
def onnx_file(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", SIZE)


@pytest.fixture(scope="module")
def torchscript_file(model, tmp_path_factory):
    return export_torchscript(model, tmp_path_factory.mktemp("ts") / "model.pt", SIZE)


def test_onnx_raw_outputs_match_pytorch(model, onnx_file):
    graph = onnx.load(str(onnx_file))
    assert [i.name for i in graph.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in graph.graph.output] == list(OUTPUT_NAMES)
    assert graph.opset_import[0].version == 17
    meta = read_metadata(onnx_file)
    assert meta["input_size"] == list(SIZE) and meta["export_format"] == "onnx"
    assert meta["label_set"] == LS.to_dict() and meta["config"] == model.config.to_dict()
    raw = RawOutputs(model, SIZE)
    runner = session(onnx_file)
    counts = []
    for frame in FRAMES:
        images, valid = graph_inputs(frame, meta)
        with torch.no_grad():
            want = raw(images, valid)
        got = runner.run(None, {"images": images.numpy(), "image_size": valid.numpy()})
        semantic, boxes, scores, labels, masks = (torch.from_numpy(g) for g in got)
        assert semantic.shape == (1, len(LS), *SIZE)
        torch.testing.assert_close(semantic, want[0], atol=1e-4, rtol=0)
        assert labels.dtype == torch.int64 and torch.equal(labels, want[3])
        torch.testing.assert_close(boxes, want[1], atol=1e-3, rtol=0)
        torch.testing.assert_close(scores, want[2], atol=1e-5, rtol=0)
        torch.testing.assert_close(masks, want[4], atol=1e-3, rtol=0)
        assert bool((scores[:-1] >= scores[1:]).all())  # descending
        assert bool((boxes[:, 2] <= valid[1]).all())  # clipped to the image, not the padding
        counts.append(len(scores))
    # The detection count is dynamic in the graph, zero included (the mask head's GroupNorm).
    assert 0 in counts and len(set(counts)) > 2


def check_same(result, expected) -> None:
    np.testing.assert_array_equal(result.ids, expected.ids)
    assert [(s.id, s.area, s.bbox) for s in result.segments] == \
        [(s.id, s.area, s.bbox) for s in expected.segments]
    assert [s.score for s in result.segments] == pytest.approx(
        [s.score for s in expected.segments], abs=1e-4)


def test_onnx_outputs_fused_on_the_host_equal_the_predictor(model, checkpoint, onnx_file):
    meta = read_metadata(onnx_file)
    predictor = Predictor(weights=str(checkpoint), device="cpu")
    assert predictor.input_size == SIZE
    runner = session(onnx_file)
    things = 0
    for frame in FRAMES:
        images, valid = graph_inputs(frame, meta)
        outputs = runner.run(None, {"images": images.numpy(), "image_size": valid.numpy()})
        result = panoptic_from_raw(outputs, meta, valid.tolist(), frame.shape[:2])
        expected = predictor(frame)
        check_same(result, expected)
        assert bool((outputs[2] > model.config.detection_score_threshold).all())
        things += sum(s.is_thing for s in result.segments)
    assert things > 0


def test_torchscript_round_trip(model, checkpoint, torchscript_file):
    meta = read_metadata(torchscript_file)
    assert meta["export_format"] == "torchscript" and meta["input_size"] == list(SIZE)
    with pytest.warns(FutureWarning):  # torch.jit is deprecated in favour of torch.export
        loaded = torch.jit.load(str(torchscript_file))
    raw = RawOutputs(model, SIZE)
    predictor = Predictor(weights=str(checkpoint), device="cpu")
    for frame in FRAMES[:2]:
        images, valid = graph_inputs(frame, meta)
        with torch.no_grad():
            got, want = loaded(images, valid), raw(images, valid)
        assert len(got) == len(OUTPUT_NAMES)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-6, rtol=0)
        check_same(panoptic_from_raw(got, meta, valid.tolist(), frame.shape[:2]),
                   predictor(frame))


def test_torchscript_records_its_device_and_refuses_another(torchscript_file):
    """GPU readiness 2: a CPU trace keeps CPU device constants (torchvision's anchors, RPN and
    RoI code), so it cannot simply be moved to a GPU; the file says where it was traced and
    the loader refuses another device with the way out (export with --device cuda)."""
    assert read_metadata(torchscript_file)["device"] == "cpu"
    with pytest.warns(FutureWarning):
        graph = str(torch.jit.load(str(torchscript_file)).inlined_graph)
    assert 'value="cpu"' in graph  # the finding: device constants baked into the trace
    with pytest.raises(ValueError, match="traced on cpu.*--device cuda"):
        load_torchscript(torchscript_file, "cuda")
    with pytest.warns(FutureWarning):
        assert load_torchscript(torchscript_file, "cpu") is not None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript-based exporter
def test_traceable_group_norm_matches_and_exports_an_empty_batch(tmp_path):
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 12)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    ours = TraceableGroupNorm(norm)
    x = torch.randn(3, 12, 5, 7) * 3 + 1
    torch.testing.assert_close(ours(x), norm(x), atol=1e-5, rtol=1e-5)
    path = tmp_path / "gn.onnx"
    torch.onnx.export(ours, (x,), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}})
    runner = session(path)
    empty = runner.run(None, {"x": np.zeros((0, 12, 5, 7), np.float32)})[0]
    assert empty.shape == (0, 12, 5, 7)
    two = runner.run(None, {"x": x[:2].numpy()})[0]
    np.testing.assert_allclose(two, norm(x[:2]).detach().numpy(), atol=1e-5)


def test_export_cli(model, checkpoint, tmp_path, capsys):
    out = tmp_path / "cli.onnx"
    rc = main(["export", "--format", "onnx", "--weights", str(checkpoint), "--output", str(out),
               "--opset", "11", "--fold-constants"])
    assert rc == 0 and f"wrote {out} (onnx, input 1x3x64x96" in capsys.readouterr().out
    graph = onnx.load(str(out))
    assert [o.version for o in graph.opset_import] == [11]
    assert all(node.domain == "" for node in graph.graph.node)
    # Folded: the RPN's top-k counts are constants, as TensorRT's parser requires.
    initialisers = {i.name for i in graph.graph.initializer}
    topk = [n for n in graph.graph.node if n.op_type == "TopK"]
    assert len(topk) == 4 and all(n.input[1] in initialisers for n in topk)
    meta = read_metadata(out)
    assert meta["input_size"] == [64, 96]  # the checkpoint's input size
    raw = RawOutputs(model, SIZE)
    with torch.no_grad():  # the frame with the most detections
        inputs, want = max(((graph_inputs(f, meta), raw(*graph_inputs(f, meta)))
                            for f in FRAMES), key=lambda pair: len(pair[1][2]))
    images, valid = inputs
    got = session(out).run(None, {"images": images.numpy(), "image_size": valid.numpy()})
    torch.testing.assert_close(torch.from_numpy(got[0]), want[0], atol=1e-4, rtol=0)
    assert len(got[2]) > 0
    torch.testing.assert_close(torch.from_numpy(got[2]), want[2], atol=1e-5, rtol=0)
    ts = tmp_path / "cli.pt"
    rc = main(["export", "--format", "torchscript", "--weights", str(checkpoint),
               "--output", str(ts), "--input-size", "32x64"])
    assert rc == 0 and read_metadata(ts)["input_size"] == [32, 64]


def test_export_cli_uses_the_demo_models_own_input_size(tmp_path, capsys):
    predictor = Predictor(weights="demo", device="cpu")
    demo = predictor.model
    meta = demo.checkpoint_meta  # the demo model's input size: the scenes it was trained on
    train = meta["train_config"]["train"]
    size = tuple(meta.get("input_size") or (train["height"], train["width"]))
    assert size == (256, 320)
    out = tmp_path / "demo.onnx"
    rc = main(["export", "--format", "onnx", "--output", str(out)])  # --weights demo, no size
    printed = capsys.readouterr().out
    assert rc == 0 and f"wrote {out} (onnx, input 1x3x256x320, narrow" in printed
    graph = onnx.load(str(out))
    images_input = graph.graph.input[0]
    assert images_input.name == "images"
    assert [d.dim_value for d in images_input.type.tensor_type.shape.dim] == [1, 3, *size]
    exported = read_metadata(out)
    assert exported["input_size"] == list(size)
    # A scene the size of the input: the graph's raw outputs are PyTorch's, and fused on the
    # host they are the Predictor's result.
    frame = generate_scene(scene_rng(31, 1), SceneConfig(*size)).image
    images, valid = graph_inputs(frame, exported)
    with torch.no_grad():
        want = RawOutputs(demo, size)(images, valid)
    got = session(out).run(None, {"images": images.numpy(), "image_size": valid.numpy()})
    semantic, boxes, scores, labels, masks = (torch.from_numpy(g) for g in got)
    assert semantic.shape == (1, len(demo.label_set), *size) and len(scores) > 0
    torch.testing.assert_close(semantic, want[0], atol=1e-4, rtol=0)
    assert torch.equal(labels, want[3])
    torch.testing.assert_close(boxes, want[1], atol=1e-3, rtol=0)
    torch.testing.assert_close(scores, want[2], atol=1e-5, rtol=0)
    torch.testing.assert_close(masks, want[4], atol=1e-3, rtol=0)
    check_same(panoptic_from_raw(got, exported, valid.tolist(), frame.shape[:2]),
               predictor(frame))


def test_model_input_size_reads_the_checkpoint_meta():
    model = torch.nn.Module()
    scenes = {"train": {"kind": "synthetic", "height": 128, "width": 160},
              "val": {"kind": "synthetic", "height": 96, "width": 128}}
    for meta, size, source in [
        ({"input_size": [64, 96], "train_config": scenes}, (64, 96), "checkpoint's input_size"),
        ({"train_config": scenes}, (128, 160), "checkpoint's train scenes"),
        ({"train_config": {"train": {"kind": "coco", "height": 1, "width": 1},
                           "val": scenes["val"]}}, (96, 128), "checkpoint's val scenes"),
        ({"input_size": 64, "train_config": scenes}, None, "a shorter side (64), not the fixed"),
        ({"train_config": {"train": {"kind": "coco"}}}, None, "records no HxW input size"),
        ({}, None, "records no HxW input size"),
    ]:
        model.checkpoint_meta = meta
        got, why = model_input_size(model)
        assert got == size and source in why


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input-size", "60x90"], "input size must be multiples of 32, got 60x90 (try 64x96)"),
        (["--input-size", "64"], "--input-size must be HxW for an export"),
        (["--input-size", "64x96", "--opset", "9"], "--opset must lie in 11..20, got 9"),
        (["--weights", "{tmp}/none.pt"], "cannot load the model: checkpoint not found"),
        ([], "records no HxW input size: give --input-size HxW"),
        (["--format", "torchscript", "--input-size", "64x96", "--fold-constants"],
         "--fold-constants applies to --format onnx"),
    ],
)
def test_export_cli_errors_exit_2_with_one_line(model, tmp_path, capsys, args, message):
    plain = save_checkpoint(tmp_path / "plain.pt", model)  # no input size in its meta
    rc = main(["export", "--format", "onnx", "--output", str(tmp_path / "x.onnx"),
               "--weights", str(plain), *(a.format(tmp=tmp_path) for a in args)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("panoptic-ros export: error: ") and message in err
    assert not (tmp_path / "x.onnx").exists()
