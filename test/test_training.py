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
from panoptic_ros.training import trainer as trainer_module
from panoptic_ros.training.config import DataConfig, TrainConfig, load_train_config
from panoptic_ros.training.trainer import (
    DistInfo,
    EpochSampler,
    Trainer,
    amp_settings,
    evaluate_model,
    gather_image_stats,
    image_stats,
    lr_factor,
    setup_device,
    sum_stats,
    validation_samples,
)

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


def test_torchrun_rank_takes_cuda_local_rank_from_the_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")  # second node: global rank 3, local rank 1
    layout = DistInfo.from_env()
    assert layout == DistInfo(rank=3, world_size=4, local_rank=1) and not layout.main
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    for name in ("auto", "cuda", "cuda:0"):
        assert setup_device(name, layout) == torch.device("cuda", 1)


def _fake_gpu(monkeypatch, major: int) -> None:
    """A CUDA GPU of compute capability ``major``.x that emulates bf16 below 8 (as V100 does)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: type("Props", (), {"major": major, "minor": 0})())
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)


def test_amp_takes_bf16_only_where_the_gpu_has_it_natively(monkeypatch):
    gpu = torch.device("cuda", 0)
    _fake_gpu(monkeypatch, major=7)  # V100 / T4 / Jetson Xavier: bf16 only emulated
    assert torch.cuda.is_bf16_supported()  # the trap: emulation counts by default
    dtype, scaler = amp_settings(gpu, enabled=True)
    assert dtype == torch.float16 and scaler.is_enabled()  # fp16 with loss scaling
    _fake_gpu(monkeypatch, major=8)  # Ampere and later
    dtype, scaler = amp_settings(gpu, enabled=True)
    assert dtype == torch.bfloat16 and not scaler.is_enabled()
    for device, enabled in ((gpu, False), (torch.device("cpu"), True)):
        dtype, scaler = amp_settings(device, enabled)
        assert dtype is None and not scaler.is_enabled()


def test_checkpoint_saves_and_resume_restores_the_cuda_rng(tmp_path, monkeypatch):
    """The CUDA generators (stochastic depth, RPN/RoI sampling) travel with last.pt."""
    states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    calls: list = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda st: calls.append(("all", st)))
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda st, device: calls.append(("one", st, device)))
    trainer = Trainer(tiny(tmp_path), progress=False)
    trainer.save("cpu.pt")  # a CPU run writes no CUDA entry
    assert "cuda_rng" not in load_checkpoint_file(tmp_path / "run" / "cpu.pt")["train_state"]
    trainer.device = torch.device("cuda", 0)  # as a run on cuda:0 (the model stays here)
    trainer.save("last.pt")
    st = load_checkpoint_file(tmp_path / "run" / "last.pt")["train_state"]
    assert st["cuda_rng_device"] == 0
    assert [t.tolist() for t in st["cuda_rng"]] == [t.tolist() for t in states]

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    trainer._load_state(tmp_path / "run" / "last.pt")  # the same GPUs: all restored
    assert [(c[0], [t.tolist() for t in c[1]]) for c in calls] == [
        ("all", [t.tolist() for t in states])]
    calls.clear()
    trainer.device = torch.device("cuda", 1)  # resumed on another GPU: the trained one's state
    trainer._load_state(tmp_path / "run" / "last.pt")
    assert [(c[0], c[1].tolist(), c[2]) for c in calls] == [
        ("one", states[0].tolist(), torch.device("cuda", 1))]
    calls.clear()
    trainer._load_state(tmp_path / "run" / "cpu.pt")  # older checkpoints: CUDA RNG left alone
    trainer.device = torch.device("cpu")
    trainer._load_state(tmp_path / "run" / "last.pt")  # CUDA checkpoint resumed on the CPU
    assert calls == []


def test_validation_shards_merge_to_the_single_process_pq(tmp_path, monkeypatch):
    """Sharded validation (two ranks simulated in one process) gives the unsharded stats."""
    trainer = Trainer(tiny(tmp_path), progress=False)
    val = DataConfig(length=3, seed=7, height=64, width=96)
    divisor = trainer.model_config.label_divisor

    def shard(rank):
        samples = validation_samples(val, trainer.label_set, divisor, rank=rank, world_size=2)
        return image_stats(trainer.model, samples, trainer.device)

    full = image_stats(trainer.model, validation_samples(val, trainer.label_set, divisor),
                       trainer.device)
    shards = [shard(0), shard(1)]
    assert [len(s) for s in shards] == [2, 1]  # images 0, 2 and 1

    def all_gather_object(out, mine):
        assert mine == [{c: (s.iou, s.tp, s.fp, s.fn) for c, s in st.per_cat.items()}
                        for st in shards[1]]  # called as rank 1
        out[:] = [[{c: (s.iou, s.tp, s.fp, s.fn) for c, s in st.per_cat.items()}
                   for st in sh] for sh in shards]

    monkeypatch.setattr(trainer_module.dist, "all_gather_object", all_gather_object)
    merged = gather_image_stats(shards[1], world_size=2)
    assert all(f.per_cat for f in full)  # not vacuous: every image has segments
    assert [m.per_cat for m in merged] == [f.per_cat for f in full]
    label_set = trainer.model.label_set
    assert sum_stats(merged).results(label_set) == sum_stats(full).results(label_set)
    assert gather_image_stats(full, world_size=1) is full


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(tmp_path):
    """Two gloo ranks: gradients all-reduced, and validation sharded with the PQ merged."""
    cfg = {**TINY, "output_dir": str(tmp_path / "ddp"), "max_steps": 3, "device": "cpu",
           "val_every": 2, "val": {**TINY["val"], "length": 3}}  # 3 images: shards of 2 and 1
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
    # Every rank validated its share; merged, the PQ is the single process's on all 3 images.
    assert [e["step"] for e in summary["val_history"]] == [2, 3]
    final = summary["final_val"]
    assert final["images"] == 3
    model = load_model(tmp_path / "ddp" / "model_final.pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks ran (OMP_NUM_THREADS=1)
    try:
        val = DataConfig(**cfg["val"])
        results, n = evaluate_model(model, validation_samples(
            val, model.label_set, model.config.label_divisor), torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    assert n == 3
    for key in ("All", "Things", "Stuff"):
        for m in ("pq", "sq", "rq"):
            assert final[f"{key.lower()}_{m}"] == results[key][m], (key, m)


def test_train_cli_errors(tmp_path):
    p = subprocess.run([sys.executable, "-m", "panoptic_ros.cli", "train", "--config",
                        str(tmp_path / "nope.yaml")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "training config not found" in p.stderr
    assert "Traceback" not in p.stderr
