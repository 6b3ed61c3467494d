"""Cityscapes gtFine -> COCO panoptic (panoptic_ros.data.cityscapes, ``panoptic-ros convert``)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from panoptic_ros.categories import cityscapes
from panoptic_ros.cli import main
from panoptic_ros.data.cityscapes import cityscapes_to_panoptic, find_cityscapes
from panoptic_ros.data.coco_panoptic import CocoPanopticDataset
from panoptic_ros.data.dataset import PanopticDataset
from panoptic_ros.errors import UserError

# Cityscapes label ids: road 7, sky 23, person 24, car 26 (evaluated); unlabeled 0,
# ego vehicle 1, guard rail 14 and caravan 29 (has instances) are not evaluated.
ROAD, SKY, PERSON, CAR = 7, 23, 24, 26


def _instance_ids_a() -> np.ndarray:
    ids = np.full((8, 12), SKY, np.uint16)
    ids[4:, :] = ROAD
    ids[3:7, 1:5] = CAR * 1000 + 0  # car instance 0 (Cityscapes counts from 0)
    ids[3:6, 6:9] = CAR * 1000 + 1
    ids[2:7, 9:11] = PERSON  # a group of people: crowd
    ids[7, :3] = 1  # ego vehicle: void
    ids[0, 0] = 0  # unlabeled: void
    ids[0, 10:] = 29 * 1000 + 2  # caravan instance: void
    return ids


def _instance_ids_b() -> np.ndarray:
    ids = np.full((8, 12), ROAD, np.uint16)
    ids[:3, :] = 14  # guard rail: void
    ids[2:8, 3:6] = PERSON * 1000 + 4
    return ids


@pytest.fixture
def fake_cityscapes(tmp_path):
    root = tmp_path / "cityscapes"
    frames = {("aachen", "aachen_000000_000019"): _instance_ids_a(),
              ("bonn", "bonn_000001_000019"): _instance_ids_b()}
    rng = np.random.default_rng(0)
    for (city, stem), ids in frames.items():
        gt = root / "gtFine" / "val" / city / f"{stem}_gtFine_instanceIds.png"
        img = root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png"
        gt.parent.mkdir(parents=True)
        img.parent.mkdir(parents=True)
        assert cv2.imwrite(str(gt), ids)
        assert cv2.imwrite(str(img), rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))
    # A training split next to it must not be picked up.
    (root / "gtFine" / "train" / "aachen").mkdir(parents=True)
    return root


def test_convert_instance_ids_exact():
    seg, info = cityscapes_to_panoptic(_instance_ids_a())
    assert seg.dtype == np.int32
    expected = np.full((8, 12), SKY * 1000, np.int32)
    expected[4:, :] = ROAD * 1000
    expected[3:7, 1:5] = CAR * 1000 + 1
    expected[3:6, 6:9] = CAR * 1000 + 2
    expected[2:7, 9:11] = PERSON * 1000
    expected[7, :3] = 0
    expected[0, 0] = 0
    expected[0, 10:] = 0
    np.testing.assert_array_equal(seg, expected)
    by_id = {s["id"]: s for s in info}
    assert [s["id"] for s in info] == sorted(by_id) == [7000, 23000, 24000, 26001, 26002]
    assert by_id[24000] == {"id": 24000, "category_id": PERSON, "iscrowd": 1,
                            "bbox": [9, 2, 2, 5], "area": 10}
    assert by_id[26001]["bbox"] == [1, 3, 4, 4] and by_id[26001]["area"] == 16
    assert by_id[26002]["iscrowd"] == 0 and by_id[26002]["area"] == 9
    assert by_id[7000]["iscrowd"] == 0 and by_id[7000]["category_id"] == ROAD
    assert sum(s["area"] for s in info) == (seg != 0).sum()


def test_convert_cli_writes_coco_panoptic(fake_cityscapes, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["convert", "cityscapes", "--root", str(fake_cityscapes), "--split", "val",
               "--out", str(out)])
    assert rc == 0
    assert "panoptic.json" in capsys.readouterr().out
    data = json.loads((out / "panoptic.json").read_text())
    assert data["categories"] == cityscapes().to_coco()
    assert [im["id"] for im in data["images"]] == ["aachen_000000_000019", "bonn_000001_000019"]
    ds = CocoPanopticDataset(out / "panoptic.json")
    assert ds.label_set.categories == cityscapes().categories
    seg_a = ds.load_segment_ids("aachen_000000_000019")
    np.testing.assert_array_equal(seg_a, cityscapes_to_panoptic(_instance_ids_a())[0])
    src = fake_cityscapes / "leftImg8bit/val/bonn/bonn_000001_000019_leftImg8bit.png"
    assert ds.image_path("bonn_000001_000019").read_bytes() == src.read_bytes()
    info_b = ds.annotation("bonn_000001_000019")["segments_info"]
    assert [(s["id"], s["iscrowd"], s["area"]) for s in info_b] == [
        (7000, 0, 5 * 12 - 3 * 5), (24005, 0, 18)]
    # The training targets of the converted files: crowd and void ignored, cars as instances.
    train = PanopticDataset(out / "panoptic.json", label_set=cityscapes())
    _, target = train[0]
    sem = target["semantic"].numpy()
    labels = cityscapes()
    assert (sem[2:7, 9:11] == 255).all()  # crowd person
    assert sem[7, 0] == 255 and sem[0, 0] == 255 and (sem[0, 10:] == 255).all()
    assert sem[5, 0] == labels.index_of(ROAD) and sem[1, 1] == labels.index_of(SKY)
    car_label = labels.index_of(CAR) - labels.num_stuff + 1
    assert target["labels"].tolist() == [car_label, car_label]
    assert target["boxes"].tolist() == [[1, 3, 5, 7], [6, 3, 9, 6]]


def test_convert_bad_paths(fake_cityscapes, tmp_path, capsys):
    rc = main(["convert", "cityscapes", "--root", str(tmp_path / "nope"), "--out",
               str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Cityscapes root not found" in err
    assert main(["convert", "cityscapes", "--root", str(fake_cityscapes), "--split", "test",
                 "--out", str(tmp_path / "o")]) == 2
    assert "no gtFine/test folder" in capsys.readouterr().err
    assert main(["convert", "cityscapes", "--root", str(fake_cityscapes), "--split", "train",
                 "--out", str(tmp_path / "o")]) == 2
    assert "no *_gtFine_instanceIds.png" in capsys.readouterr().err
    (fake_cityscapes / "leftImg8bit/val/bonn/bonn_000001_000019_leftImg8bit.png").unlink()
    with pytest.raises(UserError, match="image missing for bonn_000001_000019"):
        find_cityscapes(fake_cityscapes, "val")
