"""Pretrained mask-classification backend: our panoptic inference against transformers',
label mapping onto our tables, tiny randomly initialised models end to end, offline loading."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import (
    ACCEPT_ALL,
    COCO_SUBSET,
    oneformer_image_processor,
    save_tiny_detr,
    save_tiny_oneformer,
    tiny_mask2former,
)
from reference_hf_postprocess import fuse_mask, hf_segment_ids, post_process_panoptic

from panoptic_ros.categories import cityscapes, coco_panoptic, decode_ids
from panoptic_ros.errors import ModelLoadError
from panoptic_ros.models.hf_labels import custom_label_set, is_placeholder, map_labels
from panoptic_ros.models.mask2former_postprocess import panoptic_from_queries, query_scores

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


# -- synthetic query outputs --------------------------------------------------------------
def blob_outputs(seed: int, batch: int = 2, queries: int = 12, classes: int = 6,
                 h: int = 24, w: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits with varied confidence and mask logits shaped like segments: each query
    covers one cell of a random Voronoi partition (several queries may share a cell)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes + 1, (batch, queries), generator=g)
    conf = torch.rand(batch, queries, generator=g) * 8
    class_logits = torch.randn(batch, queries, classes + 1, generator=g)
    class_logits.scatter_add_(2, labels[..., None], conf[..., None])
    cells = 6
    pts = torch.rand(batch, cells, 2, generator=g) * torch.tensor([h, w])
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    dist = (yy - pts[..., 0, None, None]) ** 2 + (xx - pts[..., 1, None, None]) ** 2
    region = dist.argmin(1)
    cell_of_query = torch.randint(0, cells, (batch, queries), generator=g)
    inside = (region[:, None] == cell_of_query[..., None, None]).float()
    mask_logits = 5 * (2 * inside - 1) + 2 * torch.randn(batch, queries, h, w, generator=g)
    mask_logits = torch.nn.functional.avg_pool2d(mask_logits, 3, 1, 1)
    return class_logits, mask_logits


SETTINGS = [
    {},
    {"threshold": 0.3, "mask_threshold": 0.3, "overlap_mask_area_threshold": 0.6,
     "label_ids_to_fuse": {0, 2, 3}},
    {"threshold": 0.2, "label_ids_to_fuse": {0, 1, 2, 3, 4, 5},
     "target_sizes": [(37, 53), (51, 29)]},
    {"threshold": 0.5, "overlap_mask_area_threshold": 0.9, "label_ids_to_fuse": {1},
     "target_sizes": [(24, 32), (97, 131)]},
]


def hf_processor(flavour: str, tmp_path):
    """transformers' image processor of a model family (built without any download)."""
    import transformers

    transformers.logging.set_verbosity_error()
    if flavour == "mask2former":
        return transformers.Mask2FormerImageProcessor()
    if flavour == "maskformer":
        return transformers.MaskFormerImageProcessor()
    if flavour == "detr":
        return transformers.DetrImageProcessor()
    return oneformer_image_processor(tmp_path, dict(enumerate("abcdef")))


# -- (a) parity with transformers' post-processing ------------------------------------------
@pytest.mark.parametrize("flavour", ["mask2former", "maskformer", "oneformer", "detr"])
def test_postprocess_matches_transformers(flavour, tmp_path):
    processor = hf_processor(flavour, tmp_path)
    segments_seen = fused_merges = 0
    for seed in range(2):
        class_logits, mask_logits = blob_outputs(seed)
        outputs = SimpleNamespace(class_queries_logits=class_logits,
                                  masks_queries_logits=mask_logits,
                                  logits=class_logits, pred_masks=mask_logits)
        _, labels = query_scores(class_logits)
        for kw in SETTINGS:
            ref = processor.post_process_panoptic_segmentation(outputs, **kw)
            ours = post_process_panoptic(class_logits, mask_logits, flavour=flavour, **kw)
            fuse = fuse_mask(class_logits.shape[-1] - 1, kw.get("label_ids_to_fuse"))
            for i in range(len(ours)):
                expected = ref[i]["segmentation"].long().clamp(min=0)  # -1 (empty) -> void
                size = kw.get("target_sizes", [None] * 2)[i]
                if size is not None:
                    assert tuple(ours[i].segment_map.shape) == tuple(size)
                to_hf = hf_segment_ids(ours[i], labels[i], fuse)
                assert torch.equal(to_hf[ours[i].segment_map], expected), (flavour, seed, kw)
                # Segment list: one transformers entry per surviving query, in query order.
                q = (ours[i].query_segment > 0).nonzero().squeeze(1)
                seg = ours[i].query_segment[q]
                got = [(int(to_hf[s]), int(labels[i][k])) for k, s in zip(q, seg)]
                want = [(s["id"], s["label_id"]) for s in ref[i]["segments_info"]]
                assert got == want
                scores, _ = query_scores(class_logits[i])
                assert [round(float(scores[k]), 6) for k in q] == [
                    s["score"] for s in ref[i]["segments_info"]
                ]
                # Our own numbering: distinct segments 1..N, fused classes once each.
                present = set(ours[i].segment_map.unique().tolist()) - {0}
                assert present == set(range(1, ours[i].num_segments + 1))
                fused_labels = ours[i].labels[fuse[ours[i].labels]].tolist()
                assert len(fused_labels) == len(set(fused_labels))
                segments_seen += ours[i].num_segments
                fused_merges += len(q) - ours[i].num_segments
    assert segments_seen > 30 and fused_merges > 0  # the cases exercise real segments


def test_transformers_reuses_ids_after_a_fused_class(tmp_path):
    """Documented difference: transformers restarts its counter at a fused class's id, so the
    next new segment shares an id with an earlier, different one; ours stay distinct."""
    processor = hf_processor("mask2former", tmp_path)
    h, w = 8, 16
    # Four queries on four vertical bands: A (fused), B, A (fused), C.
    band = torch.arange(w)[None, :].expand(h, w) // 4
    mask_logits = torch.stack([torch.where(band == k, 8.0, -8.0) for k in range(4)])[None]
    labels = torch.tensor([0, 1, 0, 2])
    class_logits = torch.full((1, 4, 4), -5.0)
    class_logits[0, torch.arange(4), labels] = 5.0
    outputs = SimpleNamespace(class_queries_logits=class_logits, masks_queries_logits=mask_logits)
    ref = processor.post_process_panoptic_segmentation(outputs, label_ids_to_fuse={0},
                                                       target_sizes=[(h, w)])[0]
    assert [(s["id"], s["label_id"]) for s in ref["segments_info"]] == [
        (1, 0), (2, 1), (1, 0), (2, 2)
    ]
    ours = post_process_panoptic(class_logits, mask_logits, label_ids_to_fuse={0},
                                 target_sizes=[(h, w)])[0]
    assert ours.query_segment.tolist() == [1, 2, 1, 3]
    assert ours.labels.tolist() == [0, 1, 2]
    assert ours.segment_map[0, ::4].tolist() == [1, 2, 1, 3]


# -- post-processing alone (no transformers needed) ---------------------------------------
def test_chunked_and_single_pass_agree():
    class_logits, mask_logits = blob_outputs(7, batch=1, queries=16)
    scores, labels = query_scores(class_logits[0])
    fuse = fuse_mask(6, {0, 1})
    kw = dict(num_classes=6, threshold=0.2, fuse=fuse, target_size=(41, 67),
              logit_size=(96, 128), crop=(90, 117))
    whole = panoptic_from_queries(scores, labels, mask_logits[0], **kw)
    chunked = panoptic_from_queries(scores, labels, mask_logits[0], max_chunk_elements=1,
                                    **kw)
    assert whole.num_segments > 3
    assert torch.equal(whole.segment_map, chunked.segment_map)
    assert torch.equal(whole.query_segment, chunked.query_segment)
    assert torch.equal(whole.labels, chunked.labels)


def test_no_kept_query_gives_void_at_target_size():
    class_logits = torch.zeros(1, 5, 4)
    class_logits[..., -1] = 10.0  # every query says "no object"
    out = post_process_panoptic(class_logits, torch.randn(1, 5, 6, 6), target_sizes=[(13, 7)])[0]
    assert out.segment_map.shape == (13, 7) and int(out.segment_map.abs().sum()) == 0
    assert out.num_segments == 0 and out.query_segment.tolist() == [0] * 5


def original_mask2former_reference(scores, labels, mask_logits, num_classes, fuse, size,
                                   threshold=0.8, mask_threshold=0.5, overlap_threshold=0.8):
    """The original Mask2Former panoptic inference, a plain loop over queries (the spec)."""
    keep = labels.ne(num_classes) & (scores > threshold)
    s, lab = scores[keep], labels[keep]
    masks = torch.nn.functional.interpolate(mask_logits[keep][None], size=size,
                                            mode="bilinear", align_corners=False)[0].sigmoid()
    seg = torch.zeros(size, dtype=torch.int64)
    labels_out = []
    if len(lab) == 0:
        return seg, labels_out
    winner = (s.view(-1, 1, 1) * masks).argmax(0)
    current, memory = 0, {}
    for k in range(len(lab)):
        won = winner == k
        area, original = int(won.sum()), int((masks[k] >= mask_threshold).sum())
        mask = won & (masks[k] >= mask_threshold)
        if area > 0 and original > 0 and int(mask.sum()) > 0:
            if area / original < overlap_threshold:
                continue
            c = int(lab[k])
            if fuse[c]:
                if c in memory:
                    seg[mask] = memory[c]
                    continue
                memory[c] = current + 1
            current += 1
            seg[mask] = current
            labels_out.append(c)
    return seg, labels_out


def test_original_mask2former_rules_match_a_loop_reference():
    compared = differs_from_transformers = 0
    for seed in range(4):
        class_logits, mask_logits = blob_outputs(seed, batch=1)
        scores, labels = query_scores(class_logits[0])
        for kw in [{}, {"threshold": 0.3, "mask_threshold": 0.4, "overlap_threshold": 0.5}]:
            fuse = fuse_mask(6, {0, 2, 3})
            expected, expected_labels = original_mask2former_reference(
                scores, labels, mask_logits[0], 6, fuse, (37, 53), **kw)
            ours = panoptic_from_queries(scores, labels, mask_logits[0], num_classes=6,
                                         fuse=fuse, target_size=(37, 53), rules="mask2former",
                                         resize_logits=True, max_chunk_elements=3 * 37 * 53,
                                         **kw)
            assert torch.equal(ours.segment_map, expected)
            assert ours.labels.tolist() == expected_labels
            compared += len(expected_labels)
            hf = panoptic_from_queries(scores, labels, mask_logits[0], num_classes=6, fuse=fuse,
                                       target_size=(37, 53), resize_logits=True, **kw)
            differs_from_transformers += not torch.equal(hf.segment_map, ours.segment_map)
    assert compared > 10 and differs_from_transformers > 0


def test_rule_sets_differ_where_documented():
    scores = torch.tensor([0.6, 0.95])
    labels = torch.tensor([0, 1])
    # Query 0: probability 0.73 everywhere, weighted 0.44 (never >= 0.5); query 1: ~0.
    mask_logits = torch.stack([torch.full((4, 4), 1.0), torch.full((4, 4), -9.0)])
    run = lambda rules, **kw: panoptic_from_queries(  # noqa: E731
        scores, labels, mask_logits, num_classes=2, threshold=0.5, rules=rules, **kw)
    # transformers measures the binary area on weighted probabilities: query 0 has none.
    assert run("transformers").num_segments == 0
    assert run("mask2former").segment_map.eq(1).all()
    # Query 1 now wins columns 2 and 3 (weighted 0.59 and 0.45 > 0.44), but its own
    # probability on column 3 is 0.475 < 0.5: the original voids that column.
    mask_logits[1, :, 2] = 0.5
    mask_logits[1, :, 3] = -0.1
    assert run("transformers", overlap_threshold=0.4).segment_map[0].tolist() == [0, 0, 1, 1]
    assert run("mask2former", overlap_threshold=0.4).segment_map[0].tolist() == [1, 1, 2, 0]
    # Ratio exactly at the threshold: won 8 of 16 binary pixels for query 0 -> 0.5.
    assert run("mask2former", overlap_threshold=0.5).segment_map[0].tolist() == [1, 1, 2, 0]
    with pytest.raises(ValueError, match="rules must be one of"):
        run("detectron")


def test_postprocess_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[Q, h, w\]"):
        panoptic_from_queries(torch.ones(2), torch.zeros(2, dtype=torch.long),
                              torch.zeros(2, 4), num_classes=3)
    with pytest.raises(ValueError, match="flavour"):
        post_process_panoptic(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4, 4), flavour="yolo")


# -- label mapping --------------------------------------------------------------------------
def test_coco_names_map_to_coco_ids():
    coco = coco_panoptic()
    names = [c.name for c in coco]
    mapping = map_labels(dict(enumerate(names)))
    assert mapping.label_set.name == "coco_panoptic"
    assert mapping.category_ids.tolist() == [c.id for c in coco]
    assert mapping.unmapped == () and mapping.coverage == 1.0
    assert mapping.fuse.tolist() == [not c.is_thing for c in coco]


def test_naming_variants_placeholders_and_unmapped(caplog):
    id2label = {"0": "Wall_Other", "1": "sky", "2": "TV Monitor", "3": "sofa", "4": "door",
                "5": "N/A", "6": "LABEL_6", "7": "spaceship", "8": "playing field",
                "9": "person", "10": "car", "11": "dining-table", "12": "wall-other-merged"}
    with caplog.at_level(logging.WARNING, logger="panoptic_ros.models.hf_labels"):
        mapping = map_labels(id2label)
    coco = coco_panoptic()
    expected = ["wall-other-merged", "sky-other-merged", "tv", "couch", "door-stuff", None,
                None, None, "playingfield", "person", "car", "dining table",
                "wall-other-merged"]
    got = [coco.by_id(c).name if c else None for c in mapping.category_ids.tolist()]
    assert got == expected
    assert mapping.unmapped == ((7, "spaceship"),)  # placeholders are not reported
    assert "spaceship" in caplog.text and "void" in caplog.text
    assert is_placeholder("__background__") and not is_placeholder("person")


def test_cityscapes_names_pick_cityscapes():
    cs = cityscapes()
    mapping = map_labels({i: c.name.replace(" ", "_") for i, c in enumerate(cs)})
    assert mapping.label_set.name == "cityscapes"
    assert mapping.category_ids.tolist() == [c.id for c in cs]
    assert mapping.is_thing.tolist() == [c.is_thing for c in cs]


def test_unknown_dataset_falls_back_to_custom_label_set():
    id2label = {0: "wall", 1: "floor-other", 2: "lamp", 3: "armchair", 4: "N/A", 5: "crate"}
    mapping = map_labels(id2label)
    table = mapping.label_set
    assert table.name == "custom"
    assert mapping.category_ids.tolist() == [1, 2, 3, 4, 0, 6]
    assert [(c.id, c.name, c.is_thing) for c in table] == [
        (2, "floor-other", False), (1, "wall", True), (3, "lamp", True), (4, "armchair", True),
        (6, "crate", True),
    ]
    assert custom_label_set(id2label) == table
    # Forcing a table maps what it can and voids the rest.
    forced = map_labels(id2label, "coco")
    assert forced.label_set.name == "coco_panoptic" and 0 in forced.category_ids.tolist()


# -- tiny randomly initialised models -----------------------------------------------------
def test_backend_on_random_image_returns_our_categories():
    from panoptic_ros.models.hf_labels import map_labels as mapper
    from panoptic_ros.models.mask2former import Mask2FormerBackend, MaskInferenceParams

    model = tiny_mask2former()
    backend = Mask2FormerBackend(model, mapper(model.config.id2label),
                                 params=MaskInferenceParams(**ACCEPT_ALL))
    assert backend.label_set is coco_panoptic()
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 96)
    results = backend.predict(images, [(61, 90), (64, 96)], [(123, 181), (64, 96)])
    assert [r.ids.shape for r in results] == [(123, 181), (64, 96)]
    allowed = {coco_panoptic().by_name(n).id for n in COCO_SUBSET}
    for r in results:
        assert r.ids.dtype == np.int32 and r.segments
        cats, inst = decode_ids(r.ids, backend.label_divisor)
        assert set(np.unique(cats).tolist()) <= allowed | {0}
        assert sum(s.area for s in r.segments) == int((r.ids > 0).sum())
        for s in r.segments:
            assert s.category_id in allowed
            assert s.is_thing == coco_panoptic().is_thing(s.category_id)
            assert (s.instance_id > 0) == s.is_thing and 0.0 < s.score <= 1.0
    assert_ids_are_query_segments(backend, images, [(61, 90), (64, 96)],
                                  [(123, 181), (64, 96)], results)


def assert_ids_are_query_segments(backend, images, image_sizes, output_sizes, results):
    """The backend's ids are the model-space segments of the query inference run on the
    model's own raw outputs, encoded: one id per segment, with the category its label maps to.
    """
    pixel_mask = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.int64)
    for i, (h, w) in enumerate(image_sizes):
        pixel_mask[i, :h, :w] = 1
    with torch.no_grad():
        class_logits, mask_logits = backend(images, pixel_mask)
    p = backend.params
    for i, result in enumerate(results):
        scores, labels = query_scores(class_logits[i].float())
        segs = panoptic_from_queries(
            scores, labels, mask_logits[i].float(), num_classes=backend.num_classes,
            threshold=p.score_threshold, mask_threshold=p.mask_threshold,
            overlap_threshold=p.overlap_threshold, fuse=backend._fuse,
            target_size=tuple(output_sizes[i]), logit_size=tuple(images.shape[2:]),
            crop=tuple(image_sizes[i]), rules=p.rules, resize_logits=p.rules == "mask2former",
        )
        seg_map, ids = segs.segment_map.numpy(), result.ids
        assert seg_map.shape == ids.shape == tuple(output_sizes[i])
        pairs = set(zip(seg_map.ravel().tolist(), ids.ravel().tolist()))
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
        assert any(value for _, value in pairs)  # real segments, not a void map
        for seg, value in pairs:
            category = 0 if seg == 0 else backend.mapping.category_ids[int(segs.labels[seg - 1])]
            assert value // backend.label_divisor == category


def test_set_inference_params_validates_and_applies():
    from panoptic_ros.models.hf_labels import map_labels as mapper
    from panoptic_ros.models.mask2former import Mask2FormerBackend

    model = tiny_mask2former()
    backend = Mask2FormerBackend(model, mapper(model.config.id2label))
    assert backend.inference_params()["score_threshold"] == 0.8
    images = torch.randn(1, 3, 64, 64)
    assert backend.predict(images, [(64, 64)])[0].segments == []  # random model: low scores
    backend.set_inference_params(**ACCEPT_ALL)
    assert backend.predict(images, [(64, 64)])[0].segments
    with pytest.raises(ValueError, match="unknown inference parameter"):
        backend.set_inference_params(stuff_area=0.5)
    with pytest.raises(ValueError, match=r"score_threshold must lie in \[0, 1\], got 1.5"):
        backend.set_inference_params(score_threshold=1.5)
    assert backend.params.score_threshold == 0.0
    with pytest.raises(ValueError, match="must exceed the model's 10 queries"):
        backend.label_divisor = 8
    backend.label_divisor = 256
    assert backend.predict(images, [(64, 64)])[0].label_divisor == 256


def test_load_from_directory(tiny_dir):
    from panoptic_ros.models.mask2former import Mask2FormerBackend, load_pretrained

    backend = load_pretrained({"weights": str(tiny_dir), **ACCEPT_ALL})
    assert isinstance(backend, Mask2FormerBackend) and backend.model_type == "mask2former"
    assert backend.label_set is coco_panoptic()
    assert backend.pixel_mean == pytest.approx((127.5, 102.0, 76.5))
    assert backend.pixel_std == pytest.approx((51.0, 63.75, 76.5))
    assert backend.size_divisibility == 32
    assert backend.preferred_size == {"shortest_edge": 64, "longest_edge": 128}
    assert backend.checkpoint_meta == {"input_size": 64}
    # Same weights as the in-memory model: same outputs.
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = tiny_mask2former()(pixel_values=images).masks_queries_logits
    assert torch.allclose(backend(images)[1], expected, atol=1e-5)
    result = backend.predict(images, [(64, 64)], [(50, 77)])[0]
    assert result.ids.shape == (50, 77) and result.segments


def test_registry_builds_mask2former(tiny_dir):
    from panoptic_ros.models import registry

    backend = registry.build_model({"backend": "mask2former", "weights": str(tiny_dir)})
    assert backend.label_set is coco_panoptic()


def test_predictor_runs_the_backend(tiny_dir):
    """The Predictor resizes to the processor's shorter side, runs the model, and returns
    results at the camera image's size."""
    from panoptic_ros.inference import Predictor

    predictor = Predictor(backend="mask2former", weights=str(tiny_dir), device="cpu")
    assert predictor.input_size == 64 and predictor.label_set is coco_panoptic()
    predictor.set_inference_params(**ACCEPT_ALL)
    image = np.random.default_rng(0).integers(0, 256, (97, 131, 3), dtype=np.uint8)
    result = predictor.predict(image)
    assert result.ids.shape == (97, 131) and result.segments
    # The network saw the image resized to the shorter side 64 (64 x 86), not 97 x 131: the
    # backend's own result on that resized, normalised input, at the camera's size, is ours.
    from panoptic_ros.inference import resize_to_fit
    from panoptic_ros.models.preprocess import normalize_and_pad

    x = resize_to_fit(torch.from_numpy(image).permute(2, 0, 1), 64)
    assert tuple(x.shape[1:]) == (64, 86)
    spec = predictor.model.preprocess_spec()
    batch, sizes = normalize_and_pad([x], spec["pixel_mean"], spec["pixel_std"],
                                     spec["size_divisibility"], min_size=64)
    with torch.no_grad():
        direct = predictor.model.predict(batch, sizes, [(97, 131)])[0]
    np.testing.assert_array_equal(result.ids, direct.ids)
    allowed = {coco_panoptic().by_name(n).id for n in COCO_SUBSET}
    assert {s.category_id for s in result.segments} <= allowed


def test_missing_model_id_fails_offline_with_fetch_hint(tmp_path, monkeypatch):
    from panoptic_ros.models.mask2former import load_pretrained

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_pretrained({"weights": "nonexistent-org/nonexistent-model",
                         "cache_dir": str(tmp_path)})
    message = str(err.value)
    assert "'nonexistent-org/nonexistent-model' is not in the local Hugging Face cache" in message
    assert str(tmp_path) in message
    assert "hf download nonexistent-org/nonexistent-model" in message
    assert "allow_download" in message


def test_bad_directories_fail_clearly(tmp_path):
    from panoptic_ros.models.mask2former import load_pretrained

    with pytest.raises(ModelLoadError, match="does not exist"):
        load_pretrained(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_pretrained(str(tmp_path / "empty"))
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="'bert' model"):
        load_pretrained(str(tmp_path / "bert"))


def test_config_from_dict_rejects_unknown_keys():
    from panoptic_ros.models.mask2former import Mask2FormerConfig

    cfg = Mask2FormerConfig.from_dict({"backend": "mask2former", "weights": "a/b",
                                       "score_threshold": 0.7,
                                       "inference": {"mask_threshold": 0.4}})
    assert cfg.weights == "a/b" and cfg.allow_download is False
    assert (cfg.inference.score_threshold, cfg.inference.mask_threshold) == (0.7, 0.4)
    with pytest.raises(ValueError, match=r"unknown mask2former option\(s\) \['wieghts'\]"):
        Mask2FormerConfig.from_dict({"wieghts": "a/b"})
    with pytest.raises(ValueError, match=r"unknown mask2former inference option\(s\) \['stuff"):
        Mask2FormerConfig.from_dict({"inference": {"stuff_area": 10}})


def test_predict_checks_the_batch_before_running_the_model():
    from panoptic_ros.models.hf_labels import map_labels as mapper
    from panoptic_ros.models.mask2former import Mask2FormerBackend

    model = tiny_mask2former()
    backend = Mask2FormerBackend(model, mapper(model.config.id2label))
    images = torch.zeros(2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"images must be Tensor\[B, 3, H, W\]"):
        backend.predict(images[0], [(64, 64)])
    with pytest.raises(ValueError, match="expected 2 image sizes, got 1"):
        backend.predict(images, [(64, 64)])
    with pytest.raises(ValueError, match="expected 2 output sizes, got 3"):
        backend.predict(images, [(64, 64)] * 2, [(8, 8)] * 3)
    with pytest.raises(ValueError, match=r"image size \(65, 64\) does not fit"):
        backend.predict(images, [(64, 64), (65, 64)])


def test_detr_panoptic_through_the_same_backend(tmp_path):
    from panoptic_ros.models.mask2former import load_pretrained

    save_tiny_detr(tmp_path)
    backend = load_pretrained({"weights": str(tmp_path), **ACCEPT_ALL})
    assert backend.model_type == "detr" and backend.label_set is coco_panoptic()
    assert backend.mapping.unmapped == ()
    torch.manual_seed(2)
    images = torch.randn(1, 3, 64, 96)
    results = backend.predict(images, [(60, 90)], [(45, 67)])
    assert results[0].ids.shape == (45, 67) and results[0].segments
    names = {"person", "car", "sky-other-merged", "road"}
    assert {coco_panoptic().by_id(s.category_id).name for s in results[0].segments} <= names
    assert_ids_are_query_segments(backend, images, [(60, 90)], [(45, 67)], results)


def test_import_does_not_import_transformers():
    code = ("import sys, panoptic_ros.models.mask2former, panoptic_ros.models.hf_labels; "
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                         check=True)
    assert out.stdout.strip() == "False"


def test_oneformer_through_the_same_backend(tmp_path):
    """OneFormer needs its task prompt tokenised; a tiny tokenizer stands in for CLIP's."""
    from panoptic_ros.models.mask2former import load_pretrained

    save_tiny_oneformer(tmp_path)
    id2label = {0: "person", 1: "car", 2: "sky-other-merged", 3: "road"}
    backend = load_pretrained({"weights": str(tmp_path), **ACCEPT_ALL})
    assert backend.model_type == "oneformer"
    assert tuple(backend._task_inputs.shape) == (1, 8)
    torch.manual_seed(3)
    images = torch.randn(2, 3, 64, 64)
    results = backend.predict(images, [(64, 64), (50, 64)])
    result = results[1]
    assert result.ids.shape == (50, 64) and result.segments
    assert_ids_are_query_segments(backend, images, [(64, 64), (50, 64)], [(64, 64), (50, 64)],
                                  results)
    assert {s.category_id for s in result.segments} <= {
        coco_panoptic().by_name(n).id for n in id2label.values()
    }
