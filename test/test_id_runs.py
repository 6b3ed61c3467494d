"""Run-length id maps and the fast COCO-panoptic PNG reader, checked against OpenCV/libpng."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from panoptic_ros.categories import id_to_rgb
from panoptic_ros.data.coco_panoptic import read_panoptic_png, write_panoptic_png
from panoptic_ros.data.id_runs import (
    IdRuns,
    _runs_from_png_bytes,
    joint_histogram_runs,
    read_panoptic_runs,
)
from panoptic_ros.errors import UserError


def piecewise_ids(rng: np.random.Generator, h: int, w: int, n: int = 25) -> np.ndarray:
    """An id map of overlapping rectangles with ids over the whole 24-bit range, some void."""
    ids = np.zeros((h, w), np.int32)
    for value in rng.integers(1, 2**24, size=n):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        ids[y0 : y0 + rng.integers(1, h), x0 : x0 + rng.integers(1, w)] = value
    ids[rng.random((h, w)) < 0.01] = 0
    return ids


def brute_joint(gt: np.ndarray, pred: np.ndarray):
    gvals, pvals = np.unique(gt), np.unique(pred)
    joint = np.zeros((len(gvals), len(pvals)), np.int64)
    np.add.at(joint, (np.searchsorted(gvals, gt), np.searchsorted(pvals, pred)), 1)
    return gvals, pvals, joint


def encode_png(rgb: np.ndarray, filters: list[int], alpha: bool = False) -> bytes:
    """A PNG of ndarray[H, W, 3] uint8 with the given filter type per row (0..4, the spec's)."""
    h, w, _ = rgb.shape
    px = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2) if alpha else rgb
    bpp = px.shape[2]
    x = px.reshape(h, w * bpp).astype(np.int32)
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    up = np.zeros_like(x)
    up[1:] = x[:-1]
    upleft = np.zeros_like(x)
    upleft[1:, bpp:] = x[:-1, :-bpp]
    p = left + up - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    predictor = {0: 0, 1: left, 2: up, 3: (left + up) // 2, 4: paeth}
    rows = [
        bytes([f]) + ((x[r] - (predictor[f][r] if f else 0)) % 256).astype(np.uint8).tobytes()
        for r, f in enumerate(filters)
    ]

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(body, zlib.crc32(kind))
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 8, 6 if alpha else 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def test_from_dense_round_trip_and_lengths():
    ids = np.array([[5, 5, 7], [7, 7, 0], [0, 0, 0]], np.int32)
    runs = IdRuns.from_dense(ids)
    assert runs.starts.tolist() == [0, 2, 5] and runs.ids.tolist() == [5, 7, 0]
    assert runs.lengths().tolist() == [2, 3, 4]
    assert runs.shape == (3, 3) and runs.size == 9
    np.testing.assert_array_equal(runs.to_dense(), ids)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_joint_histogram_runs_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    gt = piecewise_ids(rng, 37, 53)
    pred = piecewise_ids(rng, 37, 53)
    if seed == 2:  # no runs at all: every pixel its own id
        pred = rng.integers(0, 50, size=gt.shape).astype(np.int32)
    got = joint_histogram_runs(IdRuns.from_dense(gt), IdRuns.from_dense(pred))
    want = brute_joint(gt, pred)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    assert got[2].sum() == gt.size
    with pytest.raises(ValueError, match="prediction is"):
        joint_histogram_runs(IdRuns.from_dense(gt), IdRuns.from_dense(pred[:, :-1]))


@pytest.mark.parametrize("channels", [3, 4])
def test_opencv_written_png_takes_the_fast_path(tmp_path, channels):
    rng = np.random.default_rng(channels)
    ids = piecewise_ids(rng, 61, 97)
    path = tmp_path / "p.png"
    if channels == 3:
        write_panoptic_png(path, ids)
    else:  # alpha must not leak into the ids
        bgra = np.concatenate([id_to_rgb(ids)[..., ::-1], rng.integers(0, 256, ids.shape + (1,),
                                                                         dtype=np.uint8)], axis=2)
        assert cv2.imwrite(str(path), bgra)
    fast = _runs_from_png_bytes(path.read_bytes())
    assert fast is not None, "OpenCV writes every row with the Sub filter"
    np.testing.assert_array_equal(fast.to_dense(), ids)
    np.testing.assert_array_equal(read_panoptic_runs(path).to_dense(), read_panoptic_png(path))
    assert np.all(fast.ids[1:] != fast.ids[:-1]), "neighbouring runs differ"


@pytest.mark.parametrize(
    "pattern,fast",
    [("sub", True), ("none", False), ("up", False), ("average", False), ("paeth", False),
     ("mixed", False)],
)
@pytest.mark.parametrize("alpha", [False, True])
def test_every_png_filter_reads_like_libpng(tmp_path, pattern, fast, alpha):
    rng = np.random.default_rng(7)
    ids = piecewise_ids(rng, 40, 33)
    h = ids.shape[0]
    filters = {
        "sub": [1] * h, "none": [0] * h, "up": [2] * h, "average": [3] * h, "paeth": [4] * h,
        "mixed": [int(f) for f in rng.integers(0, 5, size=h)],
    }[pattern]
    path = tmp_path / "f.png"
    path.write_bytes(encode_png(id_to_rgb(ids), filters, alpha=alpha))
    np.testing.assert_array_equal(read_panoptic_png(path), ids)  # the encoder is right
    assert (_runs_from_png_bytes(path.read_bytes()) is not None) is fast
    np.testing.assert_array_equal(read_panoptic_runs(path).to_dense(), ids)


def test_one_pixel_and_one_row_images(tmp_path):
    for ids in (np.array([[70000]]), np.array([[0, 0, 3, 3, 3, 0]]), np.array([[0]])):
        path = tmp_path / "tiny.png"
        write_panoptic_png(path, ids)
        np.testing.assert_array_equal(read_panoptic_runs(path).to_dense(), ids)


def test_damaged_or_foreign_files_fall_back_or_fail_clearly(tmp_path):
    ids = piecewise_ids(np.random.default_rng(3), 30, 40)
    good = encode_png(id_to_rgb(ids), [1] * 30)
    # A flipped byte inside IDAT breaks its CRC: not trusted, libpng decides.
    idat = good.index(b"IDAT") + 8
    bad_crc = good[:idat] + bytes([good[idat] ^ 0xFF]) + good[idat + 1 :]
    assert _runs_from_png_bytes(bad_crc) is None
    assert _runs_from_png_bytes(good[: len(good) // 2]) is None  # truncated
    assert _runs_from_png_bytes(b"not a png at all") is None
    missing = tmp_path / "missing.png"
    with pytest.raises(UserError, match="cannot read panoptic PNG"):
        read_panoptic_runs(missing)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    with pytest.raises(UserError, match="cannot read panoptic PNG"):
        read_panoptic_runs(junk)
    # 16-bit grey is a PNG, but not a panoptic one.
    grey = tmp_path / "grey16.png"
    cv2.imwrite(str(grey), np.zeros((4, 4), np.uint16))
    with pytest.raises(UserError, match="8-bit RGB"):
        read_panoptic_runs(grey)


def test_real_coco_ground_truth_reads_identically(coco_sample):
    pngs = sorted(Path(coco_sample).glob("*.png"))
    assert pngs
    for png in pngs:
        runs = read_panoptic_runs(png)
        np.testing.assert_array_equal(runs.to_dense(), read_panoptic_png(png))
        # Pillow wrote them with adaptive filtering (Up/Paeth rows): libpng decodes those.
        assert _runs_from_png_bytes(png.read_bytes()) is None
