"""Exact order statistics of many groups at once, by histogram (no per-group sort or partition).

:func:`grouped_order_statistics` returns, for rows of values cut into contiguous groups, the
values at given sorted positions (ranks) of every group, exactly ``np.sort(group)[rank]``.

Method, vectorised over all rows and groups:

1. Bin: each group's values are binned linearly between the group's min and max
   (``BINS`` bins, ``floor((v - min) * scale)``). IEEE rounding is monotone, so the bins respect
   the order of the values (ties share a bin); one ``np.bincount`` over ``group * BINS + bin``
   counts them all.
2. Locate: the cumulative count gives, for each wanted rank, the bin that holds it and its rank
   inside that bin.
3. Resolve: only the values of those few bins are gathered and sorted (by bin, then value, as one
   64-bit key); the wanted value is read at its position there.

A constant group (min == max) needs no bins: every rank is the min. A group whose values are not
all finite (an overflow to inf) falls back to ``np.sort``.
"""

from __future__ import annotations

import numpy as np

BINS = 1024
"""Bins per group and row. Any number gives the same values; 256 to 2048 cost the same on the
benchmark frame (bench/bench_depth.py), where a wanted bin holds tens of values (more where
values tie)."""

_SIGN = np.int64(1 << 31)
_LOW32 = np.int64((1 << 32) - 1)


def _sort_keys(values: np.ndarray) -> np.ndarray:
    """ndarray[n] float32 to int64 in [0, 2**32) in the same order (-0.0 just before 0.0)."""
    bits = values.view(np.uint32).astype(np.int64)
    return np.where(bits >= _SIGN, _LOW32 - bits, bits + _SIGN)


def _from_sort_keys(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_sort_keys` (int64 in [0, 2**32) to float32)."""
    bits = np.where(keys >= _SIGN, keys - _SIGN, _LOW32 - keys)
    return bits.astype(np.uint32).view(np.float32)


def grouped_order_statistics(rows: np.ndarray, counts: np.ndarray, ranks: np.ndarray,
                             bins: int = BINS) -> np.ndarray:
    """The values at sorted positions ``ranks`` of every group of every row.

    Args:
        rows: ndarray[R, N] float32, each row the concatenation of the K groups (group ``k`` is
            ``counts[k]`` values, in the same place on every row).
        counts: ndarray[K] integer, each >= 1, summing to N.
        ranks: ndarray[R, K, J] integer, ``0 <= ranks[r, k, j] < counts[k]``.
        bins: bins per group and row (any >= 1 gives the same values; it sets the speed).

    Returns:
        ndarray[R, K, J] float32: ``np.sort(group k of row r)[ranks[r, k, j]]``.
    """
    n_rows = rows.shape[0]
    counts = np.asarray(counts, np.intp)
    n_groups = len(counts)
    starts = np.cumsum(counts) - counts
    low = np.minimum.reduceat(rows, starts, axis=1)  # [R, K]
    high = np.maximum.reduceat(rows, starts, axis=1)
    # Keys are computed in float32, whose integers are exact below 2**24.
    if n_rows * n_groups >= 1 << 24:
        raise ValueError(f"{n_rows} x {n_groups} groups: at most 2**24 are supported")
    bins = max(1, min(bins, (1 << 24) // (n_rows * n_groups)))
    first_bin = np.arange(n_rows * n_groups).reshape(n_rows, n_groups) * bins
    first_key = first_bin.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        span = high - low  # float32, as v - low below
        finite = np.isfinite(span)
        binned = finite & (span > 0)
        # 0 <= (v - low) * scale < bins (float32 rounding stays far below one bin); capped so
        # that a tiny span cannot overflow it. Constant groups: scale 0, all in the first bin.
        scale = np.where(binned, np.minimum((bins - 1) / np.where(binned, span, 1.0), 1e30),
                         0.0).astype(np.float32)
        t = np.empty_like(rows)
        for g, (start, count) in enumerate(zip(starts.tolist(), counts.tolist())):
            part = t[:, start:start + count]
            np.subtract(rows[:, start:start + count], low[:, g, None], out=part)
            part *= scale[:, g, None]
            part += first_key[:, g, None]  # rounds inside [first, first + bins - 1], monotone
    for r, g in zip(*np.nonzero(~finite)):  # (inf - inf) * 0: NaN; resolved by np.sort below
        t[r, starts[g]:starts[g] + counts[g]] = first_bin[r, g]
    keys = t.reshape(-1).astype(np.intp)  # floor (t >= 0)
    hist = np.bincount(keys, minlength=n_rows * n_groups * bins)
    below = np.concatenate(([0], np.cumsum(hist)))  # values in all bins before bin i

    values = np.repeat(low[..., None], ranks.shape[2], axis=2)  # right for constant groups
    resolve = np.broadcast_to(binned[..., None], ranks.shape)
    if resolve.any():
        # Position of each wanted value in the order of (row, group, value); its bin; its rank
        # among the values of that bin.
        position = (below[first_bin][..., None] + ranks)[resolve]
        bin_of = np.searchsorted(below, position, side="right") - 1
        wanted = np.zeros(len(hist), bool)
        wanted[bin_of] = True
        picked = np.flatnonzero(wanted.take(keys))
        candidates = np.sort((keys[picked].astype(np.int64) << 32)
                             | _sort_keys(rows.reshape(-1)[picked]))
        wanted_bins = np.flatnonzero(wanted)
        sizes = hist[wanted_bins]
        bin_start = np.cumsum(sizes) - sizes  # first candidate of each wanted bin
        at = bin_start[np.searchsorted(wanted_bins, bin_of)] + (position - below[bin_of])
        values[resolve] = _from_sort_keys(candidates[at] & _LOW32)
    for r, g in zip(*np.nonzero(~finite)):
        group = np.sort(rows[r, starts[g]:starts[g] + counts[g]])
        values[r, g] = group[ranks[r, g]]
    return values
