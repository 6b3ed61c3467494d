"""Training: loss goes down, exact resume, DDP on CPU (gloo, 2 processes), CLI errors."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from panoptic_ros.errors import ModelLoadError
from panoptic_ros.models.checkpoint import load_checkpoint_file, load_model
from panoptic_ros.training.config import TrainConfig, load_train_config
from panoptic_ros.training.trainer import DistInfo, EpochSampler, Trainer, lr_factor, setup_device

TINY = {
    "model": {"variant": "narrow"},
    "label_set": "synthetic",
    "train": {"kind": "synthetic", "length": 8, "seed": 1000, "height": 64, "width": 96},
    "val": {"kind": "synthetic", "length": 2, "seed": 7, "height": 64, "width": 96},
    "augment": {"scale": [1.0, 1.0], "flip": False, "jitter": False},
    "optim": {"optimizer": "adamw", "lr": 0.002, "warmup_steps": 0, "schedule": "constant"},
    "batch_size": 2,
    "max_steps": 4,
    "num_workers": 0,
    "checkpoint_every": 0,
    "val_every": 0,
}


def tiny(tmp_path: Path, **overrides) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, "output_dir": str(tmp_path / "run"), **overrides})


def test_config_validation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**TINY, "optim": {"optimizer": "lbfgs"}}))
    from panoptic_ros.errors import UserError

    with pytest.raises(UserError, match="optimizer must be one of"):
        load_train_config(path)
    path.write_text(yaml.safe_dump({**TINY, "batchsize": 3}))
    with pytest.raises(UserError, match=r"unknown keys in training config: \['batchsize'\]"):
        load_train_config(path)
    with pytest.raises(UserError, match="not found"):
        load_train_config(tmp_path / "missing.yaml")


def test_schedule_and_sampler():
    cfg = TrainConfig.from_dict({**TINY, "max_steps": 110, "optim": {
        "warmup_steps": 10, "warmup_factor": 0.1, "schedule": "cosine", "min_lr_factor": 0.0}})
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.5)
    assert lr_factor(110, cfg) == pytest.approx(0.0, abs=1e-12)
    s0, s1 = EpochSampler(7, seed=3, rank=0, world_size=2), EpochSampler(7, 3, 1, 2)
    a, b = list(s0), list(s1)
    assert len(a) == len(b) == 4 and set(a + b) == set(range(7))
    s0.set_epoch(0, skip=2)
    assert list(s0) == a[2:]
    s0.set_epoch(1)
    assert list(s0) != a  # a new order per epoch


def test_short_training_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(tiny(tmp_path, max_steps=30), progress=False)
    images, targets = next(iter(trainer.loader))
    first = [trainer.train_step(images, targets)["loss"] for _ in range(3)]
    for _ in range(22):
        trainer.train_step(images, targets)
    last = [trainer.train_step(images, targets)["loss"] for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(first + last)))
    assert sum(last) / 3 < 0.7 * sum(first) / 3, (first, last)


def test_checkpoint_resume_is_exact(tmp_path):
    straight = Trainer(tiny(tmp_path / "a", max_steps=4), progress=False)
    summary = straight.run()
    assert summary["steps"] == 4 and not summary["interrupted"]
    assert summary["final_val"]["images"] == 2
    ref = load_checkpoint_file(tmp_path / "a" / "run" / "last.pt")

    first = Trainer(tiny(tmp_path / "b", max_steps=2), progress=False)
    first.run()
    resumed = Trainer(tiny(tmp_path / "b", max_steps=4), progress=False,
                      resume=tmp_path / "b" / "run" / "last.pt")
    assert resumed.step == 2
    resumed.run()
    got = load_checkpoint_file(tmp_path / "b" / "run" / "last.pt")
    assert got["train_state"]["step"] == 4
    for key, value in ref["state_dict"].items():
        assert torch.allclose(value.float(), got["state_dict"][key].float(), atol=1e-6), key
    # The final checkpoint is what the node and `infer` load: weights, label set, config.
    model = load_model(tmp_path / "b" / "run" / "model_final.pt")
    assert model.label_set.name == "synthetic"
    summary = json.loads((tmp_path / "b" / "run" / "summary.json").read_text())
    with torch.no_grad():
        checksum = sum(float(p.double().sum()) for p in model.parameters())
    assert summary["steps"] == 4 and summary["param_checksums"][0] == pytest.approx(checksum)


def test_run_hooks_log_checkpoint_validate_and_sigterm_interrupts(tmp_path, monkeypatch):
    """The loop and its hooks, with stand-ins for the optimiser step and PQ (tested above)."""
    trainer = Trainer(tiny(tmp_path, max_steps=4, checkpoint_every=2, val_every=2,
                           log_every=1), progress=True)
    events = []

    def train_step(images, targets):
        trainer.step += 1
        if trainer.step == 3 and sigterm_at_3:
            os.kill(os.getpid(), signal.SIGTERM)
        return {"loss": 1.0 / trainer.step, "loss_semantic": 0.5}

    def validate():
        events.append((trainer.step, "validate"))
        return {"all_pq": 0.5, "things_pq": 0.4, "stuff_pq": 0.6}

    save = trainer.save
    monkeypatch.setattr(trainer, "train_step", train_step)
    monkeypatch.setattr(trainer, "validate", validate)
    monkeypatch.setattr(trainer, "save", lambda name, with_state=True: (
        events.append((trainer.step, name)), save(name, with_state))[1])
    sigterm_at_3 = False
    summary = trainer.run()
    # Hooks after steps 2 and 4 (checkpoint, then validation before the last step), the end.
    assert events == [(2, "last.pt"), (2, "validate"), (4, "last.pt"), (4, "last.pt"),
                      (4, "validate"), (4, "model_final.pt")]
    ema = 1.0
    for step in (2, 3, 4):
        ema = 0.9 * ema + 0.1 / step
    assert summary["final_losses"]["loss"] == pytest.approx(ema)

    # SIGTERM to the main process ends the run like Ctrl-C: last.pt, then KeyboardInterrupt.
    handler = signal.getsignal(signal.SIGTERM)
    trainer.step, sigterm_at_3 = 0, True
    events.clear()
    with pytest.raises(KeyboardInterrupt, match="interrupted at step 3; resume with --resume"):
        trainer.run()
    assert signal.getsignal(signal.SIGTERM) == handler
    assert events == [(2, "last.pt"), (2, "validate"), (3, "last.pt")]
    out = tmp_path / "run"
    assert load_checkpoint_file(out / "last.pt")["train_state"]["step"] == 3
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True


def test_device_rule_indexes_cuda_and_gives_each_torchrun_rank_its_gpu(monkeypatch, caplog):
    made_current: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    alone = DistInfo()
    assert setup_device("cuda", alone) == torch.device("cuda", 0)  # set_device needs an index
    assert setup_device("auto", alone) == torch.device("cuda", 0)
    assert setup_device("cuda:3", alone) == torch.device("cuda", 3)
    rank2 = DistInfo(rank=2, world_size=4, local_rank=2)
    for name in ("auto", "cuda", "cuda:2"):
        assert setup_device(name, rank2) == torch.device("cuda", 2)
    with caplog.at_level(logging.WARNING, logger="panoptic_ros.devices"):
        assert setup_device("cuda:0", rank2) == torch.device("cuda", 2)  # not every rank on 0
    assert "LOCAL_RANK 2 uses cuda:2" in caplog.text
    assert [d.index for d in made_current] == [0, 0, 3, 2, 2, 2, 2]
    assert setup_device("cpu", rank2) == torch.device("cpu") and len(made_current) == 7
    with pytest.raises(ModelLoadError, match="only 4 CUDA device"):
        setup_device("cuda:4", alone)
    with pytest.raises(ModelLoadError, match=r"'cuda' \(cuda:5\) requested but only 4"):
        setup_device("cuda", DistInfo(rank=5, world_size=8, local_rank=5))  # too few GPUs
    with pytest.raises(ValueError, match="device must be"):
        setup_device("gpu", alone)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert setup_device("auto", rank2) == torch.device("cpu")
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        setup_device("cuda", alone)
    with pytest.raises(ValueError, match="device must be"):
        TrainConfig.from_dict({**TINY, "device": "gpu"})  # refused when the config is read


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path):
    cfg = {**TINY, "output_dir": str(tmp_path / "ddp"), "max_steps": 3, "device": "cpu"}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    p = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(29400 + os.getpid() % 500),
         "-m", "panoptic_ros.cli", "train", "--config", str(path), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    a, b = summary["param_checksums"]
    assert a == pytest.approx(b, rel=0, abs=1e-9)  # gradients were all-reduced: same weights
    assert summary["images_per_second"] > 0


def test_train_cli_errors(tmp_path):
    p = subprocess.run([sys.executable, "-m", "panoptic_ros.cli", "train", "--config",
                        str(tmp_path / "nope.yaml")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "training config not found" in p.stderr
    assert "Traceback" not in p.stderr
