"""Panoptic fusion on hand-built logits with known answers, and against the loop reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from panoptic_ros.categories import LabelSet, synthetic
from panoptic_ros.models.efficientps.config import FusionConfig
from panoptic_ros.models.fusion import (
    batched,
    box_interior,
    box_windows,
    fuse,
    greedy_overlap_filter,
    paste_mask_logits,
    resize_index_map,
    segment_stats_torch,
    to_panoptic_result,
)
from panoptic_ros.models.fusion import semantic as dense_pass
from panoptic_ros.models.fusion.overlap import claim
from panoptic_ros.models.fusion.paste import paste_window, window_taps
from panoptic_ros.models.fusion.reference import reference_fusion, reference_paste
from panoptic_ros.result import PanopticResult, segment_stats

LS = synthetic()  # stuff: sky 11, ground 12, wall 13, grass 14, water 15; things: person 1 ..
S = LS.num_stuff  # 5
CATS = torch.as_tensor(LS.ids)
SKY, GROUND = LS.index_of(11), LS.index_of(12)
PERSON, CAR = LS.index_of(1), LS.index_of(2)  # semantic (training) indices
DIV = 1000
STRATEGIES = ("efficientps", "panoptic_fpn")


def semantic(h: int, w: int, winner: int = SKY, margin: float = 5.0) -> torch.Tensor:
    """Logits [C, H, W] where ``winner`` leads by ``margin`` everywhere."""
    logits = torch.zeros((LS.num_classes, h, w))
    logits[winner] = margin
    return logits


def box_mask(value: float = 10.0, m: int = 28) -> torch.Tensor:
    """A constant mask logit map (the whole box is in the mask when value > 0)."""
    return torch.full((m, m), value)


def run(strategy="efficientps", sem=None, masks=(), boxes=(), scores=(), labels=(), **kw):
    k = len(boxes)
    kw.setdefault("score_threshold", 0.5)
    kw.setdefault("overlap_threshold", 0.5)
    kw.setdefault("stuff_area", 0)
    out = fuse(
        sem,
        torch.stack(list(masks)) if k else torch.zeros((0, 28, 28)),
        torch.tensor(boxes, dtype=torch.float32).reshape(k, 4),
        torch.tensor(scores, dtype=torch.float32),
        torch.tensor(labels, dtype=torch.int64),
        strategy=strategy,
        num_stuff=S,
        category_ids=CATS,
        label_divisor=DIV,
        **kw,
    )
    return out, out.ids.numpy()


# -- hand-built cases ----------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_zero_instances_gives_semantic_stuff_and_void_things(strategy):
    sem = semantic(8, 10, SKY)
    sem[GROUND, 4:] = 9.0  # bottom half ground
    sem[PERSON, 0:2, 0:3] = 20.0  # a thing-class blob no instance claims
    _, ids = run(strategy, sem)
    expected = np.full((8, 10), 11000, np.int32)
    expected[4:] = 12000
    expected[0:2, 0:3] = 0
    np.testing.assert_array_equal(ids, expected)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_instance_covering_everything(strategy):
    sem = semantic(6, 7, SKY)
    sem[CAR] = 1.0
    out, ids = run(strategy, sem, [box_mask()], [(0, 0, 7, 6)], [0.9], [CAR])
    np.testing.assert_array_equal(ids, np.full((6, 7), 2001, np.int32))
    res = to_panoptic_result(out, LS, DIV)
    assert [(s.id, s.area, s.bbox, s.is_thing) for s in res.segments] == [
        (2001, 42, (0, 0, 7, 6), True)
    ]
    assert res.segments[0].score == pytest.approx(0.9)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_overlap_filter_and_score_order(strategy):
    sem = semantic(10, 20, SKY)  # inside a mask FL = (1 + 0.5) * 40 = 60 beats sky's 5
    # A: cols 0..9; B: cols 4..13; C: cols 12..19.
    boxes = [(0, 0, 10, 10), (4, 0, 14, 10), (12, 0, 20, 10)]
    masks = [box_mask() for _ in boxes]
    labels = [PERSON, PERSON, CAR]
    _, ids = run(strategy, sem, masks, boxes, [0.9, 0.8, 0.7], labels)
    # Order A, B, C: B is dropped (6/10 of it claimed by A); C overlaps nothing kept.
    expected = np.full((10, 20), 11000, np.int32)
    expected[:, 0:10] = 1001
    expected[:, 12:20] = 2001
    np.testing.assert_array_equal(ids, expected)
    # Order B, A, C: A is dropped (6/10 claimed by B); C overlaps B on 2/8 and is kept; the
    # shared columns 12..13 go to B, the higher score.
    _, ids = run(strategy, sem, masks, boxes, [0.7, 0.8, 0.6], labels)
    expected = np.full((10, 20), 11000, np.int32)
    expected[:, 4:14] = 1001
    expected[:, 14:20] = 2001
    np.testing.assert_array_equal(ids, expected)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_score_threshold_ignores_weak_detections(strategy):
    sem = semantic(6, 6, SKY)
    _, ids = run(strategy, sem, [box_mask()], [(0, 0, 6, 6)], [0.49], [PERSON])
    assert (ids == 11000).all()
    _, ids = run(strategy, sem, [box_mask()], [(0, 0, 6, 6)], [0.5], [PERSON])
    assert (ids == 1001).all()


def test_instance_wins_over_stuff_through_fl():
    sem = semantic(4, 8, SKY, margin=3.0)
    sem[PERSON] = 2.0  # the thing class is second everywhere
    mask = torch.full((28, 28), 1.0)
    mask[:, 14:] = -10.0  # right half of the mask is background
    _, ids = run("efficientps", sem, [mask], [(0, 0, 8, 4)], [0.9], [PERSON])
    # Box columns 0..3 sample mask cells 1..12 (logit 1), columns 4..7 cells 15..26 (-10).
    # Left: ML_A = 4, ML_B = 2 -> FL = (s(4) + s(2)) * 6 ~ 11.2 > 3 -> instance, although the
    # semantic argmax there is sky. Right: ML_A = -40 -> FL = (0 + s(2)) * -38 < 3 -> sky.
    expected = np.full((4, 8), 11000, np.int32)
    expected[:, :4] = 1001
    np.testing.assert_array_equal(ids, expected)
    # Panoptic FPN follows the binary mask alone: the same split here.
    _, ids_fpn = run("panoptic_fpn", sem, [mask], [(0, 0, 8, 4)], [0.9], [PERSON])
    np.testing.assert_array_equal(ids_fpn, expected)


def test_fl_can_lose_to_stuff_where_mask_is_weak():
    sem = semantic(4, 4, GROUND, margin=6.0)
    sem[PERSON] = -4.0
    # mask logit 0.2 -> ML_A = 0.8, ML_B = -4 -> FL = (0.69 + 0.018) * -3.2 < 6: ground wins.
    _, ids = run("efficientps", sem, [box_mask(0.2)], [(0, 0, 4, 4)], [0.9], [PERSON])
    assert (ids == 12000).all()


def test_unclaimed_thing_pixels_are_void():
    sem = semantic(6, 12, SKY)
    sem[CAR, :, 6:] = 10.0  # semantics say car on the right half
    mask = torch.full((28, 28), 10.0)
    _, ids = run("efficientps", sem, [mask], [(6, 0, 9, 6)], [0.9], [CAR])
    assert (ids[:, 6:9] == 2001).all()  # the instance claims its box
    assert (ids[:, 9:] == 0).all()  # car pixels outside any instance: void
    assert (ids[:, :6] == 11000).all()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_stuff_area_threshold(strategy):
    sem = semantic(10, 10, SKY)
    sem[GROUND, 0:2, 0:3] = 9.0  # 6 px of ground
    _, ids = run(strategy, sem, stuff_area=6)
    assert (ids[0:2, 0:3] == 12000).all()  # area 6 >= 6 stays
    _, ids = run(strategy, sem, stuff_area=7)
    assert (ids[0:2, 0:3] == 0).all()  # area 6 < 7 -> void
    assert (ids[2:] == 11000).all()


def test_stuff_area_scales_with_image_area():
    cfg = FusionConfig(stuff_area=2048, reference_size=(1024, 2048))
    assert cfg.stuff_area_at(1024, 2048) == 2048
    assert cfg.stuff_area_at(512, 1024) == 512
    assert cfg.stuff_area_at(32, 64) == 2
    # At 32x64 a 2-px stuff region survives and a 1-px region does not.
    sem = semantic(32, 64, SKY)
    sem[GROUND, 0, 0:2] = 9.0
    sem[LS.index_of(13), 5, 5] = 9.0  # 1 px wall
    _, ids = run("efficientps", sem, stuff_area=cfg.stuff_area_at(32, 64))
    assert (ids[0, 0:2] == 12000).all()
    assert ids[5, 5] == 0


def test_panoptic_fpn_assigns_unassigned_pixels_only():
    sem = semantic(4, 12, SKY)
    boxes = [(0, 0, 8, 4), (5, 0, 12, 4)]  # second overlaps first on 3/7 of its area
    masks = [box_mask() for b in boxes]
    _, ids = run("panoptic_fpn", sem, masks, boxes, [0.9, 0.8], [PERSON, PERSON])
    assert (ids[:, :8] == 1001).all()
    assert (ids[:, 8:] == 1002).all()


def test_instance_ids_count_only_instances_with_pixels():
    # The best person (FL 30) beats the second (FL ~5.9) everywhere in the second's box, so
    # the second keeps no pixel and the third person is numbered 2.
    sem = semantic(4, 16, SKY)
    boxes = [(0, 0, 8, 4), (6, 0, 8, 4), (10, 0, 16, 4)]
    masks = [box_mask(5.0), box_mask(1.0), box_mask(5.0)]
    _, ids = run("efficientps", sem, masks, boxes, [0.9, 0.8, 0.7], [PERSON, PERSON, PERSON],
                 overlap_threshold=1.0)
    expected = np.full((4, 16), 11000, np.int32)
    expected[:, 0:8] = 1001
    expected[:, 10:] = 1002
    np.testing.assert_array_equal(ids, expected)


def test_detections_need_not_be_sorted():
    sem = semantic(4, 8, SKY)
    boxes = [(0, 0, 8, 4), (0, 0, 8, 4)]
    masks = [box_mask(), box_mask()]
    _, ids = run("efficientps", sem, masks, boxes, [0.6, 0.9], [PERSON, CAR])
    assert (ids == 2001).all()  # the car scores higher; the person is filtered as overlap


def test_empty_masks_are_never_kept():
    sem = semantic(4, 4, SKY)
    out, ids = run("efficientps", sem, [box_mask(-3.0)], [(0, 0, 4, 4)], [0.99], [CAR])
    assert (ids == 11000).all()


def test_no_stuff_classes():
    ls = LabelSet.from_coco([{"id": 1, "name": "a", "isthing": 1},
                             {"id": 2, "name": "b", "isthing": 1}])
    sem = torch.zeros((2, 4, 4))
    out = fuse(
        sem, torch.full((1, 28, 28), 5.0), torch.tensor([[0.0, 0.0, 2.0, 4.0]]),
        torch.tensor([0.9]), torch.tensor([1]), num_stuff=0,
        category_ids=torch.as_tensor(ls.ids), label_divisor=DIV,
    )
    ids = out.ids.numpy()
    assert (ids[:, :2] == 2001).all() and (ids[:, 2:] == 0).all()


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="semantic_logits must be Tensor"):
        fuse(torch.zeros(4, 4), torch.zeros(0, 28, 28), torch.zeros(0, 4), torch.zeros(0),
             torch.zeros(0, dtype=torch.int64), num_stuff=S, category_ids=CATS, label_divisor=DIV)
    with pytest.raises(ValueError, match="category_ids"):
        fuse(torch.zeros(9, 4, 4), torch.zeros(0, 28, 28), torch.zeros(0, 4), torch.zeros(0),
             torch.zeros(0, dtype=torch.int64), num_stuff=S, category_ids=CATS[:3],
             label_divisor=DIV)
    with pytest.raises(ValueError, match="strategy"):
        fuse(torch.zeros(9, 4, 4), torch.zeros(0, 28, 28), torch.zeros(0, 4),
             torch.zeros(0), torch.zeros(0, dtype=torch.int64), strategy="maskformer", num_stuff=S,
             category_ids=CATS, label_divisor=DIV)
    with pytest.raises(ValueError, match="path"):
        fuse(torch.zeros(9, 4, 4), torch.zeros(0, 28, 28), torch.zeros(0, 4),
             torch.zeros(0), torch.zeros(0, dtype=torch.int64), num_stuff=S,
             category_ids=CATS, label_divisor=DIV, path="gpu")


# -- building blocks -----------------------------------------------------------------------
def test_paste_matches_per_box_interpolate_on_integer_boxes():
    g = torch.Generator().manual_seed(1)
    masks = torch.randn((3, 28, 28), generator=g)
    boxes = torch.tensor([[2.0, 3.0, 17.0, 9.0], [0.0, 0.0, 40.0, 30.0], [30.0, 20.0, 33.0, 29.0]])
    pasted = paste_mask_logits(masks, boxes, (30, 40))
    for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        expected = torch.zeros((30, 40))
        expected[y0:y1, x0:x1] = F.interpolate(
            masks[k][None, None], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False
        )[0, 0]
        torch.testing.assert_close(pasted[k], expected, atol=1e-5, rtol=1e-5)


def test_paste_matches_grid_sample_reference_on_fractional_boxes():
    g = torch.Generator().manual_seed(2)
    masks = torch.randn((5, 28, 28), generator=g)
    xy = torch.rand((5, 2), generator=g) * torch.tensor([30.0, 20.0]) - 3
    wh = torch.rand((5, 2), generator=g) * 25 + 0.3
    boxes = torch.cat([xy, xy + wh], 1)
    torch.testing.assert_close(
        paste_mask_logits(masks, boxes, (24, 33)), reference_paste(masks, boxes, (24, 33)),
        atol=1e-5, rtol=1e-5,
    )


def overlap_filter_boxes(masks, boxes, candidates, thr):
    """The box-by-box path's filter (:func:`claim` per box window) on pasted masks."""
    k, h, w = masks.shape
    claimed = torch.zeros((h, w), dtype=torch.bool)
    owner = torch.full((h, w), k, dtype=torch.int64)
    keep = [False] * k
    for i, window in enumerate(box_windows(boxes, (h, w))):
        x0, y0, x1, y1 = window
        if not candidates[i] or x1 == x0 or y1 == y0:
            continue
        new = claim(claimed, window, masks[i, y0:y1, x0:x1], thr, new_pixels=True)
        if new is not False:
            keep[i] = True
            owner[y0:y1, x0:x1].masked_fill_(new, i)
    return torch.tensor(keep), owner


def _loop_overlap_filter(masks, candidates, thr):
    claimed = torch.zeros(masks.shape[1], dtype=torch.bool)
    keep = []
    for k in range(masks.shape[0]):
        area = int(masks[k].sum())
        ok = bool(candidates[k]) and area > 0 and int((masks[k] & claimed).sum()) / area <= thr
        keep.append(ok)
        if ok:
            claimed |= masks[k]
    return torch.tensor(keep, dtype=torch.bool)


@pytest.mark.parametrize("seed", range(6))
def test_greedy_overlap_filter_equals_sequential_loop(seed):
    g = torch.Generator().manual_seed(seed)
    k = 12
    centres = torch.rand((k, 2), generator=g) * 24
    radii = torch.rand(k, generator=g) * 8 + 1
    yy, xx = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    masks = ((yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None])
             ** 2 <= radii[:, None, None] ** 2).reshape(k, -1)
    candidates = torch.rand(k, generator=g) > 0.2
    thr = [0.0, 0.2, 0.5, 0.8, 1.0, 0.35][seed]
    keep, owner = greedy_overlap_filter(masks, candidates, thr)
    expected = _loop_overlap_filter(masks, candidates, thr)
    assert torch.equal(keep, expected)
    first = torch.where(masks & keep[:, None], torch.arange(k)[:, None], k).amin(0)
    assert torch.equal(owner, first)
    # In pixel chunks (bounded memory, GPU readiness 9): the same decisions and owners,
    # also with chunks that do not divide the image (576 pixels).
    for elements in (k, 7 * k, 100 * k):
        chunked = greedy_overlap_filter(masks, candidates, thr, max_chunk_elements=elements)
        assert torch.equal(chunked[0], keep) and torch.equal(chunked[1], owner)
    # The box-by-box variant, with boxes around the circles (pixel centres inside).
    boxes = torch.cat([centres.flip(1) - radii[:, None] - 0.5,
                       centres.flip(1) + radii[:, None] + 1.5], 1)
    keep_b, owner_b = overlap_filter_boxes(masks.reshape(k, 24, 24), boxes, candidates, thr)
    assert torch.equal(keep_b, expected)
    assert torch.equal(owner_b, first.reshape(24, 24))


def test_segment_stats_torch_matches_numpy():
    rng = np.random.default_rng(3)
    index_map = rng.integers(0, 9, size=(17, 23))
    index_map[index_map == 4] = 5  # one empty segment
    areas, boxes = segment_stats_torch(torch.from_numpy(index_map), 10)
    ref_areas, ref_boxes = segment_stats(index_map, 10)
    np.testing.assert_array_equal(areas.numpy(), ref_areas)
    np.testing.assert_array_equal(boxes.numpy(), ref_boxes)


def test_resize_index_map_nearest():
    m = torch.arange(6).reshape(2, 3)
    up = resize_index_map(m, (4, 6))
    assert up.tolist() == [[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2
    assert resize_index_map(up, (2, 3)).tolist() == m.tolist()
    # Nearest neighbour with pixel centres: output pixel (y, x) takes source
    # (floor((y + .5) * 2 / 3), floor((x + .5) * 3 / 5)).
    assert resize_index_map(m, (3, 5)).tolist() == [[0, 0, 1, 2, 2], [3, 3, 4, 5, 5],
                                                     [3, 3, 4, 5, 5]]


# -- against the loop reference ------------------------------------------------------------
def random_case(seed: int, h: int = 37, w: int = 51, k: int = 9):
    g = torch.Generator().manual_seed(seed)
    sem = torch.randn((LS.num_classes, h, w), generator=g) * 3
    sem = F.avg_pool2d(sem[None], 5, 1, 2)[0] * 3  # smooth regions, as real logits are
    xy = torch.rand((k, 2), generator=g) * torch.tensor([w - 5.0, h - 5.0])
    wh = torch.rand((k, 2), generator=g) * torch.tensor([w / 2, h / 2]) + 2
    boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([float(w), float(h)]))], 1)
    masks = torch.randn((k, 28, 28), generator=g) * 2
    masks = F.avg_pool2d(masks[:, None], 7, 1, 3)[:, 0] * 3 + 0.5
    scores = torch.rand(k, generator=g) * 0.8 + 0.2
    labels = torch.randint(S, LS.num_classes, (k,), generator=g)
    return sem, masks, boxes, scores, labels


@pytest.mark.parametrize("path", ["boxes", "batched"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("seed", range(8))
def test_fusion_equals_reference_on_random_inputs(strategy, seed, path):
    sem, masks, boxes, scores, labels = random_case(seed)
    h, w = sem.shape[1:]
    kw = dict(num_stuff=S, category_ids=CATS, label_divisor=DIV, score_threshold=0.5,
              overlap_threshold=[0.5, 0.3, 0.7, 0.5][seed % 4], stuff_area=[0, 20, 60][seed % 3])
    out = fuse(sem, masks, boxes, scores, labels, strategy=strategy, path=path, **kw)
    pasted = paste_mask_logits(masks, boxes, (h, w))
    ids_ref, scores_ref = reference_fusion(strategy, sem, pasted, boxes, scores, labels, **kw)
    ids = out.ids.numpy()
    np.testing.assert_array_equal(ids, ids_ref)
    assert len(np.unique(ids)) > 3  # a non-trivial case: stuff and instances
    res = to_panoptic_result(out, LS, DIV)
    assert {s.id for s in res.segments} == set(scores_ref)
    for s in res.segments:
        assert s.score == pytest.approx(scores_ref[s.id], rel=1e-6)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_result_segments_equal_from_ids(strategy):
    sem, masks, boxes, scores, labels = random_case(11, 29, 41)
    out = fuse(sem, masks, boxes, scores, labels, strategy=strategy, num_stuff=S,
               category_ids=CATS, label_divisor=DIV, stuff_area=10)
    for size in (None, (58, 82), (20, 30)):
        res = to_panoptic_result(out, LS, DIV, size)
        ref = PanopticResult.from_ids(res.ids, LS, DIV,
                                      scores={s.id: s.score for s in res.segments})
        assert res.ids.dtype == np.int32
        assert res.segments == ref.segments
        assert len(res.segments) >= 3
        if size is not None:
            assert res.ids.shape == size


def test_chunked_fusion_equals_one_pass(monkeypatch):
    sem, masks, boxes, scores, labels = random_case(5, k=12)
    kw = dict(num_stuff=S, category_ids=CATS, label_divisor=DIV, path="batched")
    one = fuse(sem, masks, boxes, scores, labels, **kw)
    monkeypatch.setattr(batched, "CHUNK_ELEMENTS", 3 * 37 * 51)  # chunks of 3 detections
    chunked = fuse(sem, masks, boxes, scores, labels, **kw)
    assert torch.equal(one.index_map, chunked.index_map)
    assert torch.equal(one.values, chunked.values)
    assert len(np.unique(one.ids.numpy())) > 3


# -- box-by-box path (CPU) against the batched path and the reference ---------------------
def edge_case(seed: int, h: int = 23, w: int = 31, k: int = 14, *, negative_stuff=False,
              num_stuff: int = S, whole_image_boxes=True):
    """Inputs with the awkward parts: boxes over and beyond the borders, boxes thinner than a
    pixel or without a pixel centre, empty masks, duplicate detections (equal FL, equal
    score), logits on a 0.5 grid (exact ties between classes, FL = 0 against a 0 stuff
    maximum), scores on either side of the threshold; optionally every stuff logit negative.
    """
    g = torch.Generator().manual_seed(seed)
    c = LS.num_classes
    sem = F.avg_pool2d(torch.randn((1, c, h, w), generator=g) * 4, 3, 1, 1)[0] * 3
    sem = (sem * 2).round() / 2
    if negative_stuff:
        sem[:num_stuff] = -sem[:num_stuff].abs() - 0.5
    xy = torch.rand((k, 2), generator=g) * torch.tensor([w + 8.0, h + 8.0]) - 4
    wh = torch.rand((k, 2), generator=g) * torch.tensor([w * 0.7, h * 0.7]) + 0.2
    boxes = torch.cat([xy, xy + wh], 1)
    if whole_image_boxes:
        boxes[0] = torch.tensor([-3.0, -2.0, w + 5.0, h + 1.0])  # beyond every border
        boxes[1] = torch.tensor([0.0, 0.0, float(w), float(h)])  # exactly the image
    else:  # pixels outside every box: the semantic pass applies the zero rule there
        boxes[:, 2:] = torch.minimum(boxes[:, 2:], boxes[:, :2] + torch.tensor([w, h]) / 3)
    boxes[2] = torch.tensor([3.2, 4.1, 3.7, 9.0])  # thinner than a pixel, one centre column
    boxes[3] = torch.tensor([5.6, 2.0, 6.4, 2.3])  # no pixel centre inside
    boxes[4] = torch.tensor([w - 0.6, h - 0.6, w + 2.0, h + 2.0])  # the corner pixel only
    masks = F.avg_pool2d(torch.randn((k, 1, 28, 28), generator=g) * 2, 5, 1, 2)[:, 0] * 4 + 1
    masks = (masks * 2).round() / 2
    masks[5] = -2.0  # an empty mask
    scores = ((torch.rand(k, generator=g) * 0.8 + 0.3) * 8).round() / 8
    labels = torch.randint(num_stuff, c, (k,), generator=g)
    # A duplicate of detection 6: the same FL everywhere; the stable score order decides.
    boxes[7], masks[7], scores[7], labels[7] = boxes[6], masks[6], scores[6], labels[6]
    return sem, masks, boxes, scores, labels


def fuse_both_paths(*args, **kw):
    """(box-by-box output, batched output) of the same inputs."""
    return fuse(*args, path="boxes", **kw), fuse(*args, path="batched", **kw)


def assert_same_output(a, b):
    assert torch.equal(a.index_map, b.index_map)
    assert torch.equal(a.values, b.values)
    assert torch.equal(a.scores, b.scores)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("seed", "negative_stuff", "num_stuff", "whole"), [
    (0, False, S, True), (1, False, S, True), (2, True, S, True), (3, True, S, True),
    (4, False, 0, True), (5, True, 1, True), (6, True, S, False), (7, True, S, False),
])
def test_box_path_equals_batched_path_and_reference(strategy, seed, negative_stuff, num_stuff,
                                                    whole):
    sem, masks, boxes, scores, labels = edge_case(
        seed, negative_stuff=negative_stuff, num_stuff=num_stuff, whole_image_boxes=whole
    )
    h, w = sem.shape[1:]
    kw = dict(strategy=strategy, num_stuff=num_stuff, category_ids=CATS, label_divisor=DIV,
              score_threshold=0.5, overlap_threshold=[0.5, 0.3, 0.8][seed % 3],
              stuff_area=[0, 9][seed % 2])
    box, dense = fuse_both_paths(sem, masks, boxes, scores, labels, **kw)
    assert_same_output(box, dense)
    pasted = paste_mask_logits(masks, boxes, (h, w))
    ids_ref, scores_ref = reference_fusion(strategy, sem, pasted, boxes, scores, labels,
                                           **{k: v for k, v in kw.items() if k != "strategy"})
    ids = box.ids.numpy()
    np.testing.assert_array_equal(ids, ids_ref)
    assert (ids % DIV > 0).sum() > 0 and len(np.unique(ids)) >= 3  # instances and more
    if not whole and strategy == "efficientps":  # instance pixels outside every box
        rows, cols = box_interior(boxes, (h, w))
        in_a_box = (rows[:, :, None] & cols[:, None, :]).any(0).numpy()
        assert (ids[~in_a_box] % DIV > 0).sum() > 0
    res = to_panoptic_result(box, LS, DIV)
    assert {s.id for s in res.segments} == set(scores_ref)
    for s in res.segments:
        assert s.score == pytest.approx(scores_ref[s.id], rel=1e-6)


def test_all_stuff_negative_first_kept_detection_wins_outside_boxes():
    # Every stuff logit is -1, so FL = 0 of a kept detection beats stuff outside its box: the
    # first kept detection (highest score) takes every pixel no box claims, the second one
    # (the only box on the left) also takes, outside its own box, what remains negative
    # inside the first box.
    sem = torch.full((LS.num_classes, 6, 12), -1.0)
    boxes = [(6, 0, 12, 6), (0, 0, 3, 6)]
    mask_a = torch.full((28, 28), 10.0)
    mask_a[:, 14:] = -10.0  # left half of box A: FL > 0; right half: FL = (0 + s(-1)) * -41
    masks = [mask_a, box_mask(10.0)]
    expected = np.full((6, 12), 1001, np.int32)  # A everywhere outside its box
    expected[:, 0:3] = 1002  # B inside its box (FL > 0)
    expected[:, 9:12] = 1002  # A's weak half: FL_A < -1 = best, then 0 of B (outside B) wins
    for strategy in ("efficientps",):
        out, dense = fuse_both_paths(
            sem, torch.stack(masks), torch.tensor(boxes, dtype=torch.float32),
            torch.tensor([0.9, 0.8]), torch.tensor([PERSON, PERSON]), strategy=strategy,
            num_stuff=S, category_ids=CATS, label_divisor=DIV,
        )
        assert_same_output(out, dense)
        np.testing.assert_array_equal(out.ids.numpy(), expected)


def test_ties_go_to_the_lower_channel():
    sem = torch.zeros((LS.num_classes, 4, 8))
    sem[SKY, :, :4] = 2.0
    sem[GROUND, :, :4] = 2.0  # sky and ground tie on the left: sky (lower channel)
    sem[GROUND, :, 4:] = 3.0
    sem[PERSON, :, 4:] = 3.0  # ground ties with a thing class on the right: ground
    _, ids = run("panoptic_fpn", sem)
    expected = np.full((4, 8), 11000, np.int32)
    expected[:, 4:] = 12000
    np.testing.assert_array_equal(ids, expected)
    # FL equal to the stuff maximum: stuff. mask 0 -> ML_A = 0; ML_B = 0 -> FL = 0 = stuff max.
    sem = torch.zeros((LS.num_classes, 4, 4))
    _, ids = run("efficientps", sem, [box_mask(0.0)], [(0, 0, 4, 4)], [0.9], [PERSON],
                 overlap_threshold=1.0)
    assert (ids == 11000).all()  # (also: an all-zero mask is empty, never kept)
    # Two detections with the same FL: the higher score wins every pixel, the other has none.
    sem = semantic(4, 8, SKY)
    args = (sem, torch.stack([box_mask(), box_mask()]), torch.tensor([[0.0, 0, 8, 4]] * 2),
            torch.tensor([0.6, 0.7]), torch.tensor([CAR, PERSON]))
    out, dense = fuse_both_paths(*args, num_stuff=S, category_ids=CATS,
                                   label_divisor=DIV, overlap_threshold=1.0)
    assert_same_output(out, dense)
    assert (out.ids.numpy() == 1001).all()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_kept_detection(strategy):
    sem, masks, boxes, scores, labels = edge_case(9)
    kw = dict(strategy=strategy, num_stuff=S, category_ids=CATS, label_divisor=DIV)
    plain = fuse(sem, masks[:0], boxes[:0], scores[:0], labels[:0], **kw)
    for inputs in ((masks, boxes, scores * 0.1, labels),  # all below the score threshold
                   (torch.full_like(masks, -1.0), boxes, scores + 1, labels)):  # all empty
        box, dense = fuse_both_paths(sem, *inputs, **kw)
        assert_same_output(box, dense)
        assert torch.equal(box.ids, plain.ids)
        assert torch.equal(box.scores[:1 + S], plain.scores)


@pytest.mark.parametrize("elements", [1, 3 * 31, 1 << 30])
def test_semantic_pass_blocks_do_not_change_the_result(elements, monkeypatch):
    sem, masks, boxes, scores, labels = edge_case(2, negative_stuff=True)
    kw = dict(num_stuff=S, category_ids=CATS, label_divisor=DIV, stuff_area=9)
    one = fuse(sem, masks, boxes, scores, labels, **kw)
    # 1: one row per block; 3 rows (a partial last block); one block for the image.
    monkeypatch.setitem(dense_pass.BLOCK_ELEMENTS, "cpu", elements * LS.num_classes)
    blocked = fuse(sem, masks, boxes, scores, labels, **kw)
    assert torch.equal(one.index_map, blocked.index_map)
    assert torch.equal(one.values, blocked.values)
    torch.testing.assert_close(one.scores, blocked.scores, rtol=1e-6, atol=0)


def test_many_stuff_classes_use_exact_argmax_codes():
    # 4100 stuff classes: the argmax codes outgrow float32's integers (2**24) and use float64.
    g = torch.Generator().manual_seed(4)
    c, s = 4102, 4100
    sem = (torch.randn((c, 3, 5), generator=g) * 2).round()  # many exact ties
    cats = torch.arange(1, c + 1)
    out = fuse(sem, torch.zeros((0, 28, 28)), torch.zeros((0, 4)), torch.zeros(0),
               torch.zeros(0, dtype=torch.int64), num_stuff=s, category_ids=cats,
               label_divisor=DIV)
    first = sem.argmax(0)  # first maximal channel
    expected = torch.where(first < s, (first + 1) * DIV, 0)
    assert torch.equal(out.ids, expected.to(torch.int32))


def test_paste_window_equals_full_paste_exactly():
    g = torch.Generator().manual_seed(6)
    masks = torch.randn((6, 28, 28), generator=g)
    h, w = 21, 34
    xy = torch.rand((6, 2), generator=g) * torch.tensor([w + 6.0, h + 6.0]) - 3
    wh = torch.rand((6, 2), generator=g) * 20 + 0.4
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[0] = torch.tensor([-5.0, -5.0, w + 5.0, h + 5.0])
    full = paste_mask_logits(masks, boxes, (h, w))
    rows, cols = box_interior(boxes, (h, w))
    for k, (x0, y0, x1, y1) in enumerate(box_windows(boxes, (h, w))):
        inside = torch.zeros((h, w), dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert torch.equal(inside, rows[k, :, None] & cols[k, None, :])  # windows = interiors
        assert not full[k][~inside].any()
        if x1 > x0 and y1 > y0:
            window = [(x0, y0, x1, y1)]
            along_y, along_x = (window_taps(boxes[k:k + 1], window, 28, a)[0] for a in (0, 1))
            assert torch.equal(paste_window(masks[k], along_y, along_x), full[k, y0:y1, x0:x1])


@pytest.mark.parametrize("chunk", [1, 4 * 31, 1 << 30])
def test_semantic_pass_chunks_do_not_change_the_result(chunk, monkeypatch):
    sem, masks, boxes, scores, labels = edge_case(3, negative_stuff=True)
    kw = dict(num_stuff=S, category_ids=CATS, label_divisor=DIV, stuff_area=9)
    one = fuse(sem, masks, boxes, scores, labels, **kw)
    monkeypatch.setitem(dense_pass.BLOCK_ELEMENTS, "cpu", 2 * 31 * LS.num_classes)  # 2 rows
    monkeypatch.setitem(dense_pass.CHUNK_PIXELS, "cpu", chunk)  # 1 block, 2 blocks, the image
    chunked = fuse(sem, masks, boxes, scores, labels, **kw)
    assert torch.equal(one.index_map, chunked.index_map)
    assert torch.equal(one.values, chunked.values)
    torch.testing.assert_close(one.scores, chunked.scores, rtol=1e-6, atol=0)


def test_signed_zero_logits_tie_like_equal_ones():
    # -0.0 == +0.0: a tie, which goes to the lower channel whichever zero each one holds.
    s, c = 3, 5
    for values in itertools.product([-0.0, 0.0, -1.0], repeat=c):
        sem = torch.tensor(values).view(c, 1, 1).expand(c, 2, 40).contiguous()
        index_map = torch.zeros((2, 40), dtype=torch.int32)
        dense_pass.semantic_pass(sem, index_map, s, 1 + s)
        first = sem.argmax(0)  # the first maximal channel
        assert torch.equal(index_map, torch.where(first < s, first + 1, 0).int()), values
