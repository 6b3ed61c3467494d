"""Panoptic quality evaluation (panopticapi semantics)."""
