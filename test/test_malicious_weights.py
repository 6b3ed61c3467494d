"""Malicious weights files fail to load with a clear ModelLoadError, and no code from them runs.

Each payload creates a marker file when unpickled (or imported). A control first loads it the
unsafe way in a subprocess and checks that the marker appears, so no test here can pass
because the payload is inert; then the marker is removed, the file goes through the package's
loading path, and the marker must stay absent.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

from panoptic_ros.errors import ModelLoadError
from panoptic_ros.inference import Predictor
from panoptic_ros.models import DEMO_WEIGHTS

pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")

SAFE_LOAD_MESSAGE = "Nothing in it was run"


class TouchOnUnpickle:
    """Unpickling this calls ``marker.touch()``: the stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (self.marker.touch, ())


def run_unsafely(code: str, marker: Path) -> None:
    """Control: ``code`` (plain pickle / torch.load(weights_only=False) ...) runs the payload."""
    assert not marker.exists()
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert marker.exists(), f"payload inert, the test would be vacuous:\n{proc.stderr[-2000:]}"
    marker.unlink()


def trojaned_checkpoint(path: Path, marker: Path) -> Path:
    """The bundled demo checkpoint with a code-running object slipped into its metadata."""
    data = torch.load(DEMO_WEIGHTS, map_location="cpu", weights_only=True)
    data["meta"] = {**data.get("meta", {}), "note": TouchOnUnpickle(marker)}
    torch.save(data, path)
    return path


def tiny_mask2former_dir(path: Path) -> Path:
    """A tiny random Mask2Former folder holding only its config files (no weights yet)."""
    from helpers import save_tiny_mask2former

    save_tiny_mask2former(path)
    for weights in path.glob("*.safetensors"):
        weights.unlink()
    return path


# -- files given to the Predictor ---------------------------------------------------------
def test_plain_pickle_as_weights(tmp_path):
    marker, weights = tmp_path / "MARKER", tmp_path / "weights.pt"
    weights.write_bytes(pickle.dumps({"state_dict": TouchOnUnpickle(marker)}))
    run_unsafely(f"import pickle; pickle.load(open({str(weights)!r}, 'rb'))", marker)
    with pytest.raises(ModelLoadError, match=SAFE_LOAD_MESSAGE) as err:
        Predictor(weights=str(weights), device="cpu")
    assert str(weights) in str(err.value)
    assert "weights_only=False" not in str(err.value)  # torch's advice to run it anyway
    assert not marker.exists()


def test_torch_save_payload_as_weights(tmp_path):
    marker = tmp_path / "MARKER"
    weights = trojaned_checkpoint(tmp_path / "model.pt", marker)
    run_unsafely(f"import torch; torch.load({str(weights)!r}, weights_only=False)", marker)
    with pytest.raises(ModelLoadError, match=SAFE_LOAD_MESSAGE) as err:
        Predictor(weights=str(weights), device="cpu")
    assert str(weights) in str(err.value) and "getattr" in str(err.value)
    assert not marker.exists()


def test_hugging_face_folder_with_malicious_pytorch_model_bin(tmp_path):
    folder = tiny_mask2former_dir(tmp_path / "model")
    marker = tmp_path / "MARKER"
    torch.save(
        {"model.pixel_level_module.decoder.mask_projection.bias": torch.zeros(32),
         "evil": TouchOnUnpickle(marker)},
        folder / "pytorch_model.bin",
    )
    run_unsafely(
        f"import torch; torch.load({str(folder / 'pytorch_model.bin')!r}, weights_only=False)",
        marker,
    )
    with pytest.raises(ModelLoadError, match=SAFE_LOAD_MESSAGE) as err:
        Predictor(backend="mask2former", weights=str(folder), device="cpu")
    assert "pytorch_model.bin" in str(err.value)
    assert not marker.exists()


def test_hugging_face_folder_with_custom_code(tmp_path, capsys):
    """config.json's auto_map points at Python in the folder: refused, and nobody is asked."""
    folder = tiny_mask2former_dir(tmp_path / "model")
    marker = tmp_path / "MARKER"
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil_seg", auto_map={"AutoConfig": "evil.EvilConfig"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import PretrainedConfig\n\n\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil_seg'\n"
    )
    run_unsafely(
        "import transformers; transformers.AutoConfig.from_pretrained("
        f"{str(folder)!r}, trust_remote_code=True)",
        marker,
    )
    with pytest.raises(ModelLoadError, match="never runs"):
        Predictor(backend="mask2former", weights=str(folder), device="cpu")
    assert not marker.exists()
    assert "Do you wish to run the custom code" not in capsys.readouterr().out


# -- the node: configure fails, the node lives on, nothing ran ----------------------------
@pytest.mark.ros
def test_node_configure_refuses_a_malicious_checkpoint(tmp_path):
    from ros_harness import Graph, start_node, stop_node, write_params

    marker = tmp_path / "MARKER"
    weights = trojaned_checkpoint(tmp_path / "model.pt", marker)
    log = tmp_path / "node.log"
    graph = Graph()
    try:
        proc = start_node(write_params(tmp_path / "params.yaml", weights=str(weights)), log)
        try:
            graph.wait_for(
                lambda: proc.poll() is not None or "configure failed" in log.read_text(),
                timeout=180, what="the node's configure to fail",
            )
            assert proc.poll() is None, f"the node died:\n{log.read_text()}"
            assert graph.state() == "unconfigured"
            text = log.read_text()
            assert SAFE_LOAD_MESSAGE in text and str(weights) in text, text
        finally:
            code = stop_node(proc)
        assert code == 0, log.read_text()[-4000:]
    finally:
        graph.close()
    assert not marker.exists()
