"""Model registry and backends; every backend returns PanopticResult.

This module imports no torch, so commands can check for the bundled weights cheaply.
"""

from pathlib import Path

DEMO_WEIGHTS = Path(__file__).resolve().parent / "weights" / "demo.pt"
"""The bundled demo model (narrow EfficientPS trained on the synthetic scenes)."""
