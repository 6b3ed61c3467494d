"""How the Predictor runs the network, pinned down on the CPU where it is observable: autocast
dtype per device and precision, fp32 box geometry under autocast, mask-head bucketing,
channels-last input, bf16 runs, torch.compile wiring, strided frames."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from helpers import check, rgb, save_tiny_efficientps

from panoptic_ros.inference import Predictor, autocast_dtype

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_efficientps(tmp_path_factory.mktemp("fast") / "narrow.pt", seed=11)


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
