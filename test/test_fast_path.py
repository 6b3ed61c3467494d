"""The Predictor's fast path, pinned down on the CPU where it is observable: autocast dtype per
device and precision, channels-last network input, bf16 runs, torch.compile wiring, strided
frames; and the pretrained-backend options from PredictorConfig and ``panoptic-ros infer``."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from test_predictor import DETECT, LS, check, rgb

from panoptic_ros.categories import coco_panoptic
from panoptic_ros.cli import main
from panoptic_ros.data.coco_panoptic import CocoPanopticDataset, write_image
from panoptic_ros.errors import ModelLoadError
from panoptic_ros.inference import Predictor, PredictorConfig, autocast_dtype
from panoptic_ros.models.checkpoint import save_checkpoint
from panoptic_ros.models.efficientps import EfficientPSConfig
from panoptic_ros.models.registry import build_model

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(11)
    model = build_model("efficientps", EfficientPSConfig.from_dict(DETECT), LS)
    return save_checkpoint(tmp_path_factory.mktemp("fast") / "narrow.pt", model)


class Recorder:
    """Records what a module receives and returns during the next calls (a forward hook)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        self.inputs.append(args[0])
        self.outputs.append(output)

    def close(self) -> None:
        self._handle.remove()


# -- autocast dtype per device and precision ------------------------------------------------
def test_autocast_dtype_per_device_and_precision(caplog):
    assert autocast_dtype(CPU, "fp32") is None
    assert autocast_dtype(CPU, "bf16") is torch.bfloat16
    with caplog.at_level(logging.WARNING, logger="panoptic_ros.inference"):
        assert autocast_dtype(CPU, "fp16") is None  # no fast fp16 kernels on a CPU
    assert "precision fp16 on cpu" in caplog.text and "running fp32" in caplog.text
    assert autocast_dtype(CUDA, "fp32") is None
    assert autocast_dtype(CUDA, "fp16") is torch.float16
    assert autocast_dtype(CUDA, "bf16", cuda_bf16=True) is torch.bfloat16
    with pytest.raises(ValueError, match=r"bf16 needs a GPU with native bfloat16 .*use fp16"):
        autocast_dtype(CUDA, "bf16", cuda_bf16=False)  # Volta / Turing, e.g. Jetson Xavier
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype(CPU, "int8")


def test_bf16_on_cpu_runs_the_network_in_bf16_at_exact_size(checkpoint):
    predictor = Predictor(weights=str(checkpoint), device="cpu", precision="bf16")
    assert predictor.autocast_dtype is torch.bfloat16
    head = Recorder(predictor.model.semantic_head)
    result = predictor(rgb(61, 83, 8))
    head.close()
    assert head.outputs[0].dtype == torch.bfloat16  # the network really ran in bf16
    check(result, (61, 83))  # and the fused map is valid, at the input's exact size
    assert result.segments and any(s.is_thing for s in result.segments)
    # fp16 asked for on the CPU runs fp32.
    fp16 = Predictor(weights=str(checkpoint), device="cpu", precision="fp16")
    assert fp16.autocast_dtype is None
    head = Recorder(fp16.model.semantic_head)
    fp16(rgb(32, 40))
    head.close()
    assert head.outputs[0].dtype == torch.float32


def test_box_geometry_runs_in_fp32_under_autocast(checkpoint):
    """GPU readiness 6: only the dense network runs in bf16/fp16; anchors, proposals, boxes and
    mask logits stay fp32 (bf16 would snap coordinates between 1024 and 2048 px to 8 px)."""
    predictor = Predictor(weights=str(checkpoint), device="cpu", precision="bf16")
    heads = Recorder(predictor.model.roi_heads)
    mask_head = Recorder(predictor.model.roi_heads.mask_head)
    dense = Recorder(predictor.model.semantic_head)
    predictor(rgb(61, 83, 8))
    for r in (heads, mask_head, dense):
        r.close()
    assert dense.outputs[0].dtype == torch.bfloat16
    detections = heads.outputs[0][0]
    assert detections and all(d["boxes"].dtype == torch.float32 for d in detections)
    assert all(d["mask_logits"].dtype == torch.float32 for d in detections)
    assert mask_head.inputs[0].dtype == torch.float32


def test_mask_head_sees_few_shapes_with_bucketing(checkpoint):
    """GPU readiness 7: with cuDNN autotuning every new detection count K is a new shape to
    tune; bucketing pads the mask head's batch to powers of two, results unchanged."""
    from panoptic_ros.inference import cudnn_autotuning
    from panoptic_ros.models.efficientps.instance_head import bucket_size

    assert [bucket_size(k) for k in (0, 1, 2, 3, 5, 8, 9, 100)] == [1, 1, 2, 4, 8, 8, 16, 128]
    plain = Predictor(weights=str(checkpoint), device="cpu")
    bucketed = Predictor(weights=str(checkpoint), device="cpu")
    bucketed.model.roi_heads.bucket_detections = True
    hook = Recorder(bucketed.model.roi_heads.mask_head)
    for seed in range(8):
        for k in (1, 2, 3, 5, 6):
            bucketed.model.roi_heads.detections_per_img = k
            plain.model.roi_heads.detections_per_img = k
            image = rgb(64, 80, seed)
            got, want = bucketed(image), plain(image)
            np.testing.assert_array_equal(got.ids, want.ids)
            assert got.segments == want.segments
    hook.close()
    shapes = {tuple(x.shape) for x in hook.inputs}
    assert {s[0] for s in shapes} <= {1, 2, 4, 8} and len(shapes) <= 4
    # Autotuning is scoped to the calls (on CUDA), never switched on for the whole process.
    before = torch.backends.cudnn.benchmark
    with cudnn_autotuning(torch.device("cuda")):
        assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.benchmark == before


# -- channels-last -----------------------------------------------------------------------
def test_channels_last_network_input_and_weights(checkpoint):
    image = rgb(70, 90, 9)
    runs = {}
    for channels_last in (True, False):
        predictor = Predictor(weights=str(checkpoint), device="cpu",
                              channels_last=channels_last)
        assert predictor.channels_last is channels_last
        backbone = Recorder(predictor.model.backbone)
        head = Recorder(predictor.model.semantic_head)
        result = predictor(image)
        backbone.close()
        head.close()
        x = backbone.inputs[0]
        assert x.dim() == 4 and x.dtype == torch.float32
        assert x.is_contiguous(memory_format=torch.channels_last) is channels_last
        assert x.is_contiguous() is not channels_last
        stem = predictor.model.backbone.features[0][0].weight
        assert stem.is_contiguous(memory_format=torch.channels_last) is channels_last
        runs[channels_last] = (head.outputs[0], result)
    # Same network, same numbers up to float rounding.
    torch.testing.assert_close(runs[True][0], runs[False][0], atol=1e-4, rtol=1e-4)
    assert runs[True][1].ids.shape == runs[False][1].ids.shape == (70, 90)
    # Default: channels-last on CUDA only.
    assert Predictor(weights=str(checkpoint), device="cpu").channels_last is False


def test_strided_frame_equals_its_contiguous_copy(checkpoint):
    predictor = Predictor(weights=str(checkpoint), device="cpu")
    bgr = rgb(48, 64, 10)[..., ::-1]  # a BGR camera frame viewed as RGB: negative strides
    assert not bgr.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(predictor(bgr).ids,
                                  predictor(np.ascontiguousarray(bgr)).ids)


# -- torch.compile ----------------------------------------------------------------------
def test_compile_flag_compiles_the_dense_part(checkpoint):
    """Wiring, with the ``eager`` backend: dynamo traces and runs the dense part (seconds);
    inductor code generation is left to the slow test below."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    plain = Predictor(weights=str(checkpoint), device="cpu")
    compiled = Predictor(weights=str(checkpoint), device="cpu", compile=True,
                         compile_backend="eager")
    model = compiled.model
    assert getattr(model._compiled_dense, "_torchdynamo_orig_callable", None) == model._dense
    image = rgb(64, 96, 12)
    result = compiled(image)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo captured the network
    expected = plain(image)
    np.testing.assert_array_equal(result.ids, expected.ids)
    assert result.segments == expected.segments
    torch._dynamo.reset()


@pytest.mark.release  # inductor compiles the narrow network in ~150 s on the 2-core CPU
def test_compile_inductor_matches_eager(checkpoint):
    torch._dynamo.reset()
    plain = Predictor(weights=str(checkpoint), device="cpu")
    compiled = Predictor(weights=str(checkpoint), device="cpu", compile=True)
    image = rgb(64, 96, 13)
    head_plain = Recorder(plain.model.semantic_head)
    plain(image)
    head_plain.close()
    features, semantic = compiled.model.dense(
        compiled.model.preprocess([torch.from_numpy(image).permute(2, 0, 1)])[0]
    )
    torch.testing.assert_close(semantic, head_plain.outputs[0], atol=1e-4, rtol=1e-4)
    assert compiled(image).ids.shape == (64, 96)
    torch._dynamo.reset()


# -- pretrained-backend options ----------------------------------------------------------
def test_pretrained_options_are_mapped_in_one_place():
    config = PredictorConfig(backend="mask2former", weights="org/model", allow_download=True,
                             cache_dir="/cache", pretrained_label_set="cityscapes",
                             inference={"rules": "transformers", "score_threshold": 0.5})
    assert config.model_spec() == {"backend": "mask2former", "weights": "org/model",
                                   "allow_download": True, "cache_dir": "/cache",
                                   "label_set": "cityscapes"}
    assert config.inference_overrides() == {"score_threshold": 0.5, "rules": "transformers"}
    # Defaults are left out, so a registered backend that does not know them still builds.
    assert PredictorConfig(backend="other", weights="w").model_spec() == {
        "backend": "other", "weights": "w"}
    with pytest.raises(ValueError, match=r"\['allow_download'\] apply to pretrained"):
        PredictorConfig(allow_download=True)


def test_predictor_passes_pretrained_options(tiny_dir, tmp_path, monkeypatch):
    predictor = Predictor(backend="mask2former", weights=str(tiny_dir), device="cpu",
                          pretrained_label_set="custom",
                          inference={"rules": "transformers", "score_threshold": 0.0})
    assert predictor.label_set.name.startswith("custom")  # not the COCO table
    assert predictor.inference_params()["rules"] == "transformers"
    assert predictor.inference_params()["score_threshold"] == 0.0
    result = predictor(rgb(50, 70, 14))
    assert result.ids.shape == (50, 70)
    assert {s.category_id for s in result.segments} <= set(predictor.label_set.ids.tolist())
    # cache_dir reaches the loader: a hub id missing from that cache fails offline, naming it.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        Predictor(backend="mask2former", weights="nonexistent-org/nonexistent-model",
                  device="cpu", cache_dir=str(tmp_path))
    assert str(tmp_path) in str(err.value) and "allow_download" in str(err.value)


def test_infer_cli_with_mask2former_backend(tiny_dir, tmp_path):
    images = {"11": rgb(60, 90, 15), "12": rgb(80, 64, 16)}
    src = tmp_path / "in"
    for stem, img in images.items():
        write_image(src / f"{stem}.png", img)
    out = tmp_path / "out"
    rc = main(["infer", "--backend", "mask2former", "--weights", str(tiny_dir),
               "--input", str(src), "--output", str(out), "--device", "cpu",
               "--label-set", "coco", "--rules", "mask2former", "--score-threshold", "0"])
    assert rc == 0
    data = json.loads((out / "predictions.json").read_text())
    coco = coco_panoptic()
    assert [c["id"] for c in data["categories"]] == coco.ids.tolist()
    assert sorted(a["image_id"] for a in data["annotations"]) == [11, 12]
    dataset = CocoPanopticDataset(out / "predictions.json", png_dir=out / "predictions",
                                  label_set=coco)
    predictor = Predictor(backend="mask2former", weights=str(tiny_dir), device="cpu",
                          pretrained_label_set="coco", inference={"score_threshold": 0.0})
    segments = 0
    for stem, image in images.items():
        expected = predictor(image)
        back = dataset.load_result(int(stem))
        assert back.ids.shape == image.shape[:2]
        np.testing.assert_array_equal(back.ids, expected.ids)
        assert [(s.id, s.area) for s in back.segments] == \
            [(s.id, s.area) for s in expected.segments]
        segments += len(back.segments)
    assert segments > 0  # the random model's queries passed the zero score threshold


def test_infer_cli_rejects_pretrained_options_for_efficientps(tmp_path, capsys):
    write_image(tmp_path / "a.png", rgb(8, 8))
    rc = main(["infer", "--input", str(tmp_path / "a.png"), "--output", str(tmp_path / "o"),
               "--device", "cpu", "--allow-download"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "['allow_download'] apply to pretrained backends (mask2former)" in err
