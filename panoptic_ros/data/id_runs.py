"""Segment-id maps as row-major runs, and a fast COCO-panoptic PNG reader that yields them.

A panoptic id map is piecewise constant: a 1024x2048 Cityscapes map has about 2 M pixels but
only some 20 k runs of equal id along its rows. PQ evaluation needs nothing but the pixel count
of every (ground truth, prediction) id pair, which runs give without touching each pixel.

Reading a COCO panoptic PNG through libpng (OpenCV, Pillow) is almost all zlib inflating the
filtered bytes (6 MB at 1024x2048), ~99.5 % of which are zero. For
PNGs whose rows all use the "Sub" filter (OpenCV writes every row that way, so every PNG
panoptic_ros writes qualifies) :func:`read_panoptic_runs` inflates with zlib-ng when installed
and reads the runs straight off the filtered bytes: with "Sub" a byte is non-zero only where a
colour channel changes from the pixel on the left, so run starts are the non-zero bytes and
run colours are per-row prefix sums (mod 256) of those bytes alone (about 4x faster than a
full decode; bench/bench_pq.py measures it).
PNGs with "None", "Up", "Average" or "Paeth" rows (Pillow's adaptive filtering, e.g. the
official COCO ground truth), 16-bit, palette or interlaced PNGs are decoded by OpenCV and
converted, with identical results.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from panoptic_ros.data.coco_panoptic import read_panoptic_png
from panoptic_ros.errors import UserError

try:  # zlib-ng inflates these highly compressed streams 10-15x faster than zlib.
    from zlib_ng import zlib_ng as _inflater
except ImportError:  # pragma: no cover - optional speed-up; the standard zlib is exact too
    _inflater = zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class IdRuns:
    """An id map ndarray[H, W] stored as runs of equal id in row-major (flattened) order.

    Attributes:
        starts: ndarray[K] int64, ascending flat pixel index of each run's first pixel;
            ``starts[0] == 0``. Runs may cross row ends.
        ids: ndarray[K] int64, the id of each run; neighbouring runs differ.
        shape: ``(H, W)`` of the map.
    """

    starts: np.ndarray
    ids: np.ndarray
    shape: tuple[int, int]

    @property
    def size(self) -> int:
        """Pixel count ``H * W``."""
        return self.shape[0] * self.shape[1]

    def lengths(self) -> np.ndarray:
        """ndarray[K] int64 pixel count of each run."""
        return np.diff(self.starts, append=self.size)

    def to_dense(self) -> np.ndarray:
        """The id map as ndarray[H, W] int32."""
        return np.repeat(self.ids.astype(np.int32), self.lengths()).reshape(self.shape)

    @classmethod
    def from_dense(cls, ids: np.ndarray) -> IdRuns:
        """Runs of a non-empty integer id map ndarray[H, W]."""
        flat = np.ascontiguousarray(ids).reshape(-1)
        if flat.size == 0:
            raise ValueError("an id map needs at least one pixel")
        starts = np.flatnonzero(flat[1:] != flat[:-1])
        starts += 1
        starts = np.concatenate([np.zeros(1, np.int64), starts])
        return cls(starts, flat[starts].astype(np.int64), (int(ids.shape[0]), int(ids.shape[1])))


def joint_histogram_runs(
    gt: IdRuns, pred: IdRuns
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of every (ground truth id, predicted id) pair of two same-size run maps.

    Returns:
        ``gt_values`` ndarray[Kg] and ``pred_values`` ndarray[Kp], the sorted distinct ids, and
        ``counts`` ndarray[Kg, Kp] int64 of pixels per pair, as
        :func:`panoptic_ros.evaluation.pq.joint_histogram` gives for the dense maps.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth is {gt.shape} but prediction is {pred.shape}")
    # Merge the two sorted start lists; a running count of each side's starts is the index of
    # its run covering every merged start. Of equal starts keep the last (both counts final).
    both = np.concatenate([gt.starts, pred.starts])
    order = np.argsort(both, kind="stable")  # timsort: a linear merge of two sorted runs
    starts = both[order]
    from_gt = order < len(gt.starts)
    g_run = np.cumsum(from_gt) - 1
    p_run = np.cumsum(~from_gt) - 1
    last = np.ones(len(starts), bool)
    last[:-1] = starts[1:] != starts[:-1]
    starts, g_run, p_run = starts[last], g_run[last], p_run[last]
    lengths = np.diff(starts, append=gt.size)
    gvals, g_index = np.unique(gt.ids, return_inverse=True)
    pvals, p_index = np.unique(pred.ids, return_inverse=True)
    pair = g_index[g_run] * len(pvals) + p_index[p_run]
    # Float weights are exact for counts below 2**53.
    joint = np.bincount(pair, weights=lengths, minlength=len(gvals) * len(pvals))
    return gvals, pvals, joint.astype(np.int64).reshape(len(gvals), len(pvals))


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a 1-D array made of a few sorted pieces (timsort merges runs)."""
    values = np.sort(values, kind="stable")
    keep = np.ones(len(values), bool)
    keep[1:] = values[1:] != values[:-1]
    return values[keep]


def read_panoptic_runs(path: str | Path) -> IdRuns:
    """Read a COCO panoptic PNG (ids ``R + 256 G + 256**2 B``) as :class:`IdRuns`.

    Raises:
        UserError: the file is missing, not a PNG or not 8-bit RGB(A).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read panoptic PNG {path}: {err.strerror}") from None
    runs = _runs_from_png_bytes(data)
    if runs is not None:
        return runs
    return IdRuns.from_dense(read_panoptic_png(path))  # libpng for every other kind of PNG


def _png_chunks(data: bytes) -> tuple[tuple[int, ...], bytes] | None:
    """IHDR fields and the concatenated IDAT payload; ``None`` if the layout is unexpected."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    pos, header, idat = len(PNG_SIGNATURE), None, []
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length:
            return None  # truncated: let libpng report it
        if kind == b"IHDR" and length == 13:
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            (crc,) = struct.unpack_from(">I", data, pos + 8 + length)
            if zlib.crc32(body, zlib.crc32(kind)) != crc:
                return None
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        return None
    return header, b"".join(idat)


def _runs_from_png_bytes(data: bytes) -> IdRuns | None:
    """Runs read off the filtered bytes of an 8-bit RGB(A) PNG whose rows all use "Sub".

    Returns ``None`` (the caller then decodes with libpng) for any other kind of PNG.
    """
    chunks = _png_chunks(data)
    if chunks is None:
        return None
    (width, height, depth, colour_type, _, _, interlace), stream = chunks
    if depth != 8 or colour_type not in (2, 6) or interlace or width == 0 or height == 0:
        return None
    bpp = 3 if colour_type == 2 else 4  # bytes per pixel; alpha is not part of the id
    stride = 1 + width * bpp  # each row: its filter type byte, then the filtered pixels
    found = _nonzero_bytes(stream, height * stride)
    if found is None:
        return None
    pos, val = found

    # Positions -> row, pixel and channel. Every row must start with filter byte 1 ("Sub"):
    # "None" (0) rows are not sparse, "Up"/"Average"/"Paeth" rows depend on the row above.
    row, col = np.divmod(pos, stride)
    row_filter = val[col == 0]
    if len(row_filter) != height or np.any(row_filter != 1):
        return None
    pixel, channel = np.divmod(col - 1, bpp)
    keep = (col > 0) & (channel < 3)  # drop the filter bytes and alpha
    row, pixel, channel, val = row[keep], pixel[keep], channel[keep], val[keep]

    # Run starts: every pixel with a changed channel, and every row start (sums restart there).
    flat = row * width + pixel
    row_starts = np.arange(height, dtype=np.int64) * width
    starts = _sorted_unique(np.concatenate([flat, row_starts]))
    delta = np.zeros((len(starts), 3), np.uint8)
    delta[np.searchsorted(starts, flat), channel] = val
    total = np.cumsum(delta, axis=0, dtype=np.uint8)  # uint8 wraps: sums mod 256
    first = np.searchsorted(starts, row_starts)
    before_row = np.zeros((height, 3), np.uint8)
    before_row[1:] = total[first[1:] - 1]
    rgb = (total - before_row[starts // width]).astype(np.int64)
    ids = rgb[:, 0] | (rgb[:, 1] << 8) | (rgb[:, 2] << 16)
    new = np.ones(len(ids), bool)
    new[1:] = ids[1:] != ids[:-1]
    return IdRuns(starts[new], ids[new], (int(height), int(width)))


def _nonzero_bytes(stream: bytes, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Positions (int64) and values (uint8) of the non-zero bytes of an inflated zlib stream.

    Inflates 256 KiB at a time (cache-sized pieces; no 6 MB buffer to fault in) and finds the
    non-zero bytes a 64-bit word at a time, as most words are zero. ``None`` unless the stream
    inflates to exactly ``size`` bytes.
    """
    piece = 1 << 18  # a multiple of 8, so every piece starts on a word boundary
    inflater = _inflater.decompressobj()
    positions, values = [], []
    offset = 0
    try:
        out = inflater.decompress(stream, piece)
        while out:
            n_words = len(out) // 8
            words = np.frombuffer(out, np.uint64, n_words)
            hit = np.flatnonzero(words != 0)  # 3x faster than on the words themselves
            word_bytes = words[hit].view(np.uint8).reshape(-1, 8)
            nz = word_bytes != 0
            positions.append((offset + 8 * hit[:, None] + np.arange(8))[nz])
            values.append(word_bytes[nz])
            rest = np.frombuffer(out, np.uint8)[8 * n_words :]  # only in the last piece
            positions.append(offset + 8 * n_words + np.flatnonzero(rest))
            values.append(rest[rest != 0])
            offset += len(out)
            if offset > size:
                return None
            out = inflater.decompress(inflater.unconsumed_tail, piece)
    except _inflater.error:  # corrupt stream: let libpng report it
        return None
    if offset != size or not inflater.eof:
        return None
    return np.concatenate(positions), np.concatenate(values)
