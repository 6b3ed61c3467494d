"""Shared test helpers: tiny randomly initialised pretrained-family models, saved offline.

Tests and benchmarks import this module (it is on ``sys.path`` beside ``conftest.py``); no test
module imports another.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from panoptic_ros.categories import synthetic
from panoptic_ros.result import PanopticResult

COCO_SUBSET = ["wall-other-merged", "sky-other-merged", "road", "grass-merged", "person", "car",
               "dog", "bicycle"]
"""Labels of the tiny Mask2Former (COCO panoptic names, so the backend maps them)."""

ACCEPT_ALL = {"score_threshold": 0.0, "mask_threshold": 0.0, "overlap_threshold": 0.0}
"""Mask-classification thresholds that keep every query (random models are unconfident)."""


def _transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def tiny_swin(image_size: int = 64):
    """A one-block-per-stage Swin backbone config."""
    return _transformers().SwinConfig(
        embed_dim=12, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
        image_size=image_size, out_features=["stage1", "stage2", "stage3", "stage4"],
        drop_path_rate=0.0,
    )


def tiny_mask2former(id2label: dict[int, str] | None = None, queries: int = 10):
    """A tiny random ``Mask2FormerForUniversalSegmentation`` (eval mode, seed 0)."""
    transformers = _transformers()
    id2label = id2label or dict(enumerate(COCO_SUBSET))
    config = transformers.Mask2FormerConfig(
        backbone_config=tiny_swin(), use_pretrained_backbone=False, feature_size=32,
        mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=32, dim_feedforward=32,
        encoder_layers=1, decoder_layers=2, num_attention_heads=2, num_queries=queries,
        id2label=id2label, label2id={v: k for k, v in id2label.items()},
    )
    torch.manual_seed(0)
    return transformers.Mask2FormerForUniversalSegmentation(config).eval()


def save_tiny_mask2former(path: Path) -> Path:
    """:func:`tiny_mask2former` and its image processor, ``save_pretrained`` into ``path``."""
    tiny_mask2former().save_pretrained(path)
    _transformers().Mask2FormerImageProcessor(
        size={"shortest_edge": 64, "longest_edge": 128},
        image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3],
    ).save_pretrained(path)
    return path


def save_tiny_detr(path: Path) -> Path:
    """A tiny random ``DetrForSegmentation`` (ResNet backbone, 6 queries) in ``path``."""
    transformers = _transformers()
    backbone = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    id2label = {0: "N/A", 1: "person", 2: "car", 3: "sky-other-merged", 4: "road"}
    config = transformers.DetrConfig(
        use_timm_backbone=False, backbone_config=backbone, d_model=64, encoder_layers=1,
        decoder_layers=1, encoder_attention_heads=8, decoder_attention_heads=8,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=6, id2label=id2label,
        label2id={v: k for k, v in id2label.items()}, use_pretrained_backbone=False,
    )
    torch.manual_seed(0)
    model = transformers.DetrForSegmentation(config)
    with torch.no_grad():  # spread the queries apart (the default init keeps them alike)
        model.detr.model.query_position_embeddings.weight.normal_(0.0, 3.0)
        model.detr.class_labels_classifier.weight.normal_(0.0, 1.0)
    model.save_pretrained(path)
    return path


def oneformer_image_processor(directory: Path, id2label: dict[int, str]):
    """OneFormer's image processor; transformers 4 insists on a class info file (read from a
    local 'repo' directory here, so nothing is downloaded)."""
    info = {str(k): {"name": v, "isthing": 1} for k, v in id2label.items()}
    (directory / "class_info.json").write_text(json.dumps(info))
    return _transformers().OneFormerImageProcessor(repo_path=str(directory),
                                                   class_info_file="class_info.json")


def save_tiny_oneformer(path: Path) -> Path:
    """A tiny random OneFormer with a tiny CLIP tokenizer (its task prompt) in ``path``."""
    transformers = _transformers()
    id2label = {0: "person", 1: "car", 2: "sky-other-merged", 3: "road"}
    config = transformers.OneFormerConfig(
        backbone_config=tiny_swin(), num_queries=6, conv_dim=32, mask_dim=32, hidden_dim=32,
        encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=1, decoder_layers=2,
        num_attention_heads=2, text_encoder_width=32, text_encoder_num_layers=1,
        text_encoder_vocab_size=64, text_encoder_context_length=8, task_seq_len=8,
        text_encoder_n_ctx=2, id2label=id2label, label2id={v: k for k, v in id2label.items()},
        is_training=False, output_auxiliary_logits=False,
    )
    torch.manual_seed(0)
    transformers.OneFormerForUniversalSegmentation(config).save_pretrained(path)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for word in ("the", "task", "is", "panoptic"):
        vocab[word + "</w>"] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(vocab_file=str(path / "vocab.json"),
                                           merges_file=str(path / "merges.txt"))
    transformers.OneFormerProcessor(
        image_processor=oneformer_image_processor(path, id2label), tokenizer=tokenizer,
        max_seq_length=8, task_seq_length=8,
    ).save_pretrained(path)
    return path


TINY_SAVERS = {"mask2former": save_tiny_mask2former, "detr": save_tiny_detr,
               "oneformer": save_tiny_oneformer}
"""Model family -> function saving a tiny random model of it into a folder."""


# -- a tiny random EfficientPS on the synthetic label set ----------------------------------
LS = synthetic()
"""The label set of the tiny EfficientPS models."""
# Every detection passes, so that thing segments appear with random weights.
DETECT = {"variant": "narrow", "rpn_pre_nms_test": 200, "rpn_post_nms_test": 50,
          "detection_score_threshold": 0.0, "detections_per_image": 6,
          "fusion": {"score_threshold": 0.0}}



def save_tiny_efficientps(path: Path, seed: int, meta: dict | None = None) -> Path:
    """A random narrow EfficientPS whose detections all pass (:data:`DETECT`), at ``path``."""
    from panoptic_ros.models.checkpoint import save_checkpoint
    from panoptic_ros.models.efficientps import EfficientPSConfig
    from panoptic_ros.models.registry import build_model

    torch.manual_seed(seed)
    model = build_model("efficientps", EfficientPSConfig.from_dict(DETECT), LS)
    return save_checkpoint(path, model, meta=meta)


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A test frame: sky-blue over brown with a red block, plus noise; uint8 [h, w, 3]."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2] = (90, 140, 220)
    img[h // 2:] = (110, 90, 70)
    img[h // 3: h // 3 + h // 4, w // 4: w // 2] = (220, 40, 40)
    return np.clip(img + rng.integers(0, 30, img.shape), 0, 255).astype(np.uint8)


def check(result: PanopticResult, shape) -> None:
    """``result`` is a valid result of the tiny model at ``shape`` (ids, kinds, segments)."""
    assert isinstance(result, PanopticResult)
    assert result.ids.shape == shape and result.ids.dtype == np.int32
    cats, insts = result.semantic(), result.instances()
    assert set(np.unique(cats).tolist()) <= {0, *LS.ids.tolist()}
    stuff = np.isin(cats, [c.id for c in LS.stuff])
    assert (insts[stuff] == 0).all()
    assert (insts[np.isin(cats, [c.id for c in LS.things])] >= 1).all()
    ref = PanopticResult.from_ids(result.ids, LS, result.label_divisor,
                                  scores={s.id: s.score for s in result.segments})
    assert result.segments == ref.segments
