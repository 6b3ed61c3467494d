"""Frame statistics of the node and their ``diagnostic_msgs/DiagnosticStatus``, both ways.

:class:`FrameStats` is fed by the subscription callback and the worker thread (thread-safe)
and read once a second by the diagnostics timer. Rates and latencies cover a sliding window
(:attr:`FrameStats.window_s`); counters are totals since activation. :func:`diagnostic_values`
reads a received status back (the demo's monitor). Nothing here imports rclpy.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR

MIN_RATE_SPAN_S = 1.0
"""Shortest span a rate is measured over, seconds (no huge rates from two close events)."""

KEEP_UP_FRACTION = 0.8
"""Below this fraction of the attainable rate (input rate, capped by ``max_rate``) the node is
reported as not keeping up (WARN)."""


@dataclass(frozen=True)
class StatsSnapshot:
    """Figures of one diagnostics report.

    Rates in Hz and latencies in milliseconds are over the last ``window_s`` seconds
    (0 when nothing happened); ``*_total`` count since activation.
    """

    window_s: float
    input_rate: float
    processed_rate: float
    received_window: int
    processed_window: int
    dropped_window: int
    bad_window: int
    errors_window: int
    inference_ms_mean: float
    inference_ms_max: float
    latency_ms_mean: float
    latency_ms_max: float
    received_total: int
    processed_total: int
    dropped_total: int
    bad_total: int
    errors_total: int
    overlay_total: int
    reduced_total: int
    last_bad_reason: str
    last_error: str


class FrameStats:
    """Thread-safe counters and sliding windows of the frames a node handles.

    Args:
        window_s: length of the window for rates and latencies, seconds.
        clock: monotonic time source, seconds.
    """

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything (on activation)."""
        with self._lock:
            self._received: deque[float] = deque()
            self._processed: deque[tuple[float, float, float]] = deque()
            self._dropped: deque[float] = deque()
            self._bad: deque[float] = deque()
            self._errors: deque[float] = deque()
            self._totals = dict(received=0, processed=0, dropped=0, bad=0, errors=0, overlay=0,
                                reduced=0)
            self._last_bad_reason = ""
            self._last_error = ""

    def received(self) -> None:
        """A frame arrived."""
        with self._lock:
            self._received.append(self._clock())
            self._totals["received"] += 1

    def dropped(self, count: int = 1) -> None:
        """Frames were replaced by newer ones before being processed."""
        with self._lock:
            now = self._clock()
            self._dropped.extend([now] * count)
            self._totals["dropped"] += count

    def bad_input(self, reason: str) -> None:
        """A frame could not be converted (wrong encoding, size, corrupt data)."""
        with self._lock:
            self._bad.append(self._clock())
            self._totals["bad"] += 1
            self._last_bad_reason = reason

    def error(self, reason: str) -> None:
        """Processing a good frame failed (inference or publishing)."""
        with self._lock:
            self._errors.append(self._clock())
            self._totals["errors"] += 1
            self._last_error = reason

    def processed(self, inference_s: float, latency_s: float) -> None:
        """A frame's outputs were published.

        Args:
            inference_s: time in the Predictor (pre-processing, network, fusion), seconds.
            latency_s: from the frame's arrival to its outputs' publication, seconds.
        """
        with self._lock:
            self._processed.append((self._clock(), inference_s, latency_s))
            self._totals["processed"] += 1

    def reduced(self) -> None:
        """An oversize frame was decoded reduced (``oversize_policy: reduce``)."""
        with self._lock:
            self._totals["reduced"] += 1

    def overlay_computed(self) -> None:
        """An overlay image was drawn (only happens while someone subscribes)."""
        with self._lock:
            self._totals["overlay"] += 1

    def _rate(self, count: int, first: float, now: float) -> float:
        """Events per second since the window's first event (at least 1 s, at most the window).

        Measuring from the first event rather than over the whole window keeps a stream that
        started (or a rate cap that began) a moment ago from reading as a slow one.
        """
        if not count:
            return 0.0
        return count / min(self.window_s, max(MIN_RATE_SPAN_S, now - first))

    def snapshot(self) -> StatsSnapshot:
        """The current figures; prunes events older than the window."""
        with self._lock:
            now = self._clock()
            horizon = now - self.window_s
            for q in (self._received, self._dropped, self._bad, self._errors):
                while q and q[0] < horizon:
                    q.popleft()
            while self._processed and self._processed[0][0] < horizon:
                self._processed.popleft()
            inference = [p[1] * 1e3 for p in self._processed]
            latency = [p[2] * 1e3 for p in self._processed]
            return StatsSnapshot(
                window_s=self.window_s,
                input_rate=self._rate(
                    len(self._received), self._received[0] if self._received else now, now),
                processed_rate=self._rate(
                    len(self._processed), self._processed[0][0] if self._processed else now,
                    now),
                received_window=len(self._received),
                processed_window=len(self._processed),
                dropped_window=len(self._dropped),
                bad_window=len(self._bad),
                errors_window=len(self._errors),
                inference_ms_mean=sum(inference) / len(inference) if inference else 0.0,
                inference_ms_max=max(inference, default=0.0),
                latency_ms_mean=sum(latency) / len(latency) if latency else 0.0,
                latency_ms_max=max(latency, default=0.0),
                received_total=self._totals["received"],
                processed_total=self._totals["processed"],
                dropped_total=self._totals["dropped"],
                bad_total=self._totals["bad"],
                errors_total=self._totals["errors"],
                overlay_total=self._totals["overlay"],
                reduced_total=self._totals["reduced"],
                last_bad_reason=self._last_bad_reason,
                last_error=self._last_error,
            )


def assess(snap: StatsSnapshot, max_rate: float = 0.0) -> tuple[bytes, str]:
    """Diagnostic level and one-line summary of a snapshot.

    ERROR: every frame of the window was bad, or processing failed. WARN: some bad frames, or
    the processed rate is below :data:`KEEP_UP_FRACTION` of what is attainable (the input rate,
    capped by ``max_rate`` when > 0) while frames are being dropped. OK otherwise.
    """
    w = f"{snap.window_s:g} s"
    if snap.errors_window:
        return ERROR, f"processing failed {snap.errors_window}x in {w}: {snap.last_error}"
    if snap.bad_window and not snap.processed_window:
        return ERROR, f"all {snap.bad_window} input frames in {w} bad: {snap.last_bad_reason}"
    if snap.bad_window:
        return WARN, f"{snap.bad_window} bad input frames in {w}: {snap.last_bad_reason}"
    if not snap.received_window:
        return OK, "waiting for images"
    attainable = snap.input_rate if max_rate <= 0 else min(snap.input_rate, max_rate)
    if snap.dropped_window and snap.processed_rate < KEEP_UP_FRACTION * attainable:
        return WARN, (
            f"not keeping up: {snap.processed_rate:.1f} Hz processed of "
            f"{snap.input_rate:.1f} Hz input, {snap.dropped_window} frames dropped in {w}"
        )
    return OK, f"processing {snap.processed_rate:.1f} Hz"


def diagnostic_status(
    snap: StatsSnapshot,
    *,
    name: str,
    hardware_id: str,
    extra: dict[str, str],
    max_rate: float = 0.0,
    input_warning: str = "",
) -> DiagnosticStatus:
    """One ``DiagnosticStatus``: :func:`assess`'s level and message plus every figure.

    Args:
        snap: the figures.
        name: status name (the node's fully qualified name).
        hardware_id: device the model runs on.
        extra: further key/values (model, device, lifecycle state, input topic).
        max_rate: the node's rate cap, Hz (0 = none).
        input_warning: a problem with the input seen outside the frame counters (a publisher
            matched but silent); it turns an OK report into WARN with this message.
    """
    level, message = assess(snap, max_rate)
    if input_warning and level == OK:
        level, message = WARN, input_warning
    values = {
        "input_rate_hz": f"{snap.input_rate:.2f}",
        "processed_rate_hz": f"{snap.processed_rate:.2f}",
        "inference_ms_mean": f"{snap.inference_ms_mean:.1f}",
        "inference_ms_max": f"{snap.inference_ms_max:.1f}",
        "latency_ms_mean": f"{snap.latency_ms_mean:.1f}",
        "latency_ms_max": f"{snap.latency_ms_max:.1f}",
        "frames_received": str(snap.received_total),
        "frames_processed": str(snap.processed_total),
        "frames_dropped": str(snap.dropped_total),
        "bad_inputs": str(snap.bad_total),
        "processing_errors": str(snap.errors_total),
        "overlays_computed": str(snap.overlay_total),
        "frames_reduced": str(snap.reduced_total),
        "last_bad_input": snap.last_bad_reason,
        "window_s": f"{snap.window_s:g}",
        **extra,
    }
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
    )


def _number(text: str) -> Any:
    """A diagnostics value as int or float when it is one, else the string."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def diagnostic_values(status: DiagnosticStatus) -> dict[str, Any]:
    """A received status's figures (the inverse of :func:`diagnostic_status` for a consumer).

    Returns:
        Every key/value, numbers as int or float, plus ``level`` (int) and ``message``.
    """
    values = {kv.key: _number(kv.value) for kv in status.values}
    level = status.level
    values.update(level=int.from_bytes(level, "little") if isinstance(level, bytes)
                  else int(level), message=status.message)
    return values
