"""What only a GPU can show: device memory after release, CUDA against CPU, fp16/bf16 PQ,
exports run on CUDA (TorchScript, onnxruntime CUDA/TensorRT), exact training resume on CUDA.

Every test here is marked ``gpu`` and skips, with the reason, where ``torch.cuda.is_available()``
is false: that is the one legitimate skip. On a CUDA machine::

    PYTHONPATH=. .venv/bin/pytest -m gpu -q        # or: make gpu-check (tests + timings)

The CPU stand-ins of these findings live in test_predictor.py (release),
test_predictor_execution.py (autocast, bf16, channels-last), test_export.py (TorchScript round
trip) and test_training.py (exact resume, device rule); ``scripts/gpu_check.sh`` runs them
where there is no GPU.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from panoptic_ros.data.synthetic import SceneConfig, generate_scene, scene_rng
from panoptic_ros.evaluation.pq import PQStat, pq_results
from panoptic_ros.inference import Predictor

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="no CUDA device (torch.cuda.is_available() is false): GPU-only "
                              "check; its CPU stand-ins run in the rest of the suite"),
]

REPO = Path(__file__).resolve().parents[1]
SCENES = SceneConfig()  # 256x320, the demo model's training size
SCENE_SEED = 4242  # neither the demo model's training (1000) nor its validation (7) seed
MIN_EQUAL = 0.99  # fraction of pixels with the same id, CUDA against CPU / an export
PQ_TOLERANCE = 0.5  # PQ points (0..100)
MEMORY_TOLERANCE = 1 << 20  # bytes of torch.cuda.memory_allocated back from a release


@pytest.fixture(scope="module")
def scenes():
    """20 generated scenes (image + ground truth) the demo model did not train on."""
    return [generate_scene(scene_rng(SCENE_SEED, i), SCENES) for i in range(20)]


@pytest.fixture(scope="module")
def cuda_predictor():
    p = Predictor(weights="demo", device="cuda")
    yield p
    p.release()


def equal_fraction(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a == b).mean())


def pq_points(predictor: Predictor, scenes) -> float:
    """PQ (0..100, all classes) of the predictor on the scenes."""
    stat = PQStat()
    for scene in scenes:
        stat += pq_results(scene.result, predictor(scene.image))
    return 100.0 * stat.results(predictor.label_set)["All"]["pq"]


def prime_cuda() -> None:
    """Create the allocations the CUDA libraries keep for the process (cuBLAS/cuBLASLt
    workspaces, which the caching allocator counts) before a baseline is taken."""
    with torch.inference_mode():
        for dtype in (torch.float32, torch.float16):
            a = torch.ones(64, 64, device="cuda", dtype=dtype)
            (a @ a).sum().item()
            torch.nn.functional.linear(a, a, a[0]).sum().item()  # cuBLASLt (bias epilogue)
            x = torch.ones(1, 8, 32, 32, device="cuda", dtype=dtype)
            w = torch.ones(8, 8, 3, 3, device="cuda", dtype=dtype)
            for fmt in (torch.contiguous_format, torch.channels_last):
                torch.nn.functional.conv2d(x.to(memory_format=fmt), w.to(memory_format=fmt))
    torch.cuda.synchronize()


# -- (a) device memory back to baseline after release() ------------------------------------
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-inductor"])
def test_release_returns_gpu_memory_to_baseline(compiled):
    prime_cuda()
    gc.collect()
    torch.cuda.empty_cache()
    baseline = torch.cuda.memory_allocated()
    # b0 (23 M parameters, ~94 MB) eager; narrow (1.6 M, ~6 MB) compiled, to bound the
    # compilation time: both far above the tolerance.
    variant = "narrow" if compiled else "b0"
    p = Predictor(weights=None, variant=variant, label_set="cityscapes", device="cuda",
                  compile=compiled, compile_backend="inductor")
    frame = np.random.default_rng(0).integers(0, 256, (256, 512, 3), dtype=np.uint8)
    result = p(frame)
    assert result.ids.shape == frame.shape[:2]
    torch.cuda.synchronize()
    loaded = torch.cuda.memory_allocated()
    params = sum(t.numel() * t.element_size() for t in p.model.state_dict().values())
    assert loaded - baseline >= 0.9 * params, (baseline, loaded, params)
    p.release()
    del p, result
    after = torch.cuda.memory_allocated()
    assert after - baseline <= MEMORY_TOLERANCE, (
        f"{variant} {'compiled' if compiled else 'eager'}: {after - baseline} bytes still "
        f"allocated after release() (baseline {baseline}, loaded {loaded}, model {params})")


# -- (b) CUDA against CPU ------------------------------------------------------------------
def test_cuda_id_maps_match_cpu_on_synthetic_scenes(scenes, cuda_predictor):
    cpu = Predictor(weights="demo", device="cpu")
    fractions = [equal_fraction(cuda_predictor(s.image).ids, cpu(s.image).ids)
                 for s in scenes[:8]]
    assert min(fractions) >= MIN_EQUAL, [round(f, 4) for f in fractions]


# -- (c) reduced precision against fp32 ------------------------------------------------------
def reduced_precisions() -> list:
    # Without CUDA the module's own skip gives the reason.
    bf16_native = not torch.cuda.is_available() or torch.cuda.is_bf16_supported(
        including_emulation=False)
    return ["fp16", pytest.param("bf16", marks=pytest.mark.skipif(
        not bf16_native, reason="this GPU has no native bfloat16 (compute capability < 8.0)"))]


@pytest.mark.parametrize("precision", reduced_precisions())
def test_reduced_precision_pq_within_half_a_point_of_fp32(scenes, cuda_predictor, precision):
    reference = pq_points(cuda_predictor, scenes)
    reduced = Predictor(weights="demo", device="cuda", precision=precision)
    try:
        assert reduced.autocast_dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[
            precision]
        got = pq_points(reduced, scenes)
    finally:
        reduced.release()
    assert abs(got - reference) <= PQ_TOLERANCE, (
        f"PQ {precision} {got:.2f} vs fp32 {reference:.2f} on {len(scenes)} scenes")


# -- (d) exports running on CUDA ---------------------------------------------------------
@pytest.fixture(scope="module")
def demo_model_cuda():
    from panoptic_ros.models import DEMO_WEIGHTS
    from panoptic_ros.models.checkpoint import load_model

    return load_model(DEMO_WEIGHTS).to("cuda").eval()


def export_size(model) -> tuple[int, int]:
    from panoptic_ros.export import model_input_size

    size, why = model_input_size(model)
    assert size == (SCENES.height, SCENES.width), why
    return size


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated
def test_torchscript_exported_from_cuda_runs_on_cuda_and_matches_the_predictor(
        demo_model_cuda, scenes, cuda_predictor, tmp_path):
    """The documented path (docs/tools.md): export the model as it is, here on CUDA; load
    the file on CUDA, run it on CUDA inputs, fuse on the device."""
    from panoptic_ros.export import (
        OUTPUT_NAMES,
        export_torchscript,
        panoptic_from_raw,
        prepare_image,
        read_metadata,
    )

    size = export_size(demo_model_cuda)
    path = export_torchscript(demo_model_cuda, tmp_path / "demo.ts", size)
    meta = read_metadata(path)
    loaded = torch.jit.load(str(path), map_location="cuda")
    fractions = []
    for scene in scenes[:4]:
        images, valid = prepare_image(scene.image, meta)
        with torch.no_grad():
            outputs = loaded(images.to("cuda"), torch.tensor(valid, device="cuda"))
        assert len(outputs) == len(OUTPUT_NAMES)
        assert all(o.device.type == "cuda" for o in outputs), [o.device for o in outputs]
        result = panoptic_from_raw(outputs, meta, valid, scene.image.shape[:2])
        fractions.append(equal_fraction(result.ids, cuda_predictor(scene.image).ids))
    assert min(fractions) >= MIN_EQUAL, [round(f, 4) for f in fractions]


PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript-based exporter
@pytest.mark.parametrize("provider", PROVIDERS)
def test_onnx_runtime_gpu_provider_matches_the_predictor(
        provider, demo_model_cuda, scenes, cuda_predictor, tmp_path):
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider not in available:
        pytest.skip(f"onnxruntime {ort.__version__} has no {provider} (available: "
                    f"{', '.join(available)}; install onnxruntime-gpu for CUDA/TensorRT)")
    from panoptic_ros.export import export_model, panoptic_from_raw, prepare_image, read_metadata

    size = export_size(demo_model_cuda)
    # TensorRT's parser needs the shape arithmetic folded (docs/tools.md).
    path = export_model(demo_model_cuda, tmp_path / "demo.onnx", "onnx", size, fold=True)
    meta = read_metadata(path)
    session = ort.InferenceSession(str(path), providers=[provider, "CPUExecutionProvider"])
    assert session.get_providers()[0] == provider, (
        f"{provider} is listed but the session fell back to {session.get_providers()}")
    fractions = []
    for scene in scenes[:4]:
        images, valid = prepare_image(scene.image, meta)
        outputs = session.run(None, {"images": images.numpy(),
                                     "image_size": np.array(valid, np.int64)})
        result = panoptic_from_raw(outputs, meta, valid, scene.image.shape[:2])
        fractions.append(equal_fraction(result.ids, cuda_predictor(scene.image).ids))
    assert min(fractions) >= MIN_EQUAL, [round(f, 4) for f in fractions]


# -- (e) exact training resume on CUDA, deterministic mode ---------------------------------
RESUME_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    from pathlib import Path

    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    from panoptic_ros.models.checkpoint import load_checkpoint_file
    from panoptic_ros.training.config import TrainConfig
    from panoptic_ros.training.trainer import Trainer

    tiny, root = json.loads(sys.argv[1]), Path(sys.argv[2])

    def config(name, steps):
        return TrainConfig.from_dict({**tiny, "max_steps": steps,
                                      "output_dir": str(root / name / "run")})

    def weights(name):
        return load_checkpoint_file(root / name / "run" / "last.pt")["state_dict"]

    def differing(a, b):
        return [k for k, v in a.items()
                if not torch.allclose(v.float(), b[k].float(), atol=1e-6)]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(config("a", 4), progress=False).run()
        Trainer(config("c", 4), progress=False).run()  # tells non-determinism from resume
        Trainer(config("b", 2), progress=False).run()
        resumed = Trainer(config("b", 4), progress=False, resume=root / "b" / "run" / "last.pt")
        start = resumed.step
        resumed.run()
    nondeterministic = sorted({str(w.message).split(" does not have")[0] for w in caught
                               if "deterministic implementation" in str(w.message)})
    print("RESULT " + json.dumps({
        "device": str(resumed.device), "amp": str(resumed.amp_dtype), "resumed_at": start,
        "repeat_differs": differing(weights("a"), weights("c")),
        "resume_differs": differing(weights("a"), weights("b")),
        "nondeterministic_ops": nondeterministic,
    }))
""")

TINY = {  # test_training.py's TINY, on CUDA
    "model": {"variant": "narrow"},
    "label_set": "synthetic",
    "train": {"kind": "synthetic", "length": 8, "seed": 1000, "height": 64, "width": 96},
    "val": {"kind": "synthetic", "length": 2, "seed": 7, "height": 64, "width": 96},
    "augment": {"scale": [1.0, 1.0], "flip": False, "jitter": False},
    "optim": {"optimizer": "adamw", "lr": 0.002, "warmup_steps": 0, "schedule": "constant"},
    "batch_size": 2,
    "num_workers": 0,
    "checkpoint_every": 0,
    "val_every": 0,
    "device": "cuda",
}


def test_checkpoint_resume_is_exact_on_cuda_in_deterministic_mode(tmp_path):
    """test_training.py's exact-resume test on CUDA, in a fresh process: the cuBLAS workspace
    setting must be in the environment before CUDA initialises. Deterministic algorithms are
    on with ``warn_only``, so that an operation without a deterministic CUDA kernel is named
    in the failure instead of stopping the run; a third, uninterrupted run tells a
    non-deterministic run from an inexact resume."""
    env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, json.dumps(TINY), str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["device"].startswith("cuda") and out["resumed_at"] == 2, out
    assert not out["repeat_differs"], (
        f"two uninterrupted CUDA runs differ in {len(out['repeat_differs'])} tensors (e.g. "
        f"{out['repeat_differs'][:3]}); ops without a deterministic kernel: "
        f"{out['nondeterministic_ops']}; autocast {out['amp']}")
    assert not out["resume_differs"], (
        f"resume is not exact on CUDA although runs repeat: {len(out['resume_differs'])} "
        f"tensors differ (e.g. {out['resume_differs'][:3]}); autocast {out['amp']}")
