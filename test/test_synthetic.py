"""The synthetic scene generator and ``panoptic-ros synth`` (panoptic_ros.data.synthetic)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from panoptic_ros.categories import synthetic
from panoptic_ros.cli import main
from panoptic_ros.data.coco_panoptic import CocoPanopticDataset, coco_stem
from panoptic_ros.data.synthetic import (
    SceneConfig,
    SceneGenerator,
    generate_scene,
    scene_rng,
)
from panoptic_ros.result import compact_ids, segment_stats

SMALL = ["--size", "96x128"]


def _synth(out, seed, count=3, start_id=5, extra=()):
    return main(["synth", "--out", str(out), "--count", str(count), "--seed", str(seed),
                 "--start-id", str(start_id), *SMALL, *extra])


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_scene_is_deterministic_and_seed_dependent():
    cfg = SceneConfig(height=96, width=128)
    a = generate_scene(scene_rng(3, 7), cfg)
    b = generate_scene(scene_rng(3, 7), cfg)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.result.ids, b.result.ids)
    assert a.result.segments == b.result.segments
    c = generate_scene(scene_rng(4, 7), cfg)
    d = generate_scene(scene_rng(3, 8), cfg)
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.image, d.image)


@pytest.mark.parametrize("size", [(240, 320), (64, 80), (100, 300)])
def test_scene_content_is_sensible(size):
    h, w = size
    cfg = SceneConfig(height=h, width=w)
    labels = synthetic()
    counts = []
    for k in range(8):
        scene = generate_scene(scene_rng(1, k), cfg)
        assert scene.image.shape == (h, w, 3) and scene.image.dtype == np.uint8
        res = scene.result
        assert res.ids.shape == (h, w) and res.ids.dtype == np.int32
        assert (res.ids != 0).all()  # no void in synthetic ground truth
        things = [s for s in res.segments if s.is_thing]
        counts.append(len(things))
        assert len(things) <= cfg.max_things
        for s in res.segments:
            assert s.category_id in labels
            assert s.is_thing == labels.is_thing(s.category_id)
            if s.is_thing:
                assert s.instance_id >= 1 and s.area >= cfg.min_visible_area
            else:
                assert s.instance_id == 0
        # Instance ids are 1..n per category.
        for cat in (1, 2, 3, 4):
            inst = sorted(s.instance_id for s in things if s.category_id == cat)
            assert inst == list(range(1, len(inst) + 1))
    assert max(counts) > 0


def test_thing_counts_and_classes_vary():
    cfg = SceneConfig(height=96, width=128)
    per_class = {1: 0, 2: 0, 3: 0, 4: 0}
    stuff = set()
    counts = set()
    for k in range(40):
        res = generate_scene(scene_rng(9, k), cfg).result
        things = [s for s in res.segments if s.is_thing]
        counts.add(len(things))
        for s in res.segments:
            if s.is_thing:
                per_class[s.category_id] += 1
            else:
                stuff.add(s.category_id)
    assert all(v > 0 for v in per_class.values())
    assert stuff == {11, 12, 13, 14, 15}
    assert len(counts) >= 5


def test_min_things_and_no_things():
    none = generate_scene(scene_rng(0, 0), SceneConfig(height=64, width=64, max_things=0))
    assert not any(s.is_thing for s in none.result.segments)
    for seed in range(5):  # min_things things are placed (some may be hidden behind others)
        few = generate_scene(scene_rng(seed, 0), SceneConfig(height=128, width=160,
                                                             max_things=1))
        many = generate_scene(scene_rng(seed, 0), SceneConfig(height=128, width=160,
                                                              min_things=8, max_things=8))
        assert sum(s.is_thing for s in few.result.segments) <= 1
        assert sum(s.is_thing for s in many.result.segments) >= 5


def test_scene_generator_stream():
    gen = SceneGenerator(SceneConfig(height=64, width=80), seed=2, start_id=3)
    first, second = next(gen), next(gen)
    np.testing.assert_array_equal(first.image, generate_scene(
        scene_rng(2, 3), SceneConfig(height=64, width=80)).image)
    np.testing.assert_array_equal(second.result.ids, gen.scene(4).result.ids)
    assert gen.next_id == 5 and gen.label_set == synthetic()


def test_config_validation():
    with pytest.raises(ValueError, match="32x32"):
        SceneConfig(height=16)
    with pytest.raises(ValueError, match="min_things"):
        SceneConfig(min_things=5, max_things=2)
    with pytest.raises(ValueError, match=">= 0"):
        scene_rng(-1, 0)


def test_cli_writes_identical_bytes_for_a_seed(tmp_path):
    assert _synth(tmp_path / "a", seed=7) == 0
    assert _synth(tmp_path / "b", seed=7) == 0
    assert _synth(tmp_path / "c", seed=8) == 0
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert sorted(a) == sorted(c)
    assert a["panoptic/000000000005.png"] != c["panoptic/000000000005.png"]
    assert a["images/000000000005.jpg"] != c["images/000000000005.jpg"]


def test_cli_output_format_valid(tmp_path):
    assert _synth(tmp_path, seed=1, count=4, start_id=10, extra=["--image-format", "png"]) == 0
    data = json.loads((tmp_path / "panoptic.json").read_text())
    assert data["categories"] == synthetic().to_coco()
    ds = CocoPanopticDataset(tmp_path / "panoptic.json")
    assert ds.png_dir == tmp_path / "panoptic" and ds.image_dir == tmp_path / "images"
    assert ds.image_ids == [10, 11, 12, 13]
    labels = synthetic()
    for image_id in ds.image_ids:
        ann = ds.annotation(image_id)
        assert ann["file_name"] == coco_stem(image_id) + ".png"
        assert ds.image_path(image_id).name == coco_stem(image_id) + ".png"
        image = ds.load_image(image_id)
        seg = ds.load_segment_ids(image_id)
        assert image.shape == (96, 128, 3) and seg.shape == (96, 128)
        info = {s["id"]: s for s in ann["segments_info"]}
        values, index_map = compact_ids(seg)
        areas, boxes = segment_stats(index_map, len(values))
        assert set(values.tolist()) == set(info)  # every pixel listed, nothing listed absent
        for sid, area, box in zip(values.tolist(), areas.tolist(), boxes.tolist()):
            assert info[sid]["area"] == area
            assert info[sid]["bbox"] == box
            assert info[sid]["category_id"] in labels
            assert info[sid]["iscrowd"] == 0
        result = ds.load_result(image_id)
        assert len(result.segments) == len(info)
    # The written image is exactly the in-memory scene (PNG is lossless).
    scene = generate_scene(scene_rng(1, 12), SceneConfig(height=96, width=128))
    np.testing.assert_array_equal(ds.load_image(12), scene.image)
    np.testing.assert_array_equal(ds.load_segment_ids(12), scene.result.ids)


def test_ground_truth_against_itself_scores_pq_one(tmp_path):
    from panoptic_ros.evaluation import pq

    assert _synth(tmp_path, seed=2, count=4) == 0
    gt_json = tmp_path / "panoptic.json"
    results = pq.pq_compute_files(gt_json, tmp_path / "panoptic", gt_json, tmp_path / "panoptic")
    for group in ("All", "Things", "Stuff"):
        assert results[group]["pq"] == pytest.approx(1.0)
        assert results[group]["n"] > 0


def test_cli_bad_paths_exit_2_with_one_line(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert _synth(blocker, seed=0) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err and err.startswith("panoptic-ros synth")
    assert _synth(blocker / "sub", seed=0) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot create output folder" in err
    assert main(["synth", "--out", str(tmp_path / "x"), "--count", "1", "--size", "big"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
